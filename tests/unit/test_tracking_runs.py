"""Committed stage outputs into a temporary MLflow SQLite store: one run per trial whatever
the number of passes, the cell as params, the scores as metrics, warnings instead of errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from config import load_config  # noqa: E402
from orchestrator.cache import Manifest, RunStore  # noqa: E402
from orchestrator.tracking import track_stage, tracking_uri  # noqa: E402
from orchestrator.tracking.records import git_commit  # noqa: E402
from tasks.artifacts import TrialRow, save_results  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
HISTORY = [{"epoch": 1, "train_loss": 0.9, "val_micro_f1": 0.2}, {"epoch": 2, "train_loss": 0.5}]


def _row(trial_id: str, seed: int, arm: str = "real_only", f1: float = 0.5, **kw) -> TrialRow:
    values = dict(
        trial_id=trial_id,
        regime="r48",
        arm=arm,
        ratio=1.0 if arm != "real_only" else None,
        ordering="shuffled",
        generator="smollm2-135m" if arm != "real_only" else "",
        family="tfidf-lr",
        family_kind="tfidf_linear",
        loss="bce",
        precision="fp32",
        attention="sdpa",
        seed=seed,
        n_train=48,
        n_real=48,
        n_synthetic=0,
        status="ok",
        val_micro_f1=f1 - 0.1,
        test_micro_f1=f1,
        test_macro_f1=f1 / 2,
        checkpoint=f"checkpoints/{trial_id}",
        trained_at=1.7e9,
        train_seconds=2.5,
        trial_key=f"key-{trial_id}",
    )
    values.update(kw)
    return TrialRow(**values)


class Study:
    """A run folder with a committed trials stage, as `run_stage` leaves it."""

    def __init__(self, tmp_path: Path, *overrides: str):
        self.cfg = load_config(QUICKSTART, [f"resources.runs_dir={tmp_path}", *overrides])
        self.store = RunStore(tmp_path / "quickstart")
        self.uri = tracking_uri(self.cfg, self.store.run_dir)

    def commit_trials(self, rows: list[TrialRow], fingerprint: str = "fp1") -> Manifest:
        tmp = self.store.begin("trials")
        for r in rows:
            if r.status == "ok":
                ckpt = tmp / r.checkpoint
                ckpt.mkdir(parents=True)
                doc = {"metrics": {"test_micro_f1": r.test_micro_f1}, "train_history": HISTORY}
                (ckpt / "classifier.json").write_text(json.dumps(doc))
        save_results(tmp, rows)
        m = Manifest(
            "trials",
            fingerprint,
            {"prepare": "p1", "generate": "g1"},
            {"trials": {"seeds": [0, 1], "families": [{"name": "tfidf-lr"}]}},
            {},
            "0.1.0",
            rows={"trials": len(rows), "ok": sum(r.status == "ok" for r in rows)},
            summary={"best_trial": rows[0].trial_id, "status_note": "real_only: 0.5"},
            started_at=1.7e9,
            seconds=12.0,
        )
        self.store.commit("trials", tmp, m)
        return m

    def track(self, stage: str = "trials") -> None:
        track_stage(self.cfg, self.store, stage, self.store.manifest(stage))

    def runs(self, kind: str | None = None) -> pd.DataFrame:
        import mlflow

        exp = self.client().get_experiment_by_name("quickstart")
        mlflow.set_tracking_uri(self.uri)
        try:
            df = mlflow.search_runs([exp.experiment_id], output_format="pandas")
        finally:
            mlflow.set_tracking_uri(None)
        if kind is not None:
            df = df[df["tags.synthpat.kind"] == kind]
        return df

    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)


ROWS = [_row("t1", 0, f1=0.5), _row("t2", 1, f1=0.6), _row("t3", 0, arm="real_plus_synthetic")]


@pytest.fixture
def study(tmp_path, monkeypatch) -> Study:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(tmp_path / "elsewhere.db"))
    return Study(tmp_path)


def test_logging_twice_gives_one_run_per_trial(study, capsys):
    study.commit_trials(ROWS)
    study.track()
    study.track()
    trials = study.runs("trial")
    assert sorted(trials["tags.synthpat.trial_id"]) == ["t1", "t2", "t3"]
    assert len(study.runs("stage")) == 1 and len(study.runs("study")) == 1
    assert len(study.runs()) == 5
    err = capsys.readouterr().err
    assert "tracking: trials logged to mlflow (5 new, 0 updated, 0 unchanged)" in err
    assert "(0 new, 0 updated, 5 unchanged)" in err
    # The store is the run folder's, not the ambient MLFLOW_TRACKING_URI.
    assert (study.store.run_dir / "mlflow.db").is_file()


def test_params_metrics_and_tags_of_a_trial(study):
    manifest = study.commit_trials(ROWS)
    study.track()
    df = study.runs("trial").set_index("tags.synthpat.trial_id")
    t1, t3 = df.loc["t1"], df.loc["t3"]
    assert t1["metrics.test_micro_f1"] == 0.5 and t1["metrics.val_micro_f1"] == pytest.approx(0.4)
    assert t1["metrics.n_train"] == 48 and t1["metrics.train_seconds"] == 2.5
    assert (t1["params.regime"], t1["params.arm"], t1["params.seed"]) == ("r48", "real_only", "0")
    assert (t3["params.ratio"], t3["params.generator"]) == ("1.0", "smollm2-135m")
    assert t1["params.family"] == "tfidf-lr" and t1["params.precision"] == "fp32"
    assert pd.isna(t1["params.ratio"])  # a real-only trial has no ratio
    assert t1["tags.synthpat.study"] == "quickstart"
    assert t1["tags.synthpat.stage_fingerprint"] == manifest.fingerprint
    assert t1["tags.synthpat.trial_key"] == "key-t1"
    assert t1["tags.synthpat.version"] == "0.1.0"
    assert t1["tags.mlflow.source.git.commit"] == (git_commit() or None)
    # Seeds of one cell share the cell tag; another arm is another cell.
    assert t1["tags.synthpat.cell"] == df.loc["t2", "tags.synthpat.cell"]
    assert t1["tags.synthpat.cell"] != t3["tags.synthpat.cell"]
    assert "arm=real_only" in t1["tags.synthpat.cell"] and "seed" not in t1["tags.synthpat.cell"]
    # Trials nest under the stage run, the stage under the study run.
    stage = study.runs("stage").iloc[0]
    parent = study.runs("study").iloc[0]
    assert set(df["tags.mlflow.parentRunId"]) == {stage.run_id}
    assert stage["tags.mlflow.parentRunId"] == parent.run_id
    assert df.loc["t1", "tags.mlflow.runName"] == "t1" and df.loc["t1", "status"] == "FINISHED"
    # Training curves step by step, beside (not in place of) the final validation score.
    history = study.client().get_metric_history(t1.run_id, "train/train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.5)]
    assert [a.path for a in study.client().list_artifacts(t1.run_id)] == ["classifier.json"]


def test_the_stage_run_has_rows_timings_config_and_files(study):
    study.commit_trials(ROWS)
    study.track()
    stage = study.runs("stage").iloc[0]
    assert stage["metrics.rows.trials"] == 3 and stage["metrics.seconds"] == 12.0
    assert stage["params.trials.seeds"] == "[0, 1]"
    assert stage["tags.synthpat.upstream.prepare"] == "p1"
    assert stage["tags.mlflow.note.content"] == "real_only: 0.5"
    names = {a.path for a in study.client().list_artifacts(stage.run_id)}
    assert names == {"manifest.json", "results.parquet"}


def test_a_forced_rerun_updates_its_runs_and_adds_none(study):
    study.commit_trials(ROWS)
    study.track()
    before = study.runs().set_index("tags.synthpat.key").run_id.to_dict()
    retrained = [_row("t1", 0, f1=0.7, trained_at=1.8e9), *ROWS[1:]]
    study.commit_trials(retrained)  # same fingerprint: `--force`
    study.track()
    after = study.runs()
    assert after.set_index("tags.synthpat.key").run_id.to_dict() == before
    t1 = after[after["tags.synthpat.trial_id"] == "t1"].iloc[0]
    assert t1["metrics.test_micro_f1"] == 0.7


def test_a_new_output_keeps_the_runs_of_its_reused_trials(study):
    study.commit_trials(ROWS, fingerprint="fp1")
    study.track()
    first = study.runs("trial").set_index("tags.synthpat.trial_id").run_id.to_dict()
    # A seed added: a new fingerprint; t1-t3 reused with their keys, t4 trained.
    study.commit_trials([*ROWS, _row("t4", 2)], fingerprint="fp2")
    study.track()
    trials = study.runs("trial").set_index("tags.synthpat.trial_id")
    assert len(trials) == 4 and trials.run_id[["t1", "t2", "t3"]].to_dict() == first
    assert set(trials["tags.synthpat.stage_fingerprint"]) == {"fp2"}
    stages = study.runs("stage").set_index("tags.synthpat.stage_fingerprint")
    assert len(stages) == 2  # each output its own stage run; the trials under the newest
    assert set(trials["tags.mlflow.parentRunId"]) == {stages.run_id["fp2"]}


def test_a_failed_trial_is_a_failed_run_without_scores(study):
    failed = _row("t9", 0, status="failed", reason="out of memory", checkpoint="")
    failed.test_micro_f1 = failed.val_micro_f1 = failed.test_macro_f1 = None
    study.commit_trials([ROWS[0], failed])
    study.track()
    t9 = study.runs("trial").set_index("tags.synthpat.trial_id").loc["t9"]
    assert t9.status == "FAILED" and t9["tags.synthpat.reason"] == "out of memory"
    assert pd.isna(t9["metrics.test_micro_f1"])


def test_fidelity_per_corpus_and_report_files(study):
    for stage, files in {
        "fidelity": {"summary.parquet": None},
        "report": {"report.md": "# verdict", "report.html": "<html/>", "figures/a.png": "png"},
    }.items():
        tmp = study.store.begin(stage)
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            if name.endswith(".parquet"):
                pd.DataFrame(
                    {"corpus_id": ["r48__g__synthesis__plain"], "draw": [0], "mmd2": [0.05]}
                ).to_parquet(tmp / name)
            else:
                (tmp / name).write_text(text)
        m = Manifest(stage, f"fp-{stage}", {}, {}, {}, "0.1.0", summary={"verdict": ["ok"]})
        study.store.commit(stage, tmp, m)
        study.track(stage)
    stages = study.runs("stage").set_index("tags.synthpat.stage")
    assert stages.loc["fidelity", "metrics.r48__g__synthesis__plain/mmd2"] == 0.05
    report = stages.run_id["report"]
    names = {a.path for a in study.client().list_artifacts(report)}
    assert names == {"manifest.json", "report.md", "report.html", "figures"}
    assert [a.path for a in study.client().list_artifacts(report, "figures")] == ["figures/a.png"]


def test_an_unreachable_server_warns_once_and_does_not_raise(tmp_path, capsys):
    s = Study(tmp_path, "tracking.uri=http://127.0.0.1:9")
    s.commit_trials(ROWS)
    t0 = time.perf_counter()
    s.track()  # no exception
    assert time.perf_counter() - t0 < 10  # not MLflow's minutes of retries
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "tracking" in ln]
    assert len(lines) == 1
    assert lines[0].startswith("tracking: trials not logged to mlflow (ConnectionError: no MLflow")
    assert s.store.manifest("trials").rows["trials"] == 3  # the stage's output stands


def test_a_store_that_cannot_be_written_warns(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    s = Study(tmp_path, f"tracking.uri=sqlite:///{tmp_path / 'file' / 'mlflow.db'}")
    s.commit_trials(ROWS)
    s.track()
    err = capsys.readouterr().err
    assert "tracking: trials not logged to mlflow (" in err and err.count("\n") == 1


def test_backend_none_logs_nothing(tmp_path, capsys):
    s = Study(tmp_path, "tracking.backend=none")
    s.commit_trials(ROWS)
    s.track()
    assert not (s.store.run_dir / "mlflow.db").exists() and capsys.readouterr().err == ""
