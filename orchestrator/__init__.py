"""synthpat orchestrator: config, CLI, stage graph and the Ray wiring around `tasks/`."""

__version__ = "0.1.0"
