"""`synthpat plan --pilot RUN_DIR [--detect GAIN]`: can the planned study answer its question?

For each regime and classifier family of the planned grid: the smallest controlled gain the
verdict's own test detects with 80% power (tasks/power.py) from the planned regime draws, seeds
and test documents, with the variance components measured by a pilot run's report
(`report/variance_components.json`, e.g. the quickstart's) or stated defaults; and, with
`--detect`, the fewest draws x seeds that detect that gain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import StudyConfig
from tasks.power import (
    DEFAULT_COMPONENTS,
    VarianceComponents,
    min_detectable_gain,
    runs_needed,
)

TARGET_POWER = 0.8
#: Families without their kind in the pilot borrow the pilot's pooled components.
POOLED = "overall"
MIN_PILOT_CELLS = 3


@dataclass
class PowerLine:
    regime: str
    family: str
    kind: str
    candidates: int  # augmented cells the verdict is chosen among (1 if pre-registered)
    draws: int
    seeds: int
    n_docs: int
    components: VarianceComponents
    mde: float
    needed: tuple[int, int] | None = None


def pilot_components(run_dir: Path) -> dict[str, Any]:
    """The pilot's pooled variance components (written by the report stage)."""
    path = run_dir / "report" / "variance_components.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no variance components; run the pilot's report stage first "
            f"(`synthpat report {run_dir}`)"
        )
    doc = json.loads(path.read_text())
    if not doc.get("overall"):
        raise ValueError(f"{path}: the pilot has no controlled comparison to measure")
    return doc


def _components(pilot: dict[str, Any] | None, kind: str) -> VarianceComponents:
    if pilot is None:
        return VarianceComponents(**DEFAULT_COMPONENTS, source="defaults")
    own = pilot["by_family_kind"].get(kind)
    # A kind measured on fewer than MIN_PILOT_CELLS cells (the quickstart's fine-tune runs on
    # its smallest regime only) borrows the pilot's pooled figures.
    use_own = own is not None and own.get("cells", 0) >= MIN_PILOT_CELLS
    entry = own if use_own else pilot[POOLED]
    label = kind if use_own else "all"
    parts, notes = {}, []
    for name in ("draw", "seed", "doc"):
        value = entry.get(name)
        if value is None:
            value = DEFAULT_COMPONENTS[name]
            notes.append(f"{name}: default")
        parts[name] = float(value)
    source = f"pilot {label}" + (f" ({', '.join(notes)})" if notes else "")
    return VarianceComponents(**parts, source=source)


def _test_documents(cfg: StudyConfig, pilot: dict[str, Any] | None) -> int:
    size = cfg.data.split.test_size
    if isinstance(size, int) or size >= 1:
        return int(size)
    if pilot and pilot.get("n_docs"):  # a fraction: the pilot's own test set is the best guess
        return int(pilot["n_docs"])
    raise ValueError(
        f"data.split.test_size={size} is a fraction: the plan needs a count (or a --pilot run)"
    )


def power_plan(
    cfg: StudyConfig, pilot_dir: Path | None = None, detect: float | None = None
) -> list[PowerLine]:
    """One line per regime x family of the planned grid (families with augmented cells)."""
    from tasks.trials.grid import AUGMENTED_ARMS, expand_grid

    if cfg.trials is None or not cfg.trials.enabled:
        return []
    pilot = pilot_components(pilot_dir) if pilot_dir is not None else None
    alpha = 1 - (cfg.report.confidence if cfg.report else 0.95)
    headline = cfg.report.headline if cfg.report else None
    cells = [
        c
        for c in expand_grid(cfg)
        if c.arm in AUGMENTED_ARMS and c.status != "skipped" and c.draw == 0
    ]
    seeds = len(cfg.trials.seeds)
    first = cfg.trials.seeds[0]
    per_regime = {c.regime for c in cells}
    kinds = {f.name: f.kind for f in cfg.trials.families}
    n_docs = _test_documents(cfg, pilot)
    # The report pools a family's run variance over its cells (report.pool_run_variance).
    pooling = cfg.report.pool_run_variance if cfg.report else True
    family_cells = {
        f: sum(1 for c in cells if c.family == f and c.seed == first) if pooling else 1
        for f in kinds
    }
    lines = []
    for regime in [r.name for r in sorted(cfg.data.regimes, key=lambda r: r.size)]:
        if regime not in per_regime:
            continue
        mine = [c for c in cells if c.regime == regime and c.seed == first]
        k = 1 if headline else len(mine)
        # Conservative: Bonferroni over the cells and across the regimes too (the BH step across
        # regimes is this strict when only one regime has the effect).
        k_test = k * len(per_regime)
        for fam in dict.fromkeys(c.family for c in mine):
            vc = _components(pilot, kinds[fam])
            draws = cfg.data.regime_draws
            pooled = max(1, family_cells[fam])
            mde = min_detectable_gain(vc, draws, seeds, n_docs, alpha, k_test, TARGET_POWER, pooled)
            needed = (
                runs_needed(
                    detect,
                    vc,
                    n_docs,
                    alpha,
                    k_test,
                    TARGET_POWER,
                    cells=pooled,
                    one_draw=draws == 1,
                )  # fmt: skip
                if detect is not None
                else None
            )
            lines.append(
                PowerLine(regime, fam, kinds[fam], k, draws, seeds, n_docs, vc, mde, needed)
            )
    return lines


def print_power(lines: list[PowerLine], detect: float | None, regimes: int) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    if not lines:
        con.print("power: no augmented cell in the grid, so no controlled gain to detect")
        return
    t = Table(title="power of the verdict's test (80%, two-sided)")
    cols = ["regime", "family", "cells", "draws x seeds", "test docs", "sd draw/seed/doc"]
    cols += ["from", "detectable gain"]
    if detect is not None:
        cols.append(f"to detect {detect:+.3f}")
    for col in cols:
        t.add_column(col)
    for ln in lines:
        vc = ln.components
        row = [
            ln.regime,
            ln.family,
            str(ln.candidates),
            f"{ln.draws} x {ln.seeds}",
            f"{ln.n_docs:,}",
            f"{vc.draw**0.5:.3f}/{vc.seed**0.5:.3f}/{vc.doc**0.5:.2f}",
            vc.source,
            f"{ln.mde:+.4f}" if ln.mde < 1 else "> 1 (cannot)",
        ]
        if detect is not None:
            row.append(f"{ln.needed[0]} x {ln.needed[1]}" if ln.needed else "> 20 x 10")
        t.add_row(*row)
    con.print(t)
    con.print(
        f"detectable gain: the smallest controlled gain the verdict calls significant with 80% "
        f"power. The verdict is chosen among `cells` augmented cells per regime (1 when "
        f"report.headline pre-registers it) and tested at alpha / (cells x {regimes} regimes). "
        "With one regime draw the verdict is about the drawn regime (conditional on it; the sd "
        "of draws does not enter), with two or more about the average over draws. sd doc is per "
        "test document (its share of the variance is sd^2 / test docs). Thousands of cells make "
        "the test strict: pre-register the headline (report.headline) to test one."
    )
