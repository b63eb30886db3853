"""`synthpat plan` on the paper's config: tens of thousands of trials (seconds to expand)."""

from pathlib import Path

from config import load_config
from orchestrator.plan import plan_study

REPO = Path(__file__).resolve().parents[2]


def test_paper_config_plans_without_running_anything():
    cfg = load_config(REPO / "configs" / "paper.yaml")
    plan = plan_study(cfg)
    assert len(plan.generation) == 6
    assert plan.trial_count > 0 and plan.gpu_hours > 0
