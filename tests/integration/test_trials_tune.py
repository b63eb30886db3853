"""The Ray Tune adapter's pieces that need Ray itself: trial bundles and the lost-worker test."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_trial_and_worker_bundles():
    from config.trials import FinetuneFamily, FrozenHeadFamily
    from orchestrator.train import worker_resources
    from orchestrator.trials_tune import _resources
    from tasks.trials.inputs import TrialSettings

    env = TrialSettings(cpus=2.0, gpus=0.5, custom={"accelerator_type_l4": 0.5})
    families = {
        "h": FrozenHeadFamily(name="h"),
        "f": FinetuneFamily(name="f"),
        "f2": FinetuneFamily(name="f2", num_workers=2),
    }
    per_trial = _resources(families, env)
    head = per_trial({"cell": {"family": "h"}})
    assert head.bundles == [{"CPU": 2.0, "accelerator_type_l4": 0.5}]
    # A one-worker fine-tune trains in the trial's own process: the trial holds the GPU.
    one = per_trial({"cell": {"family": "f"}}).bundles
    assert one == [{"CPU": 2.0, "GPU": 0.5, "accelerator_type_l4": 0.5}]
    # Two workers go through Ray Train: the trial only drives them.
    assert per_trial({"cell": {"family": "f2"}}).bundles[0]["CPU"] < 0.1
    # A fine-tune's Train workers carry the GPU and the custom resources.
    want = {"CPU": 2.0, "GPU": 0.5, "accelerator_type_l4": 0.5}
    assert worker_resources(2.0, 0.5, dict(env.custom)) == want
    assert worker_resources(1.0, 0.0) == {"CPU": 1.0}


def test_lost_worker_tells_a_dead_node_from_a_trials_own_error():
    from ray import exceptions as rex

    from orchestrator.trials_tune import lost_worker

    assert lost_worker(rex.ActorDiedError())
    assert lost_worker(rex.NodeDiedError("node 46fb gone"))
    try:
        try:
            raise rex.WorkerCrashedError()
        except rex.WorkerCrashedError as inner:
            raise RuntimeError("trial failed") from inner
    except RuntimeError as wrapped:
        assert lost_worker(wrapped)
    assert lost_worker(RuntimeError("ray.exceptions.ActorDiedError: The actor died unexpectedly"))
    assert not lost_worker(ValueError("family tfidf_linear supports loss bce, not 'focal'"))
