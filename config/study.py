"""The root of the config tree: one study."""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from config.base import StrictModel
from config.data import DataConfig
from config.fidelity import FidelityConfig
from config.generation import GenerationConfig
from config.plan import PlanConfig
from config.report import ReportConfig
from config.resources import ResourcesConfig
from config.serve import ServeConfig
from config.tracking import TrackingConfig
from config.trials import TrialsConfig


class StudyConfig(StrictModel):
    study: str = Field(description="Study name; artifacts go to runs/<study>/.")
    data: DataConfig
    generation: GenerationConfig | None = Field(None, description="The generate stage.")
    fidelity: FidelityConfig | None = Field(None, description="The fidelity stage.")
    trials: TrialsConfig | None = Field(None, description="The trials stage.")
    report: ReportConfig | None = Field(None, description="The report stage.")
    serve: ServeConfig = ServeConfig()
    resources: ResourcesConfig = ResourcesConfig()
    plan: PlanConfig = PlanConfig()
    tracking: TrackingConfig = Field(
        TrackingConfig(),
        description="Experiment tracking of every stage and trial (MLflow by default).",
    )

    @model_validator(mode="after")
    def _cross(self) -> StudyConfig:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.study):
            raise ValueError(f"study={self.study!r}: use letters, digits, '_', '.', '-'")
        known = {r.name for r in self.data.regimes}
        for section in ("generation", "trials"):
            sec = getattr(self, section)
            if sec is not None and sec.regimes is not None:
                unknown = sorted(set(sec.regimes) - known)
                if unknown:
                    raise ValueError(
                        f"{section}.regimes names {unknown}, not in data.regimes {sorted(known)}"
                    )
        self._check_plan_names()
        return self

    def generation_regime_keys(self) -> dict[str, tuple[str, int]]:
        """Regime key -> (regime, draw) for every draw of the regimes to generate for:
        `generation.regimes`, or every regime of `data.regimes`."""
        from config.data import regime_key

        if self.generation is None:
            return {}
        names = self.generation.regimes or [r.name for r in self.data.regimes]
        return {regime_key(r, d): (r, d) for d in range(self.data.regime_draws) for r in names}

    def _check_plan_names(self) -> None:
        gens = {g.name for g in self.generation.generators} if self.generation else set()
        fams = {f.name for f in self.trials.families} if self.trials else set()
        for field, known in (
            ("generation_gpu_seconds_per_row", gens),
            ("trial_gpu_seconds", fams),
        ):
            unknown = sorted(set(getattr(self.plan, field)) - known)
            if unknown:
                raise ValueError(f"plan.{field} names {unknown}, not among {sorted(known)}")
