"""`synthpat plan`: what a study will run and what it will cost, before anything runs.

Counts come from the same code that the stages run: the generation volumes from the regimes and
ratios, the trial count from the trials stage's own grid expansion, so a plan never disagrees
with the run. GPU-hours come from the per-item costs in the config's `plan` section.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from config import StudyConfig


@dataclass
class GenerationLine:
    generator: str
    corpora: int
    rows: int
    output_tokens: int
    gpu_hours: float


@dataclass
class TrialLine:
    family: str
    trials: int
    gpu_hours: float


@dataclass
class Plan:
    generation: list[GenerationLine] = field(default_factory=list)
    trials: list[TrialLine] = field(default_factory=list)
    trial_status: dict[str, int] = field(default_factory=dict)
    #: Trials when the filters shrink corpora by different amounts: each augmented cell then
    #: gets its own volume control (None: counted on the generated corpora, exact).
    trials_upper: int | None = None
    fidelity_rows: int = 0
    fidelity_gpu_hours: float = 0.0
    gpu_hour_usd: float | None = None

    @property
    def generation_rows(self) -> int:
        return sum(g.rows for g in self.generation)

    @property
    def trial_count(self) -> int:
        return sum(t.trials for t in self.trials)

    @property
    def gpu_hours(self) -> float:
        gen = sum(g.gpu_hours for g in self.generation)
        return gen + self.fidelity_gpu_hours + sum(t.gpu_hours for t in self.trials)

    @property
    def cost_usd(self) -> float | None:
        return None if self.gpu_hour_usd is None else self.gpu_hours * self.gpu_hour_usd


def plan_study(cfg: StudyConfig, generated: list[dict] | None = None) -> Plan:
    """The plan of a whole study from its config alone, or with the corpora that an up-to-date
    generate stage wrote (`generated`: corpora.json), which make the trial count exact."""
    from config.trials import AUGMENTED_ARMS
    from tasks.trials.grid import expand_grid, planned_corpora

    plan = Plan(gpu_hour_usd=cfg.plan.gpu_hour_usd)
    costs = cfg.plan
    # Each corpus (of every regime draw) is generated once at its largest ratio plus the
    # headroom, as the generate stage plans it; smaller ratios are nested slices.
    corpora = planned_corpora(cfg)
    if corpora and cfg.generation is not None:
        for g in cfg.generation.generators:
            mine = [c for c in corpora if c["generator"] == g.name]
            rows = sum(c["planned"] for c in mine)
            sec = costs.generation_gpu_seconds_per_row.get(
                g.name, costs.default_generation_gpu_seconds_per_row
            )
            plan.generation.append(
                GenerationLine(
                    generator=g.name,
                    corpora=len(mine),
                    rows=rows,
                    output_tokens=rows * g.max_tokens,
                    gpu_hours=rows * sec / 3600,
                )
            )
    if cfg.fidelity is not None and cfg.fidelity.enabled and plan.generation:
        plan.fidelity_rows = plan.generation_rows
        plan.fidelity_gpu_hours = (
            plan.fidelity_rows / 1000 * costs.fidelity_gpu_seconds_per_1k_rows / 3600
        )
    if cfg.trials is not None and cfg.trials.enabled:
        cells = expand_grid(cfg, generated if generated is not None else corpora)
        plan.trial_status = dict(Counter(c.status for c in cells))
        if generated is None:
            # Until the corpora exist their kept sizes are unknown: a control serves every
            # augmented cell of its size, and filters that shrink corpora differently part them.
            runs = [c for c in cells if c.status != "skipped"]
            controls = sum(c.arm == "duplicate_to_match" for c in runs)
            augmented = sum(c.arm in AUGMENTED_ARMS for c in runs)
            plan.trials_upper = len(runs) - controls + augmented
        runnable = Counter(c.family for c in cells if c.status != "skipped")
        for fam in cfg.trials.families:
            n = runnable.get(fam.name, 0)
            sec = costs.trial_gpu_seconds.get(fam.name, costs.default_trial_gpu_seconds)
            plan.trials.append(TrialLine(family=fam.name, trials=n, gpu_hours=n * sec / 3600))
    return plan


def print_plan(cfg: StudyConfig, plan: Plan) -> None:
    """The plan as rich tables."""
    from rich.console import Console
    from rich.table import Table

    con = Console()
    if plan.generation:
        t = Table(title=f"{cfg.study}: generation")
        for col in ("generator", "corpora", "rows", "output tokens (max)", "GPU-hours"):
            t.add_column(col, justify="right" if col != "generator" else "left")
        for g in plan.generation:
            t.add_row(
                g.generator,
                str(g.corpora),
                f"{g.rows:,}",
                f"{g.output_tokens:,}",
                f"{g.gpu_hours:.1f}",
            )
        con.print(t)
    if plan.fidelity_rows:
        con.print(
            f"fidelity: {plan.fidelity_rows:,} synthetic rows to embed, "
            f"{plan.fidelity_gpu_hours:.2f} GPU-hours"
        )
    if plan.trials:
        t = Table(title=f"{cfg.study}: trials")
        for col in ("family", "trials", "GPU-hours"):
            t.add_column(col, justify="right" if col != "family" else "left")
        for line in plan.trials:
            t.add_row(line.family, f"{line.trials:,}", f"{line.gpu_hours:.1f}")
        con.print(t)
        skipped = plan.trial_status.get("skipped", 0)
        if skipped:
            con.print(f"trials skipped by validation (recorded with their reason): {skipped:,}")
    if plan.trials_upper is not None and plan.trials_upper > plan.trial_count:
        con.print(
            f"trials: {plan.trial_count:,} if the filters keep every corpus at its planned size, "
            f"up to {plan.trials_upper:,} if they shrink corpora by different amounts (each "
            "augmented cell then has its own volume control); exact once generate has run"
        )
    total = f"total: {plan.generation_rows:,} generation rows, {plan.trial_count:,} trials, "
    total += f"{plan.gpu_hours:,.1f} GPU-hours"
    if plan.cost_usd is not None:
        total += f", about ${plan.cost_usd:,.0f} at ${plan.gpu_hour_usd}/GPU-hour"
    con.print(total)
