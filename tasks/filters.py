"""Post-generation cleaning and filters for synthetic rows.

`clean_text` strips what chat models wrap around an answer. `filter_corpus` runs the filters in a
fixed order (failed, empty, truncated, too_short, too_long, exact_duplicate, near_duplicate,
leakage); each removed row lands in a side table with the filter's name and a reason, and the
counts say how many each filter removed. Among duplicates the row with the lowest `volume_rank`
stays, so a smaller (nested) volume never loses a row to one that only a larger volume holds.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from config.generation import FilterConfig
from tasks.text import collapse_whitespace, near_duplicate_pairs, ngrams, normalize_text, words

FILTERS = (
    "failed",
    "empty",
    "truncated",
    "too_short",
    "too_long",
    "exact_duplicate",
    "near_duplicate",
    "leakage",
)
# <|im_end|>, <|eot_id|>, <end_of_turn>, </s>, [INST] ...: special tokens of common chat templates.
_SPECIAL = re.compile(
    r"<\|[^|>]{1,40}\|>(?:\s*(?:system|user|assistant)\b)?"
    r"|</?s>|<(?:start|end)_of_turn>(?:\s*(?:user|model)\b)?|\[/?INST\]",
    re.IGNORECASE,
)
_ROLE = re.compile(r"^\s*(?:assistant|user|system|model|response)\s*:\s*", re.IGNORECASE | re.M)
_LEAD_TAG = re.compile(r"^\s*(?:abstract|description|patent abstract)\s*:\s*", re.IGNORECASE)
_LEAD_TAG_LINE = re.compile(r"^\s*(?:abstract|description|patent abstract)\s*:?\s*$", re.I)
_PREAMBLE = re.compile(
    r"^\s*(?:sure|certainly|of course|absolutely|okay|ok|great|here(?:'s| is| are))\b",
    re.IGNORECASE,
)
# "A patent abstract for the invention is as follows:" on a line of its own. Only lines naming the
# answer itself: "A system comprising:" opens a real abstract and stays.
_INTRO_LINE = re.compile(
    r"^[^\n]*\b(?:abstracts?|description|follows|below|here)\b[^\n]*:\s*$", re.IGNORECASE
)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.M)
# A first line that is a markdown heading or "Title: ..." is a title; the prompt asked for none.
_TITLE_LINE = re.compile(r"^\s{0,3}(?:#{1,6}\s|title\s*:)", re.IGNORECASE)
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1|(?<![\w*])\*(?!\s)([^*\n]+?)(?<!\s)\*(?![\w*])", re.S)
_QUOTES = [('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("`", "`")]
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")
# A sentence end followed by the end of text or by a new sentence (so "e.g. a" is no break).
_SENTENCE_BREAK = re.compile(r"[.!?][\"'\u201d\u2019)\]]*(?=\s+[A-Z0-9\"'(\u201c]|\s*$)")
_PREAMBLE_MAX_WORDS = 25  # a longer first sentence is content, not "Sure, here is ..."


def _drop_preamble(text: str) -> str:
    """Drop a leading "Sure! Here is an abstract:" line or clause."""
    first, _, rest = text.partition("\n")
    if rest.strip() and _INTRO_LINE.match(first) and len(first.split()) <= _PREAMBLE_MAX_WORDS:
        return rest
    if not _PREAMBLE.match(text):
        return text
    if rest.strip() and len(first.split()) <= _PREAMBLE_MAX_WORDS:
        return rest
    head, colon, tail = text.partition(":")
    if colon and len(head.split()) <= _PREAMBLE_MAX_WORDS:
        return tail
    return text


def _strip_quotes(text: str) -> str:
    for left, right in _QUOTES:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right):
            inner = text[len(left) : -len(right)]
            if left not in inner and right not in inner:  # a real wrapper, not two quotations
                return inner.strip()
    return text


def clean_text(raw: str) -> str:
    """Strip chat artefacts: special tokens, role tags, "Sure, here is" preambles, markdown
    headings and emphasis, surrounding quotes; collapse whitespace."""
    if raw is None:
        return ""
    text = _SPECIAL.sub("\n", str(raw))
    text = _ROLE.sub("", text).strip()
    first, _, rest = text.partition("\n")
    if rest.strip() and _TITLE_LINE.match(first):
        text = rest
    text = _HEADING.sub("", text)
    text = _EMPHASIS.sub(lambda m: m.group(2) or m.group(3) or "", text)
    text = text.strip()
    for _ in range(3):  # "Sure!\n**Abstract:**\n..." peels in a few rounds
        before = text
        text = _drop_preamble(text).strip()
        lines = text.split("\n", 1)
        if len(lines) == 2 and _LEAD_TAG_LINE.match(lines[0]):
            text = lines[1].strip()
        text = _LEAD_TAG.sub("", text).strip()
        if text == before:
            break
    return _strip_quotes(collapse_whitespace(text))


@dataclass
class FilterResult:
    """Rows kept, rows removed (with `filter` and `reason`), and removed counts per filter."""

    kept: pd.DataFrame
    removed: pd.DataFrame
    counts: dict[str, int]
    trimmed: list[str] = field(default_factory=list)  # ids cut back to their last full sentence


def _failed(df: pd.DataFrame) -> dict[int, str]:
    err = df["error"] if "error" in df.columns else pd.Series([None] * len(df), index=df.index)
    out = {}
    for i, status, e in zip(df.index, df["status"], err, strict=True):
        if status != "ok":
            out[i] = f"status={status}" + (f": {e}" if isinstance(e, str) and e else "")
    return out


def trim_to_sentence(text: str) -> str:
    """`text` up to its last full sentence ("" when it has none)."""
    ends = [m.end() for m in _SENTENCE_BREAK.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""


def _truncated(
    df: pd.DataFrame, trim_min_words: int | None
) -> tuple[dict[int, str], dict[int, str]]:
    """Rows cut off by the token limit mid-sentence: (removed reasons, trimmed texts).

    With `trim_min_words`, a cut-off row is kept, cut back to its last full sentence, when that
    still leaves `trim_min_words` words; small models that rarely stop on their own otherwise
    lose most rows here.
    """
    # Without finish_reason a missing full stop cannot be told from a cut-off, so nothing goes.
    if "finish_reason" not in df.columns:
        return {}, {}
    out, trimmed = {}, {}
    for i, text, reason in zip(df.index, df["text"], df["finish_reason"], strict=True):
        if reason != "length" or _SENTENCE_END.search(text.rstrip()):
            continue
        tail = " ".join(text.split()[-4:])
        why = f"hit the token limit mid-sentence (ends {tail!r})"
        if trim_min_words is None:
            out[i] = why
            continue
        cut = trim_to_sentence(text)
        n = len(cut.split())
        if n >= trim_min_words:
            trimmed[i] = cut
        else:
            out[i] = f"{why}; {n} words up to the last full sentence < min {trim_min_words}"
    return out, trimmed


def _exact_duplicates(df: pd.DataFrame) -> dict[int, str]:
    first: dict[str, str] = {}
    out = {}
    for i, row_id, text in zip(df.index, df["id"], df["text"], strict=True):
        key = normalize_text(text)
        if key in first:
            out[i] = f"same normalized text as {first[key]}"
        else:
            first[key] = row_id
    return out


def _near_duplicates(df: pd.DataFrame, threshold: float) -> dict[int, str]:
    """Rows whose shingle Jaccard with an earlier kept row reaches `threshold`.

    A row matching only rows that are themselves removed stays: removing it too would let a
    chain of small edits remove rows far from every row that is kept.
    """
    ids, index = df["id"].tolist(), df.index.tolist()
    matches: dict[int, list[tuple[int, float]]] = {}
    for i, j, sim in near_duplicate_pairs(df["text"].tolist(), threshold):
        matches.setdefault(j, []).append((i, sim))
    removed: set[int] = set()
    out = {}
    for j in sorted(matches):
        earlier = [(i, sim) for i, sim in matches[j] if i not in removed]
        if not earlier:
            continue
        # The most similar kept row; among equals the first, i.e. the lowest volume_rank.
        i, best = max(earlier, key=lambda m: (m[1], -m[0]))
        removed.add(j)
        out[index[j]] = f"Jaccard {best:.2f} >= {threshold:g} with {ids[i]}"
    return out


def _leakage(df: pd.DataFrame, heldout: pd.DataFrame, n: int, threshold: float) -> dict[int, str]:
    """Rows with a share >= threshold of their word n-grams inside one held-out patent.

    An inverted index n-gram -> held-out docs makes this O(total n-grams) instead of comparing
    every row with every held-out text.
    """
    index: dict[tuple[str, ...], list[int]] = {}
    for d, text in enumerate(heldout["text"].astype(str)):
        for g in set(ngrams(words(text), n)):
            index.setdefault(g, []).append(d)
    if not index:
        return {}
    held_ids = heldout["id"].astype(str).tolist()
    out = {}
    for i, text in zip(df.index, df["text"], strict=True):
        grams = set(ngrams(words(text), n))
        if not grams:
            continue
        hits = Counter(d for g in grams for d in index.get(g, ()))
        if not hits:
            continue
        doc, count = min(hits.items(), key=lambda kv: (-kv[1], kv[0]))
        share = count / len(grams)
        if share >= threshold:
            out[i] = (
                f"{count}/{len(grams)} {n}-grams ({share:.0%} >= {threshold:.0%}) "
                f"found in held-out {held_ids[doc]}"
            )
    return out


def filter_corpus(rows: pd.DataFrame, cfg: FilterConfig, heldout: pd.DataFrame) -> FilterResult:
    """Run the filters in order on generated rows; deterministic in the inputs.

    `rows` needs `id, text, volume_rank, status` (`finish_reason` and `error` are used when
    present); `cfg` the `generation.filters` section; `heldout` the val+test patents
    (`id, text`). `kept` is ordered by `volume_rank`.
    """
    missing = {"id", "text", "volume_rank", "status"} - set(rows.columns)
    if missing:
        raise ValueError(f"generated rows lack columns {sorted(missing)}")
    if not {"id", "text"} <= set(heldout.columns):
        raise ValueError(f"heldout lacks columns {sorted({'id', 'text'} - set(heldout.columns))}")
    min_words, max_words = cfg.min_words, cfg.max_words
    trim_min = min_words if cfg.trim_truncated else None

    # Lowest volume_rank first: duplicates keep the row a smaller volume already holds.
    df = rows.sort_values(["volume_rank", "id"], kind="stable").reset_index(drop=True)
    df["text"] = df["text"].where(df["text"].notna(), "").astype(str)
    trimmed: dict[int, str] = {}

    def truncated(d: pd.DataFrame) -> dict[int, str]:
        hits, cut = _truncated(d, trim_min)
        trimmed.update(cut)
        for i, text in cut.items():
            df.at[i, "text"] = text
        return hits

    def n_words(d: pd.DataFrame) -> pd.Series:
        return d["text"].map(lambda t: len(t.split()))

    steps = {
        "failed": _failed,
        "empty": lambda d: {i: "empty text" for i, t in d["text"].items() if not t.strip()},
        "truncated": truncated,
        "too_short": lambda d: {
            i: f"{n} words < min {min_words}" for i, n in n_words(d).items() if n < min_words
        },
        "too_long": lambda d: {
            i: f"{n} words > max {max_words}" for i, n in n_words(d).items() if n > max_words
        },
        "exact_duplicate": _exact_duplicates,
        "near_duplicate": lambda d: _near_duplicates(d, cfg.near_duplicate_threshold),
        "leakage": lambda d: _leakage(d, heldout, cfg.leakage_ngram, cfg.leakage_threshold),
    }
    alive = np.ones(len(df), dtype=bool)
    removed_parts, counts = [], {}
    for name in FILTERS:
        current = df[alive]
        hits = steps[name](current) if len(current) else {}
        counts[name] = len(hits)
        if hits:
            idx = sorted(hits)
            part = df.loc[idx].copy()
            part["filter"] = name
            part["reason"] = [hits[i] for i in idx]
            removed_parts.append(part)
            alive[idx] = False
    columns = list(rows.columns)
    kept = df.loc[alive, columns].reset_index(drop=True)
    if removed_parts:
        removed = pd.concat(removed_parts, ignore_index=True)
    else:
        removed = df.iloc[0:0].assign(filter=pd.Series(dtype=str), reason=pd.Series(dtype=str))
    removed = removed[[*columns, "filter", "reason"]]
    trimmed_ids = [df.at[i, "id"] for i in sorted(trimmed) if alive[i]]
    return FilterResult(kept=kept, removed=removed, counts=counts, trimmed=trimmed_ids)
