"""`synthpat plan`: counts and GPU-hours against a hand count on a small config."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from config import load_config
from orchestrator.cli import app
from orchestrator.plan import plan_study

REPO = Path(__file__).resolve().parents[2]

SMALL = {
    "study": "plan",
    "data": {
        "source": {"path": "data.jsonl"},
        "regimes": [{"name": "r40", "size": 40}, {"name": "r100", "size": 100}],
    },
    "generation": {
        "generators": [
            {"kind": "vllm", "name": "a", "model": "embedded:smollm2-135m", "max_tokens": 100},
            {"kind": "vllm", "name": "b", "model": "embedded:smollm2-135m", "max_tokens": 200},
        ],
        "strategies": ["synthesis", "paraphrase"],
        "variants": ["plain", "label_name_masking"],
        "ratios": [1, 2.5],
    },
    "fidelity": {},
    "plan": {
        "generation_gpu_seconds_per_row": {"a": 0.5},
        "default_generation_gpu_seconds_per_row": 2.0,
        "fidelity_gpu_seconds_per_1k_rows": 36,
        "gpu_hour_usd": 2.0,
    },
}


def _cfg(tmp_path: Path, tree: dict):
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(tree))
    return load_config(p), p


def test_generation_rows_and_gpu_hours_match_a_hand_count(tmp_path):
    cfg, _ = _cfg(tmp_path, SMALL)
    plan = plan_study(cfg)
    # Largest ratio only (smaller ones are nested slices): 2.5*40 + 2.5*100 = 350 rows per
    # (strategy, variant); 4 of those per generator.
    by_gen = {g.generator: g for g in plan.generation}
    assert by_gen["a"].rows == by_gen["b"].rows == 1400
    assert by_gen["a"].corpora == 8
    assert by_gen["a"].output_tokens == 140_000 and by_gen["b"].output_tokens == 280_000
    assert by_gen["a"].gpu_hours == pytest.approx(1400 * 0.5 / 3600)
    assert by_gen["b"].gpu_hours == pytest.approx(1400 * 2.0 / 3600)  # the default cost
    assert plan.fidelity_rows == 2800
    assert plan.fidelity_gpu_hours == pytest.approx(2.8 * 36 / 3600)
    total = (700 + 2800 + 2.8 * 36) / 3600
    assert plan.gpu_hours == pytest.approx(total)
    assert plan.cost_usd == pytest.approx(2 * total)


def test_generation_restricted_to_named_regimes(tmp_path):
    tree = yaml.safe_load(yaml.safe_dump(SMALL))
    tree["generation"]["regimes"] = ["r40"]
    cfg, _ = _cfg(tmp_path, tree)
    assert {g.rows for g in plan_study(cfg).generation} == {100 * 4}


def test_cost_names_must_be_known_generators(tmp_path):
    from config import ConfigError

    tree = yaml.safe_load(yaml.safe_dump(SMALL))
    tree["plan"]["generation_gpu_seconds_per_row"] = {"phi": 1.0}
    with pytest.raises(ConfigError, match=r"plan.*generation_gpu_seconds_per_row.*phi"):
        _cfg(tmp_path, tree)


def test_plan_command_prints_totals(tmp_path):
    _, path = _cfg(tmp_path, SMALL)
    res = CliRunner().invoke(app, ["plan", str(path)])
    assert res.exit_code == 0, res.output
    assert "2,800 generation rows" in res.output
    assert "about $" in res.output


def test_trial_count_matches_a_hand_count(tmp_path):
    tree = yaml.safe_load(yaml.safe_dump(SMALL))
    tree["generation"]["generators"] = tree["generation"]["generators"][:1]
    tree["generation"]["strategies"] = ["synthesis"]
    tree["generation"]["variants"] = ["plain"]
    tree["trials"] = {
        "families": [{"kind": "frozen_head"}, {"kind": "tfidf_linear"}],
        "arms": ["real_only", "real_plus_synthetic"],
        "losses": ["bce"],
        "seeds": [0, 1],
    }
    tree["plan"] = {"trial_gpu_seconds": {"frozen_head": 36}, "default_trial_gpu_seconds": 0}
    cfg, _ = _cfg(tmp_path, tree)
    plan = plan_study(cfg)
    # Per regime: real_only + 2 ratios x (augmented + its duplicate_to_match control) = 5 mixes;
    # x 2 seeds = 10 trials per family per regime; 2 regimes.
    assert {t.family: t.trials for t in plan.trials} == {"frozen_head": 20, "tfidf_linear": 20}
    assert plan.trial_count == 40
    assert plan.gpu_hours == pytest.approx(20 * 36 / 3600)


def test_generation_rows_are_what_the_stage_plans_headroom_included(tmp_path):
    # The quickstart's regimes, ratio and headroom: generate plans ceil(1 x 48 x 1.1) = 53 and
    # ceil(96 x 1.1) = 106 rows per strategy, 318 in all; the largest volume alone is 288.
    tree = yaml.safe_load(yaml.safe_dump(SMALL))
    tree["data"]["regimes"] = [{"name": "r48", "size": 48}, {"name": "r96", "size": 96}]
    tree["generation"]["generators"] = tree["generation"]["generators"][:1]
    tree["generation"].update(variants=["plain"], ratios=[0.5, 1], headroom=0.1)
    cfg, _ = _cfg(tmp_path, tree)
    assert plan_study(cfg).generation_rows == 318
    full = load_config(REPO / "configs" / "quickstart-full.yaml")
    assert full.generation.headroom == 0.1 and plan_study(full).generation_rows == 318
    # The quickstart's regimes of 24 and 48: (27 + 53) x 2 strategies.
    assert plan_study(load_config(REPO / "configs" / "quickstart.yaml")).generation_rows == 160


def test_regime_draws_multiply_generation_and_trials(tmp_path):
    tree = yaml.safe_load(yaml.safe_dump(SMALL))
    tree["generation"]["generators"] = tree["generation"]["generators"][:1]
    tree["trials"] = {
        "families": [{"kind": "tfidf_linear"}],
        "arms": ["real_only", "real_plus_synthetic"],
        "losses": ["bce"],
        "seeds": [0, 1],
    }
    cfg, _ = _cfg(tmp_path, tree)
    one = plan_study(cfg)
    tree["data"]["regime_draws"] = 3
    cfg3, _ = _cfg(tmp_path, tree)
    three = plan_study(cfg3)
    assert one.generation_rows == 1400 and three.generation_rows == 3 * 1400
    assert three.generation[0].corpora == 3 * 8
    assert three.fidelity_rows == 3 * one.fidelity_rows
    # Per regime and draw: real_only + 4 corpora x 2 ratios + one control per ratio (the
    # corpora of one ratio have one size) = 11 mixes, x 2 seeds; 2 regimes; 3 draws.
    assert one.trial_count == 11 * 2 * 2
    assert three.trial_count == 3 * one.trial_count


def test_quickstart_trials_are_bounded_until_generated_and_exact_after():
    """Filters that keep 47 and 46 of 48 planned rows part the r48 volume controls at ratio 1:
    the plan brackets that before generation and counts it on the written corpora after."""
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "quickstart-full.yaml")
    plan = plan_study(cfg)
    assert (plan.trial_count, plan.trials_upper) == (42, 52)
    kept = {"r48": {"synthesis": 47, "paraphrase": 46}, "r96": {"synthesis": 99, "paraphrase": 100}}
    generated = [
        {
            "corpus_id": f"{r}__smollm2-135m__{s}__plain",  # the full quickstart's regimes
            "regime": r,
            "draw": 0,
            "regime_key": r,
            "generator": "smollm2-135m",
            "strategy": s,
            "variant": "plain",
            "rows": n,
        }
        for r, by in kept.items()
        for s, n in by.items()
    ]
    exact = plan_study(cfg, generated)
    assert exact.trials_upper is None and exact.trial_count == 48  # what the trials stage ran
