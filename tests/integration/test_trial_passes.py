"""A trial whose worker process dies gets another pass; a trial that fails in its own code not.

Real Ray Tune on local Ray: `max_failures=0`, so Tune itself gives each trial one attempt and
`fit_with_passes` alone decides what runs again.
"""

from __future__ import annotations

import os
from pathlib import Path


def test_lost_worker_gets_another_pass_and_own_errors_do_not(tmp_path):
    import ray
    from ray import tune

    from orchestrator.trials_tune import fit_with_passes

    # Defined here so that Ray pickles it by value (test modules are not importable by workers).
    def _trainable(config: dict) -> None:
        from ray import tune

        attempts = Path(config["dir"]) / config["kind"]
        attempts.mkdir(exist_ok=True)
        n = len(list(attempts.iterdir()))
        (attempts / str(n)).touch()
        if config["kind"] == "dies_once" and n == 0:
            os._exit(1)  # the worker process vanishes, as on a preempted node
        if config["kind"] == "own_error":
            raise ValueError("bad mix")
        tune.report({"attempt": n})

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        trainable = tune.with_resources(_trainable, {"CPU": 1})
        tuner = tune.Tuner(
            trainable,
            param_space={
                "kind": tune.grid_search(["ok", "dies_once", "own_error"]),
                "dir": str(tmp_path),
            },
            run_config=tune.RunConfig(
                name="passes",
                storage_path=str(tmp_path / "tune"),
                failure_config=tune.FailureConfig(max_failures=0),
                verbose=0,
            ),
        )
        path = str(tmp_path / "tune" / "passes")
        grid = fit_with_passes(
            tuner, lambda: tune.Tuner.restore(path, trainable, resume_errored=True)
        )
    finally:
        ray.shutdown()

    by_kind = {r.config["kind"]: r for r in grid}
    assert by_kind["ok"].error is None and by_kind["ok"].metrics["attempt"] == 0
    assert by_kind["dies_once"].error is None and by_kind["dies_once"].metrics["attempt"] == 1
    assert by_kind["own_error"].error is not None
    # The own-error trial ran once in the first fit and once more in the single extra pass that
    # the lost worker caused (resume_errored restores every errored trial), never more.
    assert len(list((tmp_path / "own_error").iterdir())) == 2
    assert len(list((tmp_path / "ok").iterdir())) == 1
