"""Prompt building for the `generate` stage: target label sets, exemplars, chat messages.

One `PromptRow` per synthetic row to generate. Rows are planned once at the largest volume and
sliced by `volume_rank` for smaller ones, so the plan is laid out in rounds: rows
`[k * n_real, (k + 1) * n_real)` hold one shuffled pass over the regime's real label sets, and
every prefix at an integer ratio follows the regime's label-set distribution exactly.

Target label sets, exemplars and paraphrase sources depend on (seed, regime, strategy, rank) but
not on the variant, so the three leakage variants differ only in what the prompt says.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.filters import clean_text

STRATEGIES = ("synthesis", "paraphrase")
VARIANTS = ("plain", "label_name_masking", "instruction_label_removal")

SYSTEM = (
    "You are a patent attorney who writes patent abstracts. "
    "Reply with the abstract only, as plain text."
)
_TASK = (
    "Write an abstract-style patent description of 80 to 200 words for a new invention {subject}"
)
_CLOSE = (
    "Write one new abstract about a different invention. Plain text, 80 to 200 words, "
    "no title, no preamble."
)
_PARA_TASK = (
    "Rewrite the following patent abstract in your own words as an abstract-style patent "
    "description of 80 to 200 words. Keep the technical content; do not copy sentences."
)
_PARA_CLOSE = "Plain text, 80 to 200 words, no title, no preamble."
_CLASSES = "classified under these patent classes:\n{labels}"
_SAME_FIELD = "in the same technical field as the examples below."
_SUBJECTS = {
    ("synthesis", "plain"): _CLASSES,
    ("synthesis", "label_name_masking"): _CLASSES,
    ("synthesis", "instruction_label_removal"): _SAME_FIELD,
    ("paraphrase", "plain"): "Patent classes:\n{labels}",
    ("paraphrase", "label_name_masking"): "Patent classes:\n{labels}",
    ("paraphrase", "instruction_label_removal"): "",
}
_LABEL_LINE = {"plain": "- {code}: {name}", "label_name_masking": "- {code}"}
_EXEMPLARS = "Examples of real patent abstracts{which}:\n{exemplars}"
_WHICH = {
    "plain": " with these classes",
    "label_name_masking": " with these classes",
    "instruction_label_removal": "",
}
MASK = "[LABEL]"
_EXEMPLAR = "Example {k}: {text}"
_SOURCE = "Abstract:\n{text}"


@dataclass(frozen=True)
class PromptRow:
    """One planned synthetic row: its prompt and the provenance it carries."""

    row_id: str  # f"{regime}__{strategy}__{variant}__{i:06d}", i = volume_rank
    volume_rank: int  # the first round(ratio * n_real) rows by volume_rank form that volume
    regime: str
    strategy: str  # "synthesis" | "paraphrase"
    variant: str  # "plain" | "label_name_masking" | "instruction_label_removal"
    target_labels: tuple[str, ...]  # the labels the synthetic row will carry
    exemplar_ids: tuple[str, ...]  # real patents shown (synthesis) ...
    source_id: str | None  # ... or the patent rewritten (paraphrase)
    messages: tuple[dict[str, str], ...]  # chat messages, system then user
    template_hash: str  # sha256[:12] of the template text (not of the filled prompt)
    seed: int  # per-row seed derived from (base seed, row_id)


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def row_seed(base_seed: int, row_id: str) -> int:
    """A per-row sampling seed, stable across runs and processes (31 bits, fits any engine)."""
    return int.from_bytes(_digest(base_seed, row_id)[:8], "big") & 0x7FFFFFFF


def _rng(*parts: object) -> np.random.Generator:
    # sha256 rather than hash(): Python's str hash is salted per process.
    return np.random.default_rng(int.from_bytes(_digest(*parts)[:16], "big"))


def template_text(strategy: str, variant: str) -> str:
    """The unfilled template of one (strategy, variant); its hash is the row's `template_hash`."""
    _check_choice("strategy", strategy, STRATEGIES)
    _check_choice("variant", variant, VARIANTS)
    parts = [SYSTEM, _SUBJECTS[(strategy, variant)], _LABEL_LINE.get(variant, "")]
    if strategy == "synthesis":
        parts += [_TASK, _EXEMPLARS, _WHICH[variant], _EXEMPLAR, _CLOSE]
    else:
        parts += [_PARA_TASK, _SOURCE, _PARA_CLOSE]
    if variant == "label_name_masking":
        # The exemplar and source texts are masked too: the mask belongs to the template.
        parts.append(MASK)
    return "\n\x1e\n".join(parts)


def template_hash(strategy: str, variant: str) -> str:
    """sha256[:12] of `template_text(strategy, variant)`."""
    return hashlib.sha256(template_text(strategy, variant).encode()).hexdigest()[:12]


def _check_choice(field: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not one of {list(allowed)}")


def _name_phrases(name: str) -> list[str]:
    """The phrases masked for one label name: the whole name and each `;`-separated part.

    CPC titles list several topics ("Diagnosis; surgery; identification"); a generated text
    rarely repeats the whole title but often names one of its parts.
    """
    base = re.sub(r"\s*\(group [^)]*\)\s*$", "", name).strip()
    phrases = {name.strip(), base}
    phrases.update(p.strip() for p in base.split(";"))
    return [p for p in phrases if len(p) >= 3]


def mask_label_names(text: str, label_names: Mapping[str, str], mask: str = MASK) -> str:
    """Replace every label name (and each `;`-part of it) in `text` by `mask`.

    Case-insensitive and whole-word; longest phrases first so a long name is not cut by a
    shorter one inside it. Codes without a name (name == code) are left alone.
    """
    phrases = {
        p.lower()
        for code, name in label_names.items()
        if name and name != code
        for p in _name_phrases(name)
    }
    if not phrases or not text:
        return text
    ordered = sorted(phrases, key=lambda p: (-len(p), p))
    pattern = re.compile(
        r"(?<!\w)(?:" + "|".join(re.escape(p) for p in ordered) + r")(?!\w)", re.IGNORECASE
    )
    return pattern.sub(mask, text)


def postprocess(text: str, row: PromptRow, label_names: Mapping[str, str]) -> str:
    """Clean a raw generation; under `label_name_masking` also mask label names in it."""
    out = clean_text(text)
    if row.variant == "label_name_masking":
        out = mask_label_names(out, label_names)
    return out


def _truncate_words(text: str, max_words: int) -> str:
    toks = text.split()
    return text.strip() if len(toks) <= max_words else " ".join(toks[:max_words]) + " ..."


def _normalize_real(regime: str, real: pd.DataFrame) -> pd.DataFrame:
    missing = {"id", "text", "labels"} - set(real.columns)
    if missing:
        raise ValueError(f"regime {regime!r}: real rows lack columns {sorted(missing)}")
    if len(real) == 0:
        raise ValueError(f"regime {regime!r}: no real rows to build prompts from")
    out = real[["id", "text", "labels"]].copy()
    out["id"] = out["id"].astype(str)
    out["labels"] = [tuple(sorted({str(c) for c in labels})) for labels in out["labels"]]
    empty = out.loc[[len(x) == 0 for x in out["labels"]], "id"].tolist()
    if empty:
        raise ValueError(f"regime {regime!r}: real rows without labels: {empty[:5]}")
    return out.reset_index(drop=True)


def _round_plan(n_real: int, n_rows: int, rng: np.random.Generator) -> list[int]:
    """Indices of real rows, one shuffled pass per round; the last round is a random subset."""
    order: list[int] = []
    while len(order) < n_rows:
        order.extend(rng.permutation(n_real)[: n_rows - len(order)].tolist())
    return order


def _apply_floor(
    plan: list[int], labels: list[tuple[str, ...]], floor: int, rng: np.random.Generator
) -> list[int]:
    """Raise every label to at least `floor` targets by replacing rows from the tail.

    A tail row is replaced only when all its labels stay at or above the floor, so common label
    sets give way first and early volumes keep the regime's distribution. Best effort: when no
    row can give way, the remaining labels stay below the floor.
    """
    plan = list(plan)
    counts = Counter(c for i in plan for c in labels[i])
    holders: dict[str, list[int]] = {}
    for i, labs in enumerate(labels):
        for c in labs:
            holders.setdefault(c, []).append(i)
    locked = [False] * len(plan)
    # Rarest labels first, so a short plan spends its rows on the labels that need them most.
    for code in sorted(holders, key=lambda c: (counts[c], c)):
        while counts[code] < floor:
            pos = next(
                (
                    p
                    for p in range(len(plan) - 1, -1, -1)
                    if not locked[p] and all(counts[c] > floor for c in labels[plan[p]])
                ),
                None,
            )
            if pos is None:
                break
            for c in labels[plan[pos]]:
                counts[c] -= 1
            plan[pos] = int(rng.choice(holders[code]))
            locked[pos] = True
            for c in labels[plan[pos]]:
                counts[c] += 1
    return plan


class _ExemplarPicker:
    """Picks k real rows sharing labels with a target: most shared labels first, ties at random.

    The label overlap of every real row is one matrix product per distinct target set (targets
    are real label sets, so there are at most n_real of them), which keeps large plans fast.
    """

    def __init__(self, labels: list[tuple[str, ...]]):
        from sklearn.preprocessing import MultiLabelBinarizer

        self._mlb = MultiLabelBinarizer(classes=sorted({c for labs in labels for c in labs}))
        self._hot = self._mlb.fit_transform(labels).astype(np.int32)
        self._known = set(self._mlb.classes_)
        self._overlap: dict[tuple[str, ...], np.ndarray] = {}

    def pick(self, target: tuple[str, ...], k: int, rng: np.random.Generator) -> list[int]:
        if k == 0:
            return []
        overlap = self._overlap.get(target)
        if overlap is None:
            # Codes no real row has cannot overlap; the binarizer would warn about them.
            want = self._mlb.transform([[c for c in target if c in self._known]])[0]
            overlap = self._overlap[target] = self._hot @ want.astype(np.int32)
        # Overlaps are integers, so a tie-breaker in [0, 0.5) never reorders them.
        key = overlap + 0.5 * rng.random(len(overlap))
        k = min(k, len(key))
        top = np.argpartition(-key, k - 1)[:k]
        top = top[np.argsort(-key[top])]
        return [int(i) for i in top if overlap[i] > 0]


def _labels_block(target: Sequence[str], variant: str, label_names: Mapping[str, str]) -> str:
    line = _LABEL_LINE[variant]
    return "\n".join(line.format(code=c, name=label_names.get(c, c)) for c in target)


def _synthesis_user(
    target: Sequence[str], texts: Sequence[str], variant: str, label_names: Mapping[str, str]
) -> str:
    subject = _SUBJECTS[("synthesis", variant)]
    if "{labels}" in subject:
        subject = subject.format(labels=_labels_block(target, variant, label_names))
    parts = [_TASK.format(subject=subject)]
    if texts:
        body = "\n".join(_EXEMPLAR.format(k=k + 1, text=t) for k, t in enumerate(texts))
        parts.append(_EXEMPLARS.format(which=_WHICH[variant], exemplars=body))
    parts.append(_CLOSE)
    return "\n\n".join(parts)


def _paraphrase_user(
    target: Sequence[str], text: str, variant: str, label_names: Mapping[str, str]
) -> str:
    classes = _SUBJECTS[("paraphrase", variant)]
    if "{labels}" in classes:
        classes = classes.format(labels=_labels_block(target, variant, label_names))
    parts = [_PARA_TASK, classes, _SOURCE.format(text=text), _PARA_CLOSE]
    return "\n\n".join(p for p in parts if p)


def plan_prompts(
    regime: str,
    real: pd.DataFrame,
    label_names: Mapping[str, str],
    strategy: str,
    variant: str,
    n_rows: int,
    exemplars: int,
    rare_label_floor: int,
    seed: int,
    max_exemplar_words: int = 120,
) -> list[PromptRow]:
    """Plan `n_rows` prompts for one regime x strategy x variant, deterministic in the inputs.

    `real` holds the regime's training patents (`id`, `text`, `labels`). Synthesis targets follow
    the regime's label-set distribution (rounds of shuffled real sets) with every label raised to
    `rare_label_floor` targets when `n_rows` allows; exemplars are real rows sharing the most
    labels. Paraphrase cycles through the real rows in a seeded order and keeps their labels.
    """
    _check_choice("strategy", strategy, STRATEGIES)
    _check_choice("variant", variant, VARIANTS)
    if n_rows < 0:
        raise ValueError(f"n_rows={n_rows} must be >= 0")
    if exemplars < 0:
        raise ValueError(f"exemplars={exemplars} must be >= 0")
    if strategy == "synthesis" and variant == "instruction_label_removal" and exemplars == 0:
        raise ValueError(
            "variant=instruction_label_removal with strategy=synthesis needs exemplars >= 1: "
            "with no labels and no exemplars the prompt says nothing about the target"
        )
    df = _normalize_real(regime, real)
    ids, texts, labels = df["id"].tolist(), df["text"].astype(str).tolist(), df["labels"].tolist()
    if variant == "label_name_masking":
        texts = [mask_label_names(t, label_names) for t in texts]
    texts = [_truncate_words(t, max_exemplar_words) for t in texts]
    plan = _round_plan(len(df), n_rows, _rng(seed, regime, strategy, "plan"))
    if strategy == "synthesis" and rare_label_floor > 0:
        plan = _apply_floor(plan, labels, rare_label_floor, _rng(seed, regime, strategy, "floor"))

    picker = _ExemplarPicker(labels)
    t_hash = template_hash(strategy, variant)
    rows: list[PromptRow] = []
    for rank, src in enumerate(plan):
        row_id = f"{regime}__{strategy}__{variant}__{rank:06d}"
        target = labels[src]
        if strategy == "synthesis":
            picked = picker.pick(target, exemplars, _rng(seed, regime, strategy, "exemplars", rank))
            user = _synthesis_user(target, [texts[i] for i in picked], variant, label_names)
            exemplar_ids, source_id = tuple(ids[i] for i in picked), None
        else:
            user = _paraphrase_user(target, texts[src], variant, label_names)
            exemplar_ids, source_id = (), ids[src]
        rows.append(
            PromptRow(
                row_id=row_id,
                volume_rank=rank,
                regime=regime,
                strategy=strategy,
                variant=variant,
                target_labels=target,
                exemplar_ids=exemplar_ids,
                source_id=source_id,
                messages=(
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": user},
                ),
                template_hash=t_hash,
                seed=row_seed(seed, row_id),
            )
        )
    return rows
