"""The `tracking` section: defaults, errors that name the field, and no fingerprint effect."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from config import ConfigError, load_config
from orchestrator.stages import STAGES, study_graph
from orchestrator.tracking import build_tracker, tracking_uri
from orchestrator.tracking.mlflow_store import MlflowTracker
from orchestrator.tracking.wandb_store import WandbTracker

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def _fingerprints(*overrides: str) -> dict[str, str]:
    graph = study_graph(load_config(QUICKSTART, list(overrides)))
    return {s.name: graph.key(s.name).fingerprint for s in STAGES if graph.enabled(s.name)}


def _problems(*overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(QUICKSTART, list(overrides))
    return err.value.problems


def test_the_default_is_mlflow_in_an_embedded_store_under_the_run_folder(tmp_path):
    cfg = load_config(QUICKSTART, [f"resources.runs_dir={tmp_path}"])
    assert cfg.tracking.backend == "mlflow" and cfg.tracking.uri is None
    tracker = build_tracker(cfg, tmp_path / "quickstart")
    assert isinstance(tracker, MlflowTracker)
    assert tracker.uri == f"sqlite:///{tmp_path / 'quickstart' / 'mlflow.db'}"
    assert tracker.artifact_location == (tmp_path / "quickstart" / "mlartifacts").as_uri()
    assert tracker.experiment == "quickstart"
    assert tracking_uri(cfg, tmp_path / "quickstart") == tracker.uri


def test_a_configured_uri_and_experiment(tmp_path):
    cfg = load_config(
        QUICKSTART, ["tracking.uri=http://127.0.0.1:5000", "tracking.experiment=patents"]
    )
    tracker = build_tracker(cfg, tmp_path)
    assert (tracker.uri, tracker.experiment, tracker.artifact_location) == (
        "http://127.0.0.1:5000",
        "patents",
        None,  # a server decides where artifacts go
    )


def test_a_relative_sqlite_uri_resolves_against_the_config_folder(tmp_path):
    tree = yaml.safe_load(QUICKSTART.read_text())
    tree["data"]["source"]["path"] = str(REPO / "configs" / tree["data"]["source"]["path"])
    tree["tracking"] = {"uri": "sqlite:///store/mlflow.db"}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tree))
    cfg = load_config(path)
    assert cfg.tracking.uri == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    tracker = build_tracker(cfg, tmp_path / "runs" / "quickstart")
    assert tracker.artifact_location == (tmp_path / "store" / "mlartifacts").as_uri()


def test_backend_none_builds_no_tracker(tmp_path):
    assert build_tracker(load_config(QUICKSTART, ["tracking.backend=none"]), tmp_path) is None


def test_errors_name_the_field():
    (p,) = _problems("tracking.backend=neptune")
    assert p.startswith("tracking.backend:") and "'mlflow', 'wandb' or 'none'" in p
    (p,) = _problems("tracking.uri=runs/mlflow.db")
    assert p.startswith("tracking.uri:") and "sqlite:///" in p
    (p,) = _problems("tracking.colour=red")
    assert p.startswith("tracking.colour:")
    (p,) = _problems("tracking.experiment=")
    assert p.startswith("tracking.experiment:")


def test_wandb_without_the_package_is_an_error_naming_tracking_backend(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    (p,) = _problems("tracking.backend=wandb")
    assert p.startswith("tracking.backend:") and "pip install 'synthpat[wandb]'" in p


def test_wandb_takes_no_mlflow_uri():
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb is not installed")
    (p,) = _problems("tracking.backend=wandb", "tracking.uri=sqlite:///x.db")
    assert "tracking.uri" in p and "tracking.backend=wandb" in p


def test_wandb_runs_offline_under_the_run_folder_without_credentials(tmp_path, monkeypatch):
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb is not installed")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    tracker = build_tracker(load_config(QUICKSTART, ["tracking.backend=wandb"]), tmp_path)
    assert isinstance(tracker, WandbTracker)
    assert (tracker.mode, tracker.directory, tracker.project) == (
        "offline",
        tmp_path / "wandb",
        "quickstart",
    )
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert build_tracker(load_config(QUICKSTART, ["tracking.backend=wandb"]), tmp_path).mode == (
        "online"
    )
    cfg = load_config(QUICKSTART, ["tracking.backend=wandb", "tracking.wandb_mode=offline"])
    assert build_tracker(cfg, tmp_path).mode == "offline"


@pytest.mark.parametrize(
    "overrides",
    [
        ["tracking.backend=none"],
        ["tracking.uri=http://10.0.0.1:5000", "tracking.experiment=other"],
        ["tracking.uri=sqlite:////tmp/elsewhere.db"],
    ],
)
def test_tracking_settings_change_no_stage_fingerprint(overrides):
    before = _fingerprints()
    assert set(before) == {s.name for s in STAGES}  # the quickstart runs every stage
    assert _fingerprints(*overrides) == before


def test_mlflow_is_not_imported_to_load_a_config_or_the_stages():
    # `synthpat validate` stays fast: nothing imports a tracking library until a stage logs.
    import subprocess
    import sys

    code = (
        "import sys, orchestrator.stages, orchestrator.tracking, config; "
        "config.load_config(sys.argv[1]); "
        "print(sorted(m for m in ('mlflow', 'wandb') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(QUICKSTART)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
