"""Uploading an export to the Hugging Face Hub: the model folder to a model repo, its corpora to
a dataset repo beside it. Refuses clearly, before any upload, without a token or the network."""

from __future__ import annotations

import os
from pathlib import Path

#: Files of an export folder that are not the model (local serving state, the corpora).
NOT_MODEL = ["corpora/**", "serve.log", ".serve-ready.json", ".*"]


class HubError(RuntimeError):
    """The Hub cannot be reached or refused the upload (the message says why)."""


def corpora_repo(repo: str) -> str:
    """The dataset repo of an export pushed to the model repo `repo`."""
    return f"{repo}-synthetic-corpora"


def hub_token(repo: str) -> str:
    """The token an upload to `repo` would use; a `HubError` saying what is missing when the Hub
    cannot be used (HF_HUB_OFFLINE set, no token), before anything is written or sent."""
    from huggingface_hub import get_token

    if "/" not in repo:
        raise HubError(f"--push-to-hub {repo!r}: expected owner/name")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise HubError(
            f"--push-to-hub {repo}: HF_HUB_OFFLINE is set, so huggingface_hub will not reach "
            "the Hub; export without --push-to-hub, then push with HF_HUB_OFFLINE=0"
        )
    token = get_token()
    if not token:
        raise HubError(
            f"--push-to-hub {repo}: no Hugging Face token (set HF_TOKEN or run `hf auth login`)"
        )
    return token


def push_export(folder: Path | str, repo: str, *, private: bool = False) -> list[str]:
    """Upload `folder` (an export) to the model repo `repo` and its `corpora/` to the dataset
    repo `corpora_repo(repo)`; return the repo URLs. The token is huggingface_hub's own (HF_TOKEN
    or a saved login)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    token = hub_token(repo)
    api = HfApi(token=token)
    urls = []
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo,
            folder_path=folder,
            repo_type="model",
            ignore_patterns=NOT_MODEL,
            commit_message="synthpat export",
        )
        urls.append(f"https://huggingface.co/{repo}")
        corpora = folder / "corpora"
        if (corpora / "README.md").is_file():
            drepo = corpora_repo(repo)
            api.create_repo(drepo, repo_type="dataset", private=private, exist_ok=True)
            api.upload_folder(
                repo_id=drepo,
                folder_path=corpora,
                repo_type="dataset",
                commit_message="synthpat export",
            )
            urls.append(f"https://huggingface.co/datasets/{drepo}")
    except _transport_errors(HfHubHTTPError) as exc:
        raise HubError(f"--push-to-hub {repo}: the upload failed: {exc}") from exc
    return urls


def _transport_errors(hub_error: type[Exception]) -> tuple[type[Exception], ...]:
    """The Hub's refusals and the network's failures: huggingface_hub 2 talks through httpx2
    (older releases httpx), whose connection errors are not OSErrors."""
    import contextlib
    import importlib

    errors: list[type[Exception]] = [hub_error, OSError]
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            errors.append(importlib.import_module(name).HTTPError)
    return tuple(errors)
