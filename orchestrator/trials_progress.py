"""The trials stage's live display: done / running / failed trials and the best validation
score so far, fed by a Ray Tune callback (Tune's own status tables go to the stage's log)."""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Callback

from orchestrator.console import StageProgress, warn_once


class GridProgress:
    """Counts of one grid run, shown as a `StageProgress` line."""

    def __init__(self, total: int, metric: str) -> None:
        self.metric = metric
        self.running: set[str] = set()
        self.failed = 0
        self.best = -math.inf
        self.bar = StageProgress("trials", total=total, unit="trials")

    def started(self, trial_id: str) -> None:
        self.running.add(trial_id)
        self._show(0)

    def result(self, result: dict[str, Any]) -> None:
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            self.best = max(self.best, float(value))

    def ended(self, trial_id: str, error: str = "") -> None:
        self.running.discard(trial_id)
        if error:
            self.failed += 1
            warn_once(
                "trial-failed",
                f"a trial failed ({error}); the stage goes on, the failed trials are listed in "
                "trials/results.parquet (status=failed) and their tracebacks are in the stage's "
                "log; fix the cause and run the same command again to retry only those",
            )
        self._show(1)

    def _show(self, advance: int) -> None:
        best = f"{self.best:.3f}" if math.isfinite(self.best) else "-"
        self.bar.update(
            advance, f"{len(self.running)} running, {self.failed} failed, best {self.metric} {best}"
        )

    def close(self) -> None:
        self.bar.close()


#: The display of the grid running in this driver. A Tune callback is pickled with the
#: experiment and restored from it on resume, so the callback keeps no state of its own.
_CURRENT: GridProgress | None = None


def open_progress(total: int, metric: str) -> GridProgress:
    """Start the display for a grid of `total` trials to run."""
    global _CURRENT
    _CURRENT = GridProgress(total, metric)
    return _CURRENT


def close_progress() -> None:
    global _CURRENT
    if _CURRENT is not None:
        _CURRENT.close()
    _CURRENT = None


class ProgressCallback(Callback):
    """Forwards Tune's trial events to the current `GridProgress` (stateless: see `_CURRENT`)."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if _CURRENT is not None:
            _CURRENT.started(trial.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if _CURRENT is not None:
            _CURRENT.result(result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if _CURRENT is not None:
            _CURRENT.ended(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if _CURRENT is not None:
            error = getattr(trial, "error_file", None) or "see the log"
            _CURRENT.ended(trial.trial_id, error=f"trial {trial.trial_id}, {error}")
