"""The study grid on Ray Tune: one trial per cell, retries, checkpoints, resume after a kill.

Resume works at two levels. The experiment lives at `<storage>/<name>` (name from the stage
fingerprint), and a rerun finds it with `Tuner.can_restore` and continues it with
`Tuner.restore(resume_errored=True)`, so Tune does not schedule finished trials again. Tune
snapshots its experiment state only every few seconds, so a trial that finished just before the
kill may be scheduled again: each trial therefore also leaves a done marker (its results row and
checkpoint) under `done_dir` and, finding one, reports it without training again.

A node that dies mid-grid (a preempted spot worker) kills the trials on it; Tune retries them up
to `max_failures`, and trials Tune still gives up on for that reason get further passes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.trials import TrialCell
from orchestrator.trials_fit import PREDICTIONS, TrialData, run_cell

ROW_JSON = "row.json"
CKPT = "classifier"
#: A trial that only drives Ray Train workers holds a sliver of a CPU (0 is refused by Tune).
DRIVER_CPU = 0.01
#: Extra passes over trials that errored because their node or worker died (see fit_with_passes).
LOST_WORKER_PASSES = 2
log = logging.getLogger(__name__)


def _trainable(config: dict[str, Any], data: TrialData, families: dict, settings: dict) -> None:
    """The Tune function trainable: run (or recall) one cell and report its row + checkpoint."""
    from ray import tune

    cell = TrialCell(**config["cell"])
    done = Path(settings["done_dir"]) / cell.trial_id
    if not (done / ROW_JSON).is_file():
        family = families[cell.family]
        env = dict(settings["env"])
        if cell.family_kind != "finetune":
            env["threads"] = max(1, int(round(env.get("cpus", 1))))
        with tempfile.TemporaryDirectory() as tmp:
            env["storage_dir"] = f"{settings['train_storage'].rstrip('/')}/{cell.trial_id}"
            row = run_cell(cell, data, family, Path(tmp) / CKPT, env, Path(tmp) / PREDICTIONS)
            (Path(tmp) / ROW_JSON).write_text(json.dumps(row, default=str))
            stage = done.with_name(f".{done.name}.tmp-{os.getpid()}")
            shutil.rmtree(stage, ignore_errors=True)
            shutil.copytree(tmp, stage)
            shutil.rmtree(done, ignore_errors=True)
            os.replace(stage, done)  # the marker appears complete or not at all
    row = json.loads((done / ROW_JSON).read_text())
    metrics = {k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None}
    metrics["row_json"] = json.dumps(row, default=str)
    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(done)))


def _resources(settings: dict):
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    env = settings["env"]

    def per_trial(config: dict) -> PlacementGroupFactory:
        if config["cell"]["family_kind"] == "finetune":
            return PlacementGroupFactory([{"CPU": DRIVER_CPU}])
        return PlacementGroupFactory([_bundle(env, gpu=False)])

    return per_trial


def _bundle(env: dict[str, Any], gpu: bool = True) -> dict[str, float]:
    """One trial's (or one Ray Train worker's) resources: CPUs, GPUs if any, custom ones.

    `gpu=False` for the families that train on CPUs (frozen heads, TF-IDF, ensembles): a GPU
    they held would sit idle and could make the autoscaler start a GPU node for nothing."""
    bundle = {"CPU": float(env["cpus"])}
    if gpu and env.get("gpus", 0) > 0:
        bundle["GPU"] = float(env["gpus"])
    bundle.update({k: float(v) for k, v in env.get("custom", {}).items()})
    return bundle


def trial_need(family: Any, env: dict[str, Any]) -> dict[str, float]:
    """The resources one trial of `family` occupies while it runs: its own bundle, or for a
    fine-tune its Ray Train workers' (each asks for the trial's CPUs/GPUs/custom resources)."""
    finetune = getattr(family, "kind", "") == "finetune"
    workers = family.num_workers if finetune else 1
    return {k: v * workers for k, v in _bundle(env, gpu=finetune).items() if v > 0}


def concurrent_trials(needs: list[dict[str, float]], capacity: dict[str, float]) -> int:
    """How many trials run at once: the cluster's capacity over the largest trial's need, per
    resource, the scarcest resource deciding (at least one)."""
    worst: dict[str, float] = {}
    for need in needs:
        for k, v in need.items():
            worst[k] = max(worst.get(k, 0.0), v)
    fits = [int(capacity.get(k, 0.0) // v) for k, v in worst.items() if v > 0]
    return max(1, min(fits)) if fits else 1


def run_grid(
    cells: list[TrialCell],
    data: TrialData,
    families: dict[str, Any],
    *,
    storage_path: str,
    name: str,
    done_dir: Path,
    train_storage: str | Path,
    cpus: float,
    gpus: float,
    max_failures: int,
    custom: dict[str, float] | None = None,
    max_concurrent: int | None = None,
    reuse_actors: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run every cell on Ray Tune (resuming `<storage_path>/<name>` when it exists).

    Returns trial_id -> {"row": results row or None, "checkpoint": local folder or None,
    "error": message or ""}. Ray must be initialized.
    """
    import ray
    from ray import tune

    if not cells:
        return {}
    settings = {
        "done_dir": str(done_dir),
        "train_storage": str(train_storage),
        "env": {"cpus": cpus, "gpus": gpus, "custom": dict(custom or {})},
    }
    if max_concurrent is None:
        needs = [trial_need(families[f], settings["env"]) for f in {c.family for c in cells}]
        max_concurrent = concurrent_trials(needs, ray.cluster_resources())
    log.info("trials: at most %d running at once", max_concurrent)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, data=data, families=families, settings=settings),
        _resources(settings),
    )
    path = f"{storage_path.rstrip('/')}/{name}"

    def restore() -> Any:
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)

    if tune.Tuner.can_restore(path):
        tuner = restore()
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"cell": tune.grid_search([asdict(c) for c in cells])},
            tune_config=tune.TuneConfig(
                reuse_actors=reuse_actors, max_concurrent_trials=max_concurrent
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage_path,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=1,
            ),
        )
    grid = fit_with_passes(tuner, restore)
    out: dict[str, dict[str, Any]] = {}
    for result in grid:
        tid = (result.config or {}).get("cell", {}).get("trial_id")
        if tid is None:
            continue
        row_json = (result.metrics or {}).get("row_json")
        out[tid] = {
            "row": json.loads(row_json) if row_json else None,
            "checkpoint": result.checkpoint,
            "error": "" if result.error is None else _message(result.error),
        }
    return out


def fit_with_passes(tuner: Any, restore: Any, passes: int = LOST_WORKER_PASSES) -> Any:
    """`tuner.fit()`, then up to `passes` more fits of `restore()` (a Tuner restored with
    resume_errored) while some trial errored because its worker or node died.

    Tune can give up on a trial whose (reused) actor died with its node, counting the actor's
    pending calls as separate failures; another pass over the errored trials finishes them (done
    markers make already-finished work instant). Trials that failed in their own code are not
    the reason for a pass.
    """
    grid = tuner.fit()
    for attempt in range(passes):
        lost = [r for r in grid if r.error is not None and lost_worker(r.error)]
        if not lost:
            break
        log.warning(
            "trials: %d trial(s) lost their worker (node gone); pass %d over errored trials",
            len(lost),
            attempt + 2,
        )
        grid = restore().fit()
    return grid


def lost_worker(error: BaseException) -> bool:
    """Whether a trial failed because its worker process or node went away (not its own code)."""
    from ray import exceptions as rex

    kinds = (rex.RayActorError, rex.NodeDiedError, rex.WorkerCrashedError)
    seen, err = set(), error
    while err is not None and id(err) not in seen:  # Tune may wrap the Ray error
        if isinstance(err, kinds):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    text = str(error)
    return any(k.__name__ in text for k in (*kinds, rex.ActorDiedError))


def _message(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:500]
