"""`synthpat trials` through a pipe, as CI and `make quickstart | tee` see it: a few plain lines
on the console, Ray's and Tune's output in runs/<study>/logs/trials.log; `-v` shows it live."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from test_trials_stage import _prepared

REPO = Path(__file__).resolve().parents[2]

#: A Ray, vLLM or Python logging INFO line ("2026-12-02 18:50:47,343\tINFO worker.py:...",
#: "(pid=1) INFO 12-02 ..."): none may reach the console.
INFO = re.compile(r"\bINFO\b")


def _trials(cfg: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "orchestrator", "trials", str(cfg), *extra]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_trials_console_is_short_and_the_libraries_write_to_the_stage_log(tmp_path, uspto_path):
    trials = {
        "families": [{"kind": "tfidf_linear", "name": "tfidf"}],
        "arms": ["real_only", "real_plus_synthetic"],
        "ratios": [0.5],
        "seeds": [0, 1],
        "resources": {"cpus": 1},
    }
    cfg = _prepared(tmp_path, uspto_path, trials, n_corpora=1)
    res = _trials(cfg)
    assert res.returncode == 0, res.stderr[-3000:]
    console = (res.stdout + res.stderr).splitlines()
    log = tmp_path / "runs" / "tr" / "logs" / "trials.log"
    text = log.read_text()

    assert len(console) < 30, "\n".join(console)
    assert not [ln for ln in console if INFO.search(ln)], "\n".join(console)
    # Tune's status tables and Ray's start-up lines are in the stage's log, not on the console.
    assert "Trial status" in text and "Trial status" not in res.stdout + res.stderr
    assert re.search(r"\bray\b|Ray", text)
    assert any(ln.startswith("logs: ") and "logs/<stage>.log" in ln for ln in console)
    # A pipe gets the plain final progress line: every trial done, none failed.
    done = [ln for ln in console if re.match(r"trials: \d+/\d+ trials", ln)]
    assert done and re.match(r"trials: (\d+)/\1 trials", done[-1]), done
    assert "0 failed" in done[-1] and re.search(r"best val_micro_f1 0\.\d{3}", done[-1])
    assert any("trials: done in" in ln for ln in console)

    # -v: the same output live on the console, and appended to the same log.
    res = _trials(cfg, "--force", "-v")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Trial status" in res.stdout + res.stderr
    assert log.read_text().count("===== trials:") == 2
