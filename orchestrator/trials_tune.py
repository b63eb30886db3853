"""The study grid on Ray Tune: one trial per cell (`tasks.trials.recipe.run_trial`), retries,
resources, resume after a kill.

Each trial writes its checkpoint, predictions and results row once, into its done marker
`<done_dir>/<trial_id>/` (`tasks.trials.recipe`: folder complete when its row is there); the
stage moves them into place at the end. Tune's metrics carry the numeric scores only, for its
own progress table.

Resume works at two levels. The experiment lives at `<storage>/<name>` (name from the stage
fingerprint), and a rerun finds it with `Tuner.can_restore` and continues it with
`Tuner.restore(resume_errored=True)`, so Tune does not schedule finished trials again. Tune
snapshots its experiment state only every few seconds, so a trial that finished just before the
kill may be scheduled again: finding its done marker, it reports the row without training.

A node that dies mid-grid (a preempted spot worker) kills the trials on it; Tune retries them up
to `max_failures`, and trials Tune still gives up on for that reason get further passes.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tasks.artifacts import TrialRow
from tasks.files import replace_dir
from tasks.trials.families import build_family
from tasks.trials.grid import TrialCell
from tasks.trials.inputs import TrialInputs, TrialSettings
from tasks.trials.recipe import read_row, run_trial

#: A trial that only drives Ray Train workers holds a sliver of a CPU (0 is refused by Tune).
DRIVER_CPU = 0.01
#: Extra passes over trials that errored because their node or worker died (see fit_with_passes).
LOST_WORKER_PASSES = 2
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridRun:
    """What every trial of one grid shares besides its inputs: where it writes, its resources."""

    done_dir: str
    train_storage: str  # Ray Train runs of fine-tunes: <train_storage>/<trial_id>
    settings: TrialSettings  # per trial, or per Ray Train worker of a fine-tune
    #: Report each trial's folder as a Tune checkpoint too. Needed where the driver may not see
    #: a worker's disk (a multi-node cluster with `resources.storage_path`): Tune uploads the
    #: folder to the shared storage and the stage downloads it. On one machine the done marker
    #: is where the stage reads it, and another copy would only cost time and disk.
    transport: bool = False


@dataclass(frozen=True)
class TrialOutcome:
    """What Tune says of one trial: its error, and its checkpoint when one was reported."""

    error: str = ""
    checkpoint: Any = None


def _trainable(
    config: dict[str, Any], inputs: TrialInputs, families: dict[str, Any], run: GridRun
) -> None:
    """The Tune function trainable: run (or recall) one cell and report its scores."""
    from ray import tune

    from orchestrator.train import train_on_ray

    cell = TrialCell(**config["cell"])
    done = Path(run.done_dir) / cell.trial_id
    row = read_row(done)
    if row is None:
        family = build_family(families[cell.family], trainer=train_on_ray)
        in_process = family.train_workers() == 0
        settings = replace(
            run.settings,
            storage_dir=f"{run.train_storage.rstrip('/')}/{cell.trial_id}",
            threads=max(1, int(round(run.settings.cpus))) if in_process else None,
        )
        tmp = done.with_name(f".{done.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            row = run_trial(cell, family, inputs, settings, tmp)
            # Replaces an incomplete marker of a killed attempt; appears complete or not at all.
            replace_dir(tmp, done)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    checkpoint = tune.Checkpoint.from_directory(str(done)) if run.transport else None
    tune.report(row.scores(), checkpoint=checkpoint)


def _resources(families: dict[str, Any], settings: TrialSettings):
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    def per_trial(config: dict) -> PlacementGroupFactory:
        family = build_family(families[config["cell"]["family"]])
        if family.train_workers():  # the workers hold the resources, the trial drives them
            return PlacementGroupFactory([{"CPU": DRIVER_CPU}])
        return PlacementGroupFactory([_bundle(settings, gpu=family.needs_gpu())])

    return per_trial


def _bundle(settings: TrialSettings, gpu: bool = True) -> dict[str, float]:
    """One trial's (or one Ray Train worker's) resources: CPUs, GPUs if any, custom ones.

    `gpu=False` for the families that train on CPUs (frozen heads, TF-IDF, SetFit): a GPU they
    held would sit idle and could make the autoscaler start a GPU node for nothing."""
    bundle = {"CPU": float(settings.cpus)}
    if gpu and settings.gpus > 0:
        bundle["GPU"] = float(settings.gpus)
    bundle.update({k: float(v) for k, v in settings.custom.items()})
    return bundle


def trial_need(family_config: Any, settings: TrialSettings) -> dict[str, float]:
    """The resources one trial of a family occupies while it runs: its own bundle, or for a
    fine-tune its Ray Train workers' (each asks for the trial's CPUs/GPUs/custom resources)
    and the trial's own sliver that drives them: two two-worker trials of 0.5 CPU each do not
    fit on 2 CPUs together, and the second one's worker group would time out waiting."""
    family = build_family(family_config)
    workers = max(1, family.train_workers())
    bundle = _bundle(settings, gpu=family.needs_gpu())
    need = {k: v * workers for k, v in bundle.items() if v > 0}
    if family.train_workers():
        need["CPU"] = need.get("CPU", 0.0) + DRIVER_CPU
    return need


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
    inputs: TrialInputs,
    families: dict[str, Any],
    run: GridRun,
    *,
    storage_path: str,
    name: str,
    max_failures: int,
    max_concurrent: int | None = None,
    reuse_actors: bool = True,
    progress_metric: str = "val_micro_f1",
) -> dict[str, TrialOutcome]:
    """Run every cell on Ray Tune (resuming `<storage_path>/<name>` when it exists); each
    finished trial leaves its done marker under `run.done_dir` (`collect` reads it).

    Returns trial_id -> its `TrialOutcome`. Ray must be initialized.
    """
    import ray
    from ray import tune

    from orchestrator.trials_progress import ProgressCallback, close_progress, open_progress

    if not cells:
        return {}
    if max_concurrent is None:
        needs = [trial_need(families[f], run.settings) for f in {c.family for c in cells}]
        max_concurrent = concurrent_trials(needs, ray.cluster_resources())
    log.info("trials: at most %d running at once", max_concurrent)
    # One object-store put of the inputs for the whole grid, read by every trial.
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, inputs=inputs, families=families, run=run),
        _resources(families, run.settings),
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
                callbacks=[ProgressCallback()],
                verbose=1,  # Tune's status tables: in the stage's log, not on the terminal
            ),
        )
    open_progress(len(cells), progress_metric)
    try:
        grid = fit_with_passes(tuner, restore)
    finally:
        close_progress()
    out: dict[str, TrialOutcome] = {}
    for result in grid:
        tid = (result.config or {}).get("cell", {}).get("trial_id")
        if tid is not None:
            error = "" if result.error is None else _message(result.error)
            out[tid] = TrialOutcome(error, result.checkpoint)
    return out


def collect(done_dir: Path, trial_id: str, outcome: TrialOutcome | None) -> TrialRow | None:
    """A finished trial's row from its done marker; a marker this machine does not hold (the
    trial ran on another node) is first downloaded from the checkpoint Tune reported."""
    done = Path(done_dir) / trial_id
    row = read_row(done)
    if row is not None or outcome is None or outcome.checkpoint is None:
        return row
    tmp = done.with_name(f".{done.name}.fetch-{uuid.uuid4().hex[:8]}")
    try:
        outcome.checkpoint.to_directory(str(tmp))
        replace_dir(tmp, done)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return read_row(done)


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
