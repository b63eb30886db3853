"""The study grid: one `TrialCell` per trial, expanded from the config (and the real corpora).

Axes: regime x draw (`data.regime_draws`) x arm x ratio/real fraction x corpus (generator,
strategy, variant) x ordering x family x loss x precision x attention x seed. Every augmented
arm (`real_plus_synthetic`, `filtered`, `fixed_budget`, `ensemble`) gets its `duplicate_to_match`
volume control: the regime's real rows resampled to exactly the augmented arm's size. Augmented
arms of equal size share one control cell (same regime, family, loss, numerics, seed); its
`controls` lists them all.

`expand_grid(cfg)` works from the config alone (for `synthpat plan`), assuming every corpus
reached its largest volume; the trials stage passes the generated corpora's real row counts and
the filter's kept counts so that control sizes match the mixes exactly. Trial ids are a digest of
the cell, so the same config and corpora always give the same ids (the key of resume).

What a family allows (its losses, whether precision x attention apply, its step budget) comes
from its class in `tasks.trials.families`, so the grid names no family kind.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from config import StudyConfig
from config.data import regime_key
from config.trials import AUGMENTED_ARMS, TrialsConfig, needs_cuda
from tasks.numerics import HALF_ONLY_ATTENTION
from tasks.trials.families import family_class

__all__ = ["AUGMENTED_ARMS", "MixKey", "TrialCell", "check_unique", "expand_grid"]
#: Mix key (popped before a TrialCell is made) with an ensemble's member sizes.
CONTROL_MEMBERS = "_control_member_sizes"
#: `members` entries of an ensemble's control: `duplicate_to_match-<i>-<N>`, its i-th member of
#: N rows (the names are the member folders of its checkpoint, so they must differ).
CONTROL_MEMBER_PREFIX = "duplicate_to_match-"
#: Attention value recorded for families without attention layers.
NO_ATTENTION = "none"


class MixKey(NamedTuple):
    """One corpus at one synthetic:real ratio: what the agreement filter keeps rows of."""

    corpus_id: str
    ratio: float


@dataclass
class TrialCell:
    """One trial of the grid; fields an arm does not use stay None (or "")."""

    regime: str
    arm: str
    family: str
    family_kind: str
    loss: str
    precision: str
    attention: str
    seed: int
    n_real: int
    n_train: int  # rows of the mix (planned from the corpora's sizes)
    draw: int = 0  # which draw of the regime (data.regime_draws); see `regime_key`
    ratio: float | None = None
    real_fraction: float | None = None
    budget: int | None = None  # fixed_budget arm: its rows (not the training budget)
    steps: int | None = None  # trials.budget=steps: the optimizer steps it trains; None: epochs
    ordering: str = "shuffled"
    corpus_id: str = ""
    generator: str = ""
    strategy: str = ""
    variant: str = ""
    members: list[str] = field(default_factory=list)  # ensemble: corpus ids
    controls: str = ""  # duplicate_to_match: comma-joined trial ids of the arms it controls
    status: str = "pending"  # pending | skipped
    reason: str = ""
    trial_id: str = ""

    def identity(self) -> dict[str, Any]:
        """The fields that define the cell (what the trial id digests)."""
        d = asdict(self)
        for k in ("controls", "status", "reason", "trial_id", "n_real", "family_kind"):
            d.pop(k)
        if self.draw == 0:
            d.pop("draw")  # the only draw of a study without draws: ids as before draws
        if self.steps is None:
            d.pop("steps")  # an epoch budget: ids as before step budgets
        if self.arm != "duplicate_to_match":
            d.pop("n_train")  # an augmented arm is named by its recipe, not its realized size
        return d

    def assign_id(self) -> None:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
        fam = re.sub(r"[^A-Za-z0-9_.-]", "_", self.family)
        self.trial_id = f"{self.regime_key}-{self.arm}-{fam}-s{self.seed}-{digest}"

    @property
    def regime_key(self) -> str:
        """The regime draw this cell trains on: the key of its real rows (config.data)."""
        return regime_key(self.regime, self.draw)

    @property
    def corpus_ids(self) -> list[str]:
        """The corpora its mixes read: its own, or an ensemble's members (a control's: none)."""
        if self.arm == "ensemble":
            return list(self.members)
        return [self.corpus_id] if self.corpus_id else []


def regimes_of(cfg: StudyConfig) -> dict[str, int]:
    """Regime name -> real rows, for the regimes in the trials grid."""
    sizes = {r.name: r.size for r in cfg.data.regimes}
    names = (cfg.trials.regimes if cfg.trials else None) or list(sizes)
    return {n: sizes[n] for n in names}


def regime_keys_of(cfg: StudyConfig) -> dict[str, int]:
    """Regime key -> real rows, for every draw of the regimes in the trials grid."""
    regimes = regimes_of(cfg)
    return {regime_key(r, d): n for d in range(cfg.data.regime_draws) for r, n in regimes.items()}


def planned_corpora(cfg: StudyConfig) -> list[dict[str, Any]]:
    """The corpora the generate stage will write (every draw of every regime), each at its
    largest volume (`rows`); `planned` is what the stage generates for it (headroom included)."""
    gen = cfg.generation
    if gen is None or not gen.enabled:
        return []
    sizes = {r.name: r.size for r in cfg.data.regimes}
    out = []
    for key, (regime, draw) in cfg.generation_regime_keys().items():
        for g in gen.generators:
            for strategy in gen.strategies:
                for variant in gen.variants:
                    out.append(
                        {
                            "corpus_id": f"{key}__{g.name}__{strategy}__{variant}",
                            "regime": regime,
                            "draw": draw,
                            "regime_key": key,
                            "generator": g.name,
                            "strategy": strategy,
                            "variant": variant,
                            "rows": int(round(max(gen.ratios) * sizes[regime])),
                            "planned": gen.planned_rows(sizes[regime]),
                        }
                    )
    return out


def ratios_of(cfg: StudyConfig) -> list[float]:
    t = cfg.trials
    if t is not None and t.ratios is not None:
        return list(t.ratios)
    return list(cfg.generation.ratios) if cfg.generation is not None else [1.0]


def volume(ratio: float, n_real: int, corpus_rows: int) -> int:
    """Synthetic rows of a corpus at `ratio` (capped by what the corpus holds)."""
    return min(int(round(ratio * n_real)), int(corpus_rows))


def expand_grid(
    cfg: StudyConfig,
    corpora: list[dict[str, Any]] | None = None,
    filtered_rows: dict[MixKey, int] | None = None,
    cuda: bool | None = None,
) -> list[TrialCell]:
    """Every trial of the study, ids assigned, controls attached, unrunnable cells skipped.

    `corpora`: generate's corpora.json entries (default: planned from the config).
    `filtered_rows`: synthetic rows the agreement filter keeps per corpus and ratio (default:
    all of them). `cuda`: whether this machine has CUDA (default: whether trials ask for GPUs).
    """
    t = cfg.trials
    if t is None:
        return []
    corpora = planned_corpora(cfg) if corpora is None else corpora
    filtered_rows = filtered_rows or {}
    cuda = t.resources.gpus > 0 if cuda is None else cuda
    cells: list[TrialCell] = []
    families = {f.name: f for f in t.families}
    largest = _largest_mixes(cfg, t, corpora, filtered_rows)
    # Every draw of a regime is the same grid over that draw's real rows and corpora.
    for draw in range(cfg.data.regime_draws):
        for regime, n_real in regimes_of(cfg).items():
            mixes = _mixes(cfg, t, regime, n_real, corpora, filtered_rows, draw)
            for model in _model_axes(t, cuda):
                if model["regimes"] is not None and regime not in model["regimes"]:
                    continue
                steps = budget_steps(t, families[model["family"]], largest[regime])
                for seed in t.seeds:
                    cells.extend(
                        _cells_for(regime, n_real, mixes, {**model, "steps": steps}, seed, draw)
                    )
    return cells


def budget_steps(t: TrialsConfig, family: Any, largest_rows: int) -> int | None:
    """Optimizer steps of every trial of `family` under `trials.budget=steps`: the family's
    `steps`, else what its `epochs` take on `largest_rows` (the regime's largest mix), so the
    largest arm trains as under `epochs` and every other arm matches it. None under `epochs`,
    and for families without a step budget (TF-IDF, solved to convergence; SetFit, whose body
    budget is its own `max_steps` or pairs per row)."""
    if t.budget != "steps":
        return None
    per_epoch = family_class(family.kind)(family).steps_per_epoch(largest_rows)
    if per_epoch is None:
        return None
    if family.steps is not None:
        return int(family.steps)
    return family.epochs * per_epoch


def _largest_mixes(
    cfg: StudyConfig,
    t: TrialsConfig,
    corpora: list[dict[str, Any]],
    filtered_rows: dict[MixKey, int],
) -> dict[str, int]:
    """Regime -> rows of the largest mix one model trains on, over every draw. Controls have
    their arms' sizes; an ensemble (and its control) trains one model per member, each on the
    real rows plus that member's volume."""
    return {
        regime: max(
            (
                max(m.get(CONTROL_MEMBERS) or [m["n_train"]])
                for draw in range(cfg.data.regime_draws)
                for m in _mixes(cfg, t, regime, n_real, corpora, filtered_rows, draw)
            ),
            default=n_real,
        )
        for regime, n_real in regimes_of(cfg).items()
    }


def _mixes(
    cfg: StudyConfig,
    t: TrialsConfig,
    regime: str,
    n_real: int,
    corpora: list[dict[str, Any]],
    filtered_rows: dict[MixKey, int],
    draw: int = 0,
) -> list[dict[str, Any]]:
    """The training mixes of one regime draw (without model axes): dicts of TrialCell fields."""
    own = [c for c in corpora if c["regime"] == regime and int(c.get("draw", 0)) == draw]
    ratios = ratios_of(cfg)
    out: list[dict[str, Any]] = []
    if "real_only" in t.arms:
        out.append({"arm": "real_only", "n_train": n_real})
    for c in own:
        prov = {k: c.get(k, "") for k in ("corpus_id", "generator", "strategy", "variant")}
        for ordering in t.orderings:
            for r in ratios:
                syn = volume(r, n_real, c["rows"])
                if "real_plus_synthetic" in t.arms:
                    out.append(
                        {"arm": "real_plus_synthetic", "ratio": r, "ordering": ordering, **prov}
                        | {"n_train": n_real + syn}
                    )
                if "filtered" in t.arms:
                    kept = filtered_rows.get(MixKey(c["corpus_id"], r), syn)
                    out.append(
                        {"arm": "filtered", "ratio": r, "ordering": ordering, **prov}
                        | {"n_train": n_real + kept}
                    )
            if "fixed_budget" in t.arms and t.fixed_budget is not None:
                for f in t.fixed_budget.real_fractions:
                    out.append(
                        {
                            "arm": "fixed_budget",
                            "real_fraction": f,
                            "budget": t.fixed_budget.budget,
                            "ordering": ordering,
                            "n_train": t.fixed_budget.budget,
                            **prov,
                        }
                    )
    if "ensemble" in t.arms and len(own) >= 2:
        for r in ratios:
            sizes = [n_real + volume(r, n_real, c["rows"]) for c in own]
            out.append(
                {
                    "arm": "ensemble",
                    "ratio": r,
                    "members": [c["corpus_id"] for c in own],
                    "generator": "+".join(sorted({str(c.get("generator", "")) for c in own})),
                    "n_train": n_real + sum(s - n_real for s in sizes),
                    # Its control is an ensemble too: one duplicate_to_match member per member,
                    # each of that member's size (see _cells_for).
                    CONTROL_MEMBERS: sizes,
                }
            )
    return out


def _model_axes(t: TrialsConfig, cuda: bool) -> list[dict[str, Any]]:
    """(family, loss, precision, attention) combinations, each with a skip reason or ""."""
    out = []
    for fam in t.families:
        kind = family_class(fam.kind)
        numerics = (
            [(p, a) for p in t.precisions for a in t.attentions]
            if kind.numerics
            else [("fp32", NO_ATTENTION)]
        )
        # A family with its own loss (SetFit: a logistic head after a contrastive body) runs
        # once per seed whatever the study's loss axis, so that its baseline always exists.
        losses = list(kind.own_losses) if kind.own_losses is not None else t.losses
        for loss in losses:
            for precision, attention in numerics:
                reason = ""
                if kind.losses is not None and loss not in kind.losses:
                    reason = f"family {fam.kind} supports loss {list(kind.losses)}, not {loss}"
                elif not cuda and needs_cuda(precision, attention):
                    reason = needs_cuda(precision, attention) or ""
                elif (precision, attention) == ("fp32", "flash_attention_2"):
                    reason = HALF_ONLY_ATTENTION
                out.append(
                    {
                        "family": fam.name,
                        "family_kind": fam.kind,
                        "loss": loss,
                        "precision": precision,
                        "attention": attention,
                        "reason": reason,
                        "regimes": getattr(fam, "regimes", None),
                        "arms": getattr(fam, "arms", None),
                    }
                )
    return out


def _cells_for(
    regime: str,
    n_real: int,
    mixes: list[dict[str, Any]],
    model: dict[str, Any],
    seed: int,
    draw: int = 0,
) -> list[TrialCell]:
    reason = model["reason"]
    base = {k: v for k, v in model.items() if k not in ("reason", "regimes", "arms")}
    if model.get("arms") is not None:  # a family restricted to some arms: no cells of the others
        mixes = [m for m in mixes if m["arm"] in model["arms"]]
    status = "skipped" if reason else "pending"
    cells, controls = [], {}
    ensemble_controls = []
    for mix in mixes:
        mix = dict(mix)
        member_sizes = mix.pop(CONTROL_MEMBERS, None)
        cell = TrialCell(
            regime=regime,
            draw=draw,
            seed=seed,
            n_real=n_real,
            status=status,
            reason=reason,
            **base,
            **mix,
        )
        cell.assign_id()
        cells.append(cell)
        if cell.arm == "ensemble" and member_sizes:
            ensemble_controls.append((cell, member_sizes))
        elif cell.arm in AUGMENTED_ARMS:
            controls.setdefault(cell.n_train, []).append(cell.trial_id)

    def control(**fields: Any) -> TrialCell:
        """A duplicate_to_match cell of this regime draw, seed and model axes."""
        return TrialCell(
            regime=regime, draw=draw, arm="duplicate_to_match", seed=seed, n_real=n_real,
            **base, **fields,
        )  # fmt: skip

    for size, ids in sorted(controls.items()):
        ctl = control(n_train=size, status=status, reason=reason, controls=",".join(ids))
        if size < n_real and not reason:
            ctl.status, ctl.reason = "skipped", f"augmented size {size} below {n_real} real rows"
        ctl.assign_id()
        cells.append(ctl)
    for ens, sizes in ensemble_controls:
        # Model averaging is not synthetic data: an ensemble is compared with an ensemble of
        # its members' volume controls (each its own duplication draw), not with one model.
        ctl = control(
            n_train=n_real + sum(s - n_real for s in sizes),
            status=ens.status,
            reason=ens.reason,
            controls=ens.trial_id,
            members=[f"{CONTROL_MEMBER_PREFIX}{i + 1}-{s}" for i, s in enumerate(sizes)],
        )
        ctl.assign_id()
        cells.append(ctl)
    return cells


def control_member_size(member: str) -> int:
    """Rows of one member of an ensemble's control (`members` entry `duplicate_to_match-i-N`)."""
    return int(member.removeprefix(CONTROL_MEMBER_PREFIX).rsplit("-", 1)[1])


def check_unique(cells: list[TrialCell]) -> None:
    """Refuse a grid with two cells of the same id (two equal cells would race on one folder)."""
    seen: dict[str, TrialCell] = {}
    for c in cells:
        if c.trial_id in seen:
            raise ValueError(f"trials grid: two cells share trial_id {c.trial_id}: {c.identity()}")
        seen[c.trial_id] = c


def trial_key(
    cell: TrialCell, family: Any, upstream: dict[str, str], settings: dict[str, Any]
) -> str:
    """What a finished trial computed from: its cell, its family's config (the fields that
    count in fingerprints), the fingerprints of the stages it read and the trial `settings`
    that change its output. Two trials of equal keys are the same trial."""
    from config.base import fingerprint_view

    blob = json.dumps(
        {
            "cell": cell.identity(),
            "family": fingerprint_view(family),
            "upstream": upstream,
            "settings": settings,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]
