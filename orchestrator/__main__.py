"""`python -m orchestrator ...` is `synthpat ...` (Ray job entrypoints use this form)."""

from orchestrator.cli import app

app()
