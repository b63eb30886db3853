"""`synthpat plan` counts the generation rows that the generate stage then plans, row for row."""

from pathlib import Path

from config import load_config
from orchestrator.plan import plan_study
from orchestrator.stages import run_dir_for, run_stage, study_graph
from orchestrator.stages.generate import plan_all
from tasks.artifacts import load_labels, load_split

REPO = Path(__file__).resolve().parents[2]


def test_plan_counts_the_rows_the_generate_stage_plans(tmp_path):
    cfg = load_config(REPO / "configs" / "quickstart.yaml", [f"resources.runs_dir={tmp_path}"])
    run_stage(study_graph(cfg), "prepare")
    prep = run_dir_for(cfg) / "prepare"
    labels = load_labels(prep)
    real = {k: load_split(prep, k) for k in cfg.generation_regime_keys()}
    plans = plan_all(cfg.generation, real, dict(zip(labels.codes, labels.names, strict=True)))
    planned = sum(len(rows) for rows in plans.values())
    plan = plan_study(cfg)
    assert plan.generation_rows == planned == 160
    assert sum(g.corpora for g in plan.generation) == len(plans)
