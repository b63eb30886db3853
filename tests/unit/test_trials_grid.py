"""The study grid: cells, automatic volume controls, skipped numerics, stable trial ids."""

from collections import Counter

import pandas as pd
import pytest
from pydantic import ValidationError

from config import StudyConfig
from config.trials import TrialsConfig
from tasks.trials.grid import check_unique, expand_grid

GEN = {
    "generators": [{"kind": "vllm", "name": "g", "model": "embedded:smollm2-135m"}],
    "strategies": ["synthesis", "paraphrase"],
    "ratios": [1.0, 2.0],
}


def study(trials: dict, generation: dict | None = GEN) -> StudyConfig:
    tree = {
        "study": "grid",
        "data": {"source": {"path": "x.jsonl"}, "regimes": [{"name": "r40", "size": 40}]},
        "trials": trials,
    }
    if generation is not None:
        tree["generation"] = generation
    return StudyConfig.model_validate(tree)


def fam(kind: str, **kw) -> dict:
    return {"kind": kind, "name": kind, **kw}


def inputs(real: dict[str, pd.DataFrame], held: pd.DataFrame):
    """Trial inputs of label space ["A"] with `held` as val and test."""
    from tasks.trials.inputs import EvalData, TrialInputs

    return TrialInputs(EvalData(["A"], ["a"], val=held, test=held), real=real)


def test_every_augmented_arm_has_a_control_of_exactly_its_size():
    cfg = study(
        {
            "families": [fam("frozen_head")],
            "arms": ["real_only", "real_plus_synthetic", "fixed_budget"],
            "fixed_budget": {"budget": 100, "real_fractions": [0.2, 1.0]},
            "seeds": [0, 1],
        }
    )
    cells = expand_grid(cfg)
    check_unique(cells)
    by_id = {c.trial_id: c for c in cells}
    arms = Counter(c.arm for c in cells)
    # Per seed: 1 real_only, 2 corpora x 2 ratios, 2 corpora x 2 fractions.
    assert arms["real_only"] == 2
    assert arms["real_plus_synthetic"] == 8
    assert arms["fixed_budget"] == 8
    # Sizes 80, 120 (ratio 1, 2) and 100 (budget): one shared control per size and seed.
    controls = [c for c in cells if c.arm == "duplicate_to_match"]
    assert sorted(c.n_train for c in controls) == [80, 80, 100, 100, 120, 120]
    controlled = set()
    for ctl in controls:
        for tid in ctl.controls.split(","):
            aug = by_id[tid]
            assert aug.n_train == ctl.n_train and aug.seed == ctl.seed
            controlled.add(tid)
    augmented = {c.trial_id for c in cells if c.arm in ("real_plus_synthetic", "fixed_budget")}
    assert controlled == augmented
    budget = [c for c in cells if c.arm == "fixed_budget"]
    assert {(c.budget, c.real_fraction) for c in budget} == {(100, 0.2), (100, 1.0)}


def test_trial_ids_are_stable_and_depend_on_the_cell():
    cfg = study({"families": [fam("tfidf_linear")], "seeds": [0, 1]})
    a = [c.trial_id for c in expand_grid(cfg)]
    b = [c.trial_id for c in expand_grid(cfg)]
    assert a == b and len(set(a)) == len(a) == 2 * (1 + 4 + 2)
    assert all(t.startswith("r40-") for t in a)
    assert sum("-real_only-tfidf_linear-s1-" in t for t in a) == 1


def test_real_corpus_sizes_and_filter_counts_set_control_sizes():
    cfg = study({"families": [fam("frozen_head")], "arms": ["filtered"], "ratios": [2.0]})
    corpora = [
        {"corpus_id": "r40__g__synthesis__plain", "regime": "r40", "generator": "g", "rows": 50},
    ]
    cells = expand_grid(cfg, corpora=corpora, filtered_rows={("r40__g__synthesis__plain", 2.0): 17})
    filt = [c for c in cells if c.arm == "filtered"]
    ctl = [c for c in cells if c.arm == "duplicate_to_match"]
    assert [c.n_train for c in filt] == [57] and [c.n_train for c in ctl] == [57]
    assert ctl[0].controls == filt[0].trial_id


def _with_draws(cfg: StudyConfig, draws: int) -> StudyConfig:
    tree = cfg.model_dump()
    tree["data"]["regime_draws"] = draws
    return StudyConfig.model_validate(tree)


def test_each_regime_draw_is_its_own_grid_and_draw_zero_keeps_its_ids():
    one = study(
        {
            "families": [fam("frozen_head"), fam("tfidf_linear")],
            "arms": ["real_only", "real_plus_synthetic", "duplicate_to_match"],
            "seeds": [0, 1],
        }
    )
    two = _with_draws(one, 2)
    cells1, cells2 = expand_grid(one), expand_grid(two)
    check_unique(cells2)
    assert len(cells2) == 2 * len(cells1)
    draw0 = [c for c in cells2 if c.draw == 0]
    draw1 = [c for c in cells2 if c.draw == 1]
    assert [c.trial_id for c in draw0] == [c.trial_id for c in cells1]
    assert all(c.trial_id.startswith("r40-d1-") and c.regime_key == "r40-d1" for c in draw1)
    assert {c.regime for c in cells2} == {"r40"}
    # Draw 1 trains on draw 1's corpora, with the same seeds and its own controls.
    augmented = [c for c in draw1 if c.arm == "real_plus_synthetic"]
    assert augmented and all(c.corpus_id.startswith("r40-d1__g__") for c in augmented)
    assert sorted({c.seed for c in draw1}) == [0, 1]
    by_id = {c.trial_id: c for c in cells2}
    for ctl in (c for c in cells2 if c.arm == "duplicate_to_match"):
        assert {by_id[t].draw for t in ctl.controls.split(",")} == {ctl.draw}
    # The same cell in another draw differs only in its draw.
    a = next(c for c in draw0 if c.arm == "real_only" and c.family == "tfidf_linear")
    b = next(c for c in draw1 if (c.arm, c.family, c.seed) == (a.arm, a.family, a.seed))
    assert "draw" not in a.identity() and b.identity() == {**a.identity(), "draw": 1}


def test_planned_corpora_cover_every_draw_with_the_stage_s_planned_rows():
    from tasks.trials.grid import planned_corpora, regime_keys_of

    cfg = _with_draws(study({"families": [fam("tfidf_linear")]}, {**GEN, "headroom": 0.1}), 3)
    corpora = planned_corpora(cfg)
    assert [c["corpus_id"] for c in corpora] == [
        f"{key}__g__{s}__plain" for key in ("r40", "r40-d1", "r40-d2") for s in GEN["strategies"]
    ]
    assert [c["draw"] for c in corpora] == [0, 0, 1, 1, 2, 2]
    assert {c["regime"] for c in corpora} == {"r40"}
    # rows: the largest volume (2 x 40); planned: what generate plans, ceil(80 x 1.1).
    assert {(c["rows"], c["planned"]) for c in corpora} == {(80, 88)}
    assert regime_keys_of(cfg) == {"r40": 40, "r40-d1": 40, "r40-d2": 40}


def test_a_cell_s_mix_reads_its_own_draw_s_real_rows():
    import pandas as pd

    from tasks.trials.recipe import build_cell_mix

    cfg = _with_draws(study({"families": [fam("tfidf_linear")], "arms": ["real_only"]}), 2)
    cells = expand_grid(cfg)

    def real(prefix: str) -> pd.DataFrame:
        ids = [f"{prefix}{i}" for i in range(40)]
        return pd.DataFrame({"id": ids, "text": ids, "labels": [["A"]] * 40, "source": "real"})

    frames = {"r40": real("a"), "r40-d1": real("b")}
    data = inputs(frames, frames["r40"][:2])
    for cell in cells:
        mix = build_cell_mix(cell, data.for_cell(cell))
        assert set(mix.id) == set(frames[cell.regime_key].id)


def test_ensemble_arm_needs_two_corpora_and_its_control_counts_every_member():
    cfg = study({"families": [fam("frozen_head")], "arms": ["ensemble"], "ratios": [1.0]})
    cells = expand_grid(cfg)
    ens = [c for c in cells if c.arm == "ensemble"]
    assert len(ens) == 1 and len(ens[0].members) == 2
    assert ens[0].n_train == 40 + 40 + 40
    # Its control is an ensemble of the members' own controls, not one model of all the rows.
    (ctl,) = [c for c in cells if c.arm == "duplicate_to_match"]
    assert ctl.n_train == 120 and ctl.controls == ens[0].trial_id
    assert ctl.members == ["duplicate_to_match-1-80", "duplicate_to_match-2-80"]


def test_ensemble_control_members_are_distinct_duplication_draws():
    from tasks.trials.recipe import build_cell_mix

    cfg = study({"families": [fam("frozen_head")], "arms": ["ensemble"], "ratios": [1.0]})
    (ctl,) = [c for c in expand_grid(cfg) if c.arm == "duplicate_to_match"]
    real = pd.DataFrame(
        {"id": [f"p{i}" for i in range(40)], "text": ["t"] * 40, "labels": [["A"]] * 40}
    )
    data = inputs({ctl.regime_key: real}, real[:2]).for_cell(ctl)
    a, b = (build_cell_mix(ctl, data, m, i) for i, m in enumerate(ctl.members))
    assert len(a) == len(b) == 80 and set(a.source) == {"real"}
    assert set(a.id) == set(real.id)  # every real row at least once in each member
    assert sorted(a.id) != sorted(b.id)  # but different duplicates


def test_cuda_only_numerics_are_skipped_with_the_reason_and_tfidf_losses_checked():
    cfg = study(
        {
            "families": [fam("finetune"), fam("tfidf_linear")],
            "arms": ["real_only"],
            "precisions": ["fp32", "fp16"],
            "attentions": ["sdpa"],
            "losses": ["bce", "focal"],
            "allow_cuda_only": True,
        },
        generation=None,
    )
    cells = expand_grid(cfg, cuda=False)
    status = Counter((c.family, c.precision, c.loss, c.status) for c in cells)
    assert status[("finetune", "fp16", "bce", "skipped")] == 1
    assert status[("finetune", "fp32", "focal", "pending")] == 1
    assert status[("tfidf_linear", "fp32", "focal", "skipped")] == 1
    fp16 = next(c for c in cells if c.precision == "fp16")
    assert fp16.reason == "precision=fp16 with attention=sdpa needs CUDA"
    assert all(c.attention == "none" for c in cells if c.family == "tfidf_linear")
    assert sum(c.status == "pending" for c in expand_grid(cfg, cuda=True)) == 5


def test_fp32_flash_attention_cells_are_skipped_even_with_cuda():
    cfg = study(
        {
            "families": [fam("finetune")],
            "arms": ["real_only"],
            "precisions": ["fp32", "bf16"],
            "attentions": ["sdpa", "flash_attention_2"],
            "allow_cuda_only": True,
        },
        generation=None,
    )
    cells = expand_grid(cfg, cuda=True)
    pending = {(c.precision, c.attention) for c in cells if c.status == "pending"}
    assert pending == {("fp32", "sdpa"), ("bf16", "sdpa"), ("bf16", "flash_attention_2")}
    fa2 = next(c for c in cells if (c.precision, c.attention) == ("fp32", "flash_attention_2"))
    assert fa2.reason == "attention=flash_attention_2 runs in fp16 or bf16, not precision=fp32"


def test_invalid_numerics_refused_naming_both_fields():
    with pytest.raises(ValidationError, match="fp16 need a GPU") as err:
        TrialsConfig.model_validate(
            {"families": [fam("finetune")], "precisions": ["fp16"], "attentions": ["sdpa"]}
        )
    assert "precisions=['fp16'] with attentions=['sdpa']" in str(err.value)
    with pytest.raises(ValidationError, match="flash_attention_2 need a GPU") as err:
        TrialsConfig.model_validate(
            {"families": [fam("finetune")], "attentions": ["flash_attention_2"]}
        )
    assert "precisions=['fp32'] with attentions=['flash_attention_2']" in str(err.value)
    with pytest.raises(ValidationError, match="fixed_budget is not set"):
        TrialsConfig.model_validate({"families": [fam("finetune")], "arms": ["fixed_budget"]})


def test_a_family_limited_to_some_regimes_runs_only_there():
    tree = {
        "study": "grid",
        "data": {
            "source": {"path": "x.jsonl"},
            "regimes": [{"name": "r40", "size": 40}, {"name": "r80", "size": 80}],
        },
        "generation": GEN,
        "trials": {"families": [fam("finetune", regimes=["r40"]), fam("tfidf_linear")]},
    }
    cells = expand_grid(StudyConfig.model_validate(tree))
    assert {c.regime for c in cells if c.family == "finetune"} == {"r40"}
    assert {c.regime for c in cells if c.family == "tfidf_linear"} == {"r40", "r80"}


def test_concurrent_trials_count_a_finetune_with_its_train_workers():
    from config.trials import FinetuneFamily, FrozenHeadFamily
    from orchestrator.trials_tune import DRIVER_CPU, concurrent_trials, trial_need
    from tasks.trials.inputs import TrialSettings

    env = TrialSettings(cpus=1.0, gpus=0.0)
    head = FrozenHeadFamily(name="h")
    ft = FinetuneFamily(name="f", model="embedded:minilm-l6")
    ft2 = FinetuneFamily(name="f2", model="embedded:minilm-l6", num_workers=2)
    assert trial_need(head, env) == {"CPU": 1.0}
    assert trial_need(ft2, env) == {"CPU": 2.0 + DRIVER_CPU}  # its workers and its driver
    # 2 CPUs: two one-worker fine-tunes at a time, one two-worker fine-tune (the largest decides).
    assert concurrent_trials([trial_need(head, env), trial_need(ft, env)], {"CPU": 2.0}) == 2
    assert concurrent_trials([trial_need(head, env), trial_need(ft2, env)], {"CPU": 2.0}) == 1
    # Two workers of 0.5 CPU: 1.01 CPU a trial, so one at a time on 2 CPUs (two would need 2.02).
    half = TrialSettings(cpus=0.5, gpus=0.0)
    assert concurrent_trials([trial_need(ft2, half)], {"CPU": 2.0}) == 1
    assert concurrent_trials([trial_need(ft, half)], {"CPU": 2.0}) == 4  # in the trial's process
    # GPUs: the scarcest resource decides; a cluster short of one trial still runs one.
    gpu = TrialSettings(cpus=4.0, gpus=0.5, custom={"accelerator_type_l4": 0.5})
    cluster = {"CPU": 96.0, "GPU": 8.0, "accelerator_type_l4": 8.0}
    assert concurrent_trials([trial_need(ft, gpu)], cluster) == 16
    assert concurrent_trials([trial_need(ft, gpu)], {"CPU": 2.0, "GPU": 8.0}) == 1
    assert concurrent_trials([trial_need(ft, gpu)], {"CPU": 2.0}) == 1
    # Frozen heads train on CPUs: they hold no GPU even where fine-tunes get one.
    assert trial_need(head, gpu) == {"CPU": 4.0, "accelerator_type_l4": 0.5}


@pytest.mark.parametrize(
    "knob",
    [
        {"resources": {"max_concurrent": 3}},
        {"resources": {"reuse_actors": False}},
        {"max_failures": 3},
        {"select_metric": "val_macro_f1"},
        {"enabled": False},
    ],
)
def test_scheduling_knobs_do_not_change_the_trials_fingerprint(knob):
    from orchestrator.stages import study_graph

    def view(**trials):
        return study_graph(study({"families": [fam("tfidf_linear")], **trials})).config_view(
            "trials"
        )

    assert view() == view(**knob)
    assert view() != view(resources={"cpus": 2})


def test_the_trials_stage_reads_no_fidelity_output():
    from orchestrator.stages.trials import TrialsStage

    assert TrialsStage.reads == ("prepare", "generate")
    assert "fidelity.encoder" in TrialsStage.fields  # the default frozen-head encoder


def test_every_config_family_kind_has_a_registered_family():
    import typing

    from config.trials import Family
    from tasks.trials.families import kinds

    models = typing.get_args(typing.get_args(Family)[0])
    assert sorted(m.model_fields["kind"].default for m in models) == list(kinds())


def test_collect_reads_the_done_marker_or_downloads_the_reported_checkpoint(tmp_path):
    import shutil

    from orchestrator.trials_tune import TrialOutcome, collect
    from tasks.artifacts import TrialRow
    from tasks.trials.recipe import CLASSIFIER, PREDICTIONS, write_row

    remote = tmp_path / "node2" / "t1"  # the trial's folder on a node the driver cannot see
    (remote / CLASSIFIER).mkdir(parents=True)
    (remote / CLASSIFIER / "classifier.json").write_text("{}")
    (remote / PREDICTIONS).write_bytes(b"npz")
    written = TrialRow(trial_id="t1", status="ok", val_micro_f1=0.5, train_steps=None)
    write_row(remote, written)

    class Checkpoint:  # what Tune hands back for a reported folder
        def to_directory(self, path: str) -> None:
            shutil.copytree(remote, path)

    done = tmp_path / "done"
    assert collect(done, "t1", None) is None
    assert collect(done, "t1", TrialOutcome("trial failed", None)) is None
    assert collect(done, "t1", TrialOutcome("", Checkpoint())) == written
    assert (done / "t1" / CLASSIFIER / "classifier.json").is_file()
    assert collect(done, "t1", None) == written  # now local: read where it is
    # A marker whose checkpoint was moved away already is not a finished trial.
    shutil.rmtree(done / "t1" / CLASSIFIER)
    assert collect(done, "t1", None) is None


def test_each_frozen_head_resolves_its_own_encoder_else_the_fidelity_one():
    from orchestrator.stages.trials import resolved_families
    from tasks.trials.families import build_family
    from tasks.trials.inputs import EncoderKey

    own = {"model": "embedded:minilm-l6", "max_length": 32}
    tree = study(
        {"families": [fam("frozen_head", name="own", encoder=own), fam("frozen_head", name="dflt")]}
    ).model_dump()
    tree["fidelity"] = {"encoder": {"model": "embedded:minilm-l6", "max_length": 128}}
    families = resolved_families(StudyConfig.model_validate(tree))
    keys = {n: EncoderKey.of(build_family(f).encoder) for n, f in families.items()}
    assert keys == {
        "own": ("embedded:minilm-l6", 32, "torch", "none"),
        # not the first family's: the fidelity stage's
        "dflt": ("embedded:minilm-l6", 128, "torch", "none"),
    }
    # Without a fidelity section: the default encoder.
    bare = resolved_families(study({"families": [fam("frozen_head")]}))
    assert EncoderKey.of(bare["frozen_head"].encoder) == EncoderKey("embedded:minilm-l6", 256)
    # int8 vectors are another encoder's: their own key, their own embedding pass.
    int8 = dict(own, backend="onnx", quantize="int8")
    tree["trials"]["families"][0]["encoder"] = int8
    families = resolved_families(StudyConfig.model_validate(tree))
    assert EncoderKey.of(build_family(families["own"]).encoder).quantize == "int8"


def test_a_trial_refuses_to_run_without_its_family_s_embeddings():
    from config.fidelity import EncoderConfig
    from config.trials import FrozenHeadFamily
    from tasks.trials.families import build_family

    cfg = study({"families": [fam("frozen_head")], "arms": ["real_only"]}, generation=None)
    (cell,) = expand_grid(cfg)
    real = pd.DataFrame({"id": ["a"], "text": ["t"], "labels": [["A"]]})
    family = build_family(FrozenHeadFamily(encoder=EncoderConfig(max_length=64)))
    with pytest.raises(
        ValueError, match=r"needs embeddings of embedded:minilm-l6 \(max_length=64\)"
    ):
        inputs({cell.regime_key: real}, real).for_cell(cell, family)
