"""The static stage graph: what each stage reads, what can change it, and what `status` says."""

from pathlib import Path

import pytest
from pydantic import BaseModel

from config import load_config
from config.base import fingerprinted
from orchestrator.cache import Manifest, RunStore
from orchestrator.stages import STAGES, study_graph

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
STAGE_NAMES = [s.name for s in STAGES]


def _cfg(*overrides):
    return load_config(QUICKSTART, list(overrides))


def _fingerprints(cfg):
    graph = study_graph(cfg)
    return {s: graph.key(s).fingerprint for s in STAGE_NAMES if graph.enabled(s)}


def _mark_done(store, graph):
    """Commit an (empty) output for every enabled stage, as a finished run would."""
    for name in STAGE_NAMES:
        if not graph.enabled(name):
            continue
        k = graph.key(name)
        m = Manifest(name, k.fingerprint, k.upstream, k.config, k.inputs, "0", {"rows": 1})
        store.commit(name, store.begin(name), m)


def test_every_stage_reads_only_stages_before_it():
    seen = set()
    for stage in STAGES:
        assert set(stage.reads) <= seen, stage.name
        seen.add(stage.name)
        assert stage.fields, f"{stage.name} declares no config fields"


def test_an_mmd_setting_reruns_fidelity_and_the_report_but_no_trial():
    before = _fingerprints(_cfg())
    after = _fingerprints(_cfg("fidelity.mmd.permutations=500"))
    changed = {s for s in before if before[s] != after[s]}
    assert changed == {"fidelity", "report"}


@pytest.mark.parametrize(
    "override",
    [
        "trials.select_metric=val_micro_f1",
        "trials.max_failures=5",
        "trials.resources.max_concurrent=3",
        "trials.resources.reuse_actors=false",
        "generation.pipeline_restarts=9",
        "fidelity.encoder.batch_size=7",
        "serve.port=9123",
    ],
)
def test_fields_that_cannot_change_a_trial_rerun_no_trial(override):
    assert _fingerprints(_cfg(override))["trials"] == _fingerprints(_cfg())["trials"]


@pytest.mark.parametrize(
    "override, stages",
    [
        ("trials.seeds=[0,1,2]", {"trials", "report", "serve_smoke"}),
        ("generation.seed=4", {"generate", "fidelity", "trials", "report", "serve_smoke"}),
        ("data.seed=3", set(STAGE_NAMES)),
        ("report.confidence=0.9", {"report"}),
        # The encoder's backend and quantization change its vectors: fidelity and the trials.
        ("fidelity.encoder.backend=onnx", {"fidelity", "trials", "report", "serve_smoke"}),
        ("fidelity.encoder.backend=auto", {"fidelity", "trials", "report", "serve_smoke"}),
    ],
)
def test_fields_that_change_an_output_rerun_it_and_what_reads_it(override, stages):
    before, after = _fingerprints(_cfg()), _fingerprints(_cfg(override))
    assert {s for s in before if before[s] != after[s]} == stages


def _marked_paths(model, prefix=""):
    """(dotted path, value) of every NOT_FINGERPRINTED field in a config instance."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        path = f"{prefix}{name}"
        if not fingerprinted(info):
            yield path, model, name
        elif isinstance(value, BaseModel):
            yield from _marked_paths(value, path + ".")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, BaseModel):
                    yield from _marked_paths(v, f"{path}.{i}.")


def _other(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "-other"
    return None  # a model or None: a different value of its own kind is not needed here


def test_no_field_marked_not_fingerprinted_changes_any_fingerprint():
    cfg = _cfg()
    before = _fingerprints(cfg)
    checked = 0
    named = {f for stage in STAGES for f in stage.fields}
    for path, owner, name in list(_marked_paths(cfg)):
        if name in ("enabled", "smoke") or path in named:
            # Turning a stage off changes which stages run (tested below); a stage that names
            # a field itself (serve_smoke: trials.select_metric) counts it.
            continue
        other = _other(getattr(owner, name))
        if other is None:
            continue
        old = getattr(owner, name)
        object.__setattr__(owner, name, other)
        try:
            assert _fingerprints(cfg) == before, path
        finally:
            object.__setattr__(owner, name, old)
        checked += 1
    assert checked >= 15


def test_status_after_a_run_is_done_everywhere(tmp_path):
    cfg = _cfg()
    store = RunStore(tmp_path)
    _mark_done(store, study_graph(cfg))
    states = {s.stage: s.state for s in study_graph(cfg).states(store)}
    assert states == {name: "done" for name in STAGE_NAMES}
    changed = {s.stage: s for s in study_graph(_cfg("fidelity.mmd.permutations=500")).states(store)}
    assert changed["trials"].state == "done"
    assert changed["fidelity"].state == "stale"
    assert changed["fidelity"].reason == "config changed: fidelity.mmd.permutations"
    assert changed["report"].reason == "fidelity changed since it ran"


def test_status_of_a_study_without_generation_is_done(tmp_path):
    cfg = _cfg()
    cfg = cfg.model_copy(update={"generation": None, "fidelity": None})
    graph = study_graph(cfg)
    assert graph.inputs("trials") == ("prepare",)
    assert graph.inputs("report") == ("prepare", "trials")
    store = RunStore(tmp_path)
    _mark_done(store, graph)
    states = {s.stage: s.state for s in study_graph(cfg).states(store)}
    assert states == {
        "prepare": "done",
        "generate": "disabled",
        "fidelity": "disabled",
        "trials": "done",
        "report": "done",
        "serve_smoke": "done",
    }


def test_a_changed_input_file_makes_prepare_stale(tmp_path):
    src = tmp_path / "patents.jsonl"
    src.write_bytes((REPO.parent / "shared/data/uspto-9k/patents.jsonl").read_bytes()[:20000])
    cfg = _cfg(f"data.source.path={src}")
    store = RunStore(tmp_path / "run")
    _mark_done(store, study_graph(cfg))
    src.write_bytes(src.read_bytes()[:-10])
    states = {s.stage: s for s in study_graph(cfg).states(store)}
    assert states["prepare"].reason == "input file source changed"
    assert states["trials"].reason == "prepare changed since it ran"


def test_a_stage_refuses_an_input_that_is_stale(tmp_path):
    from orchestrator.stages import run_stage

    store = RunStore(tmp_path)
    _mark_done(store, study_graph(_cfg(), store))
    changed = study_graph(_cfg("generation.seed=4"), store)
    with pytest.raises(RuntimeError, match=r"needs stage generate, which is stale \(config"):
        run_stage(changed, "fidelity")


def test_a_run_folder_copied_without_its_source_file_keeps_its_states(tmp_path):
    src = tmp_path / "patents.jsonl"
    src.write_text('{"id": "x"}\n')
    cfg = _cfg(f"data.source.path={src}")
    store = RunStore(tmp_path / "run")
    _mark_done(store, study_graph(cfg, store))
    src.unlink()
    states = {s.stage: s.state for s in study_graph(cfg, store).states(store)}
    assert set(states.values()) == {"done"}
    with pytest.raises(FileNotFoundError, match="input `source` of stage prepare"):
        study_graph(cfg, RunStore(tmp_path / "elsewhere")).key("prepare")
