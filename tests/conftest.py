"""Shared test set-up: offline hub, quiet Ray, each folder's marker and the gpu skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "uspto-9k" / "patents.jsonl"


#: Each folder's marker, added to every test under it (before `-m` selects on markers).
FOLDER_MARKERS = {"integration": pytest.mark.integration, "gpu": pytest.mark.gpu}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).resolve().parent
    for item in items:
        path = Path(item.path).resolve()
        folder = path.relative_to(tests).parts[0] if path.is_relative_to(tests) else None
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return  # no torch import (seconds) for a run without gpu tests, such as tests/unit
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: no CUDA either way
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def uspto_path() -> Path:
    if not SHARED_DATA.is_file():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA
