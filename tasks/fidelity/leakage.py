"""Leakage and memorization audits of synthetic text against real patents.

Keyword overlap: how often a row names its label (the label name, the label code, or the
label's top real keywords), compared with the real rows of that label. Memorization: each
synthetic row's nearest real neighbour in embedding space and the share of its word n-grams
copied from a reference set (the regime's training patents, or val/test).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from tasks.labels import multi_hot
from tasks.text import ngrams, words


def top_keywords(
    texts: Sequence[str], label_sets: Sequence[Sequence[str]], codes: Sequence[str], per_label: int
) -> dict[str, list[str]]:
    """Each label's most distinctive words in real text: mean TF-IDF in its rows minus elsewhere.

    Words are alphabetic, 3+ letters, not English stop words; ties break alphabetically.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(
        lowercase=True, stop_words="english", token_pattern=r"(?u)\b[a-zA-Z]{3,}\b", min_df=1
    )
    x = vec.fit_transform(texts)
    vocab = np.array(vec.get_feature_names_out())
    order = np.argsort(vocab)  # stable alphabetical tie-break below
    out: dict[str, list[str]] = {}
    y = multi_hot(label_sets, codes).astype(bool)
    for j, code in enumerate(codes):
        has = y[:, j]
        if not has.any():
            out[code] = []
            continue
        inside = np.asarray(x[has].mean(axis=0)).ravel()
        outside = np.asarray(x[~has].mean(axis=0)).ravel() if (~has).any() else 0.0
        score = (inside - outside)[order]
        best = order[np.argsort(-score, kind="stable")[:per_label]]
        out[code] = [str(vocab[i]) for i in best if inside[i] > 0]
    return out


def _phrase_in(phrase_tokens: list[str], padded_text: str) -> bool:
    return bool(phrase_tokens) and f" {' '.join(phrase_tokens)} " in padded_text


def _code_pattern(code: str) -> re.Pattern[str]:
    # A code counts only as a whole token: "G06F" in "G06F 3/01" but not in "G06F17".
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(code)}(?![A-Za-z0-9])", re.IGNORECASE)


def _mention_rates(
    texts: Sequence[str],
    label_sets: Sequence[Sequence[str]],
    codes: Sequence[str],
    names: Sequence[str],
    keywords: Mapping[str, Sequence[str]],
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per label: rows with it, rows naming it, rows giving its code, keyword hits."""
    padded = [f" {' '.join(words(t))} " for t in texts]
    token_sets = [set(p.split()) for p in padded]
    name_toks = [words(n) for n in names]
    patterns = [_code_pattern(c) for c in codes]
    n_lab = len(codes)
    rows = np.zeros(n_lab, np.int64)
    name_hits = np.zeros(n_lab, np.int64)
    code_hits = np.zeros(n_lab, np.int64)
    kw_hits = np.zeros(n_lab, np.int64)  # keyword occurrences (each keyword once per row)
    any_name = any_code = 0
    index = {c: i for i, c in enumerate(codes)}
    for text, pad, toks, labels in zip(texts, padded, token_sets, label_sets, strict=True):
        named = [j for j in range(n_lab) if _phrase_in(name_toks[j], pad)]
        coded = [j for j in range(n_lab) if patterns[j].search(text)]
        any_name += bool(named)
        any_code += bool(coded)
        for lab in labels:
            j = index.get(lab)
            if j is None:
                continue
            rows[j] += 1
            name_hits[j] += j in named
            code_hits[j] += j in coded
            kw_hits[j] += sum(1 for w in keywords.get(lab, ()) if w in toks)
    per = {"rows": rows, "name_rows": name_hits, "code_rows": code_hits, "keyword_hits": kw_hits}
    n = max(len(texts), 1)
    overall = {"any_name_rate": any_name / n, "any_code_rate": any_code / n}
    return per, overall


def keyword_audit(
    synth_texts: Sequence[str],
    synth_labels: Sequence[Sequence[str]],
    real_texts: Sequence[str],
    real_labels: Sequence[Sequence[str]],
    codes: Sequence[str],
    names: Sequence[str],
    keywords: Mapping[str, Sequence[str]],
) -> tuple[pd.DataFrame, dict]:
    """Per-label and overall label-string overlap of synthetic rows against the real baseline.

    Per label: `name_rate` = rows with the label whose text contains the label name (whole
    words, case-insensitive) / rows with the label; `code_rate` likewise for the code;
    `keyword_rate` = mean share of the label's top keywords present in those rows. Each has a
    `_real` twin over the real rows of the label. Overall: rows naming any label name or code.
    """
    s_per, s_all = _mention_rates(synth_texts, synth_labels, codes, names, keywords)
    r_per, r_all = _mention_rates(real_texts, real_labels, codes, names, keywords)
    n_kw = np.array([max(len(keywords.get(c, ())), 1) for c in codes], dtype=np.float64)

    def rate(num: np.ndarray, den: np.ndarray, scale: np.ndarray | float = 1.0) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / (den * scale), np.nan)

    table = pd.DataFrame(
        {
            "label": list(codes),
            "name": list(names),
            "n_synthetic": s_per["rows"],
            "n_real": r_per["rows"],
            "name_rows": s_per["name_rows"],
            "code_rows": s_per["code_rows"],
            "keyword_hits": s_per["keyword_hits"],
            "name_rate": rate(s_per["name_rows"], s_per["rows"]),
            "name_rate_real": rate(r_per["name_rows"], r_per["rows"]),
            "code_rate": rate(s_per["code_rows"], s_per["rows"]),
            "code_rate_real": rate(r_per["code_rows"], r_per["rows"]),
            "keyword_rate": rate(s_per["keyword_hits"], s_per["rows"], n_kw),
            "keyword_rate_real": rate(r_per["keyword_hits"], r_per["rows"], n_kw),
        }
    )

    def weighted(col: str, n_col: str) -> float:
        w = table[n_col].to_numpy(np.float64)
        v = table[col].to_numpy(np.float64)
        ok = w > 0
        return float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else float("nan")

    overall = {
        "name_mention_rate": s_all["any_name_rate"],
        "name_mention_rate_real": r_all["any_name_rate"],
        "code_mention_rate": s_all["any_code_rate"],
        "code_mention_rate_real": r_all["any_code_rate"],
        "keyword_rate": weighted("keyword_rate", "n_synthetic"),
        "keyword_rate_real": weighted("keyword_rate_real", "n_real"),
    }
    return table, overall


def nearest_similarity(
    query: np.ndarray, reference: np.ndarray, block_size: int = 2048
) -> np.ndarray:
    """Each query row's highest cosine similarity to any reference row, blockwise."""
    q = _unit(query)
    r = _unit(reference)
    out = np.empty(len(q), dtype=np.float64)
    for i in range(0, len(q), block_size):
        out[i : i + block_size] = (q[i : i + block_size] @ r.T).max(axis=1)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def similarity_summary(sims: np.ndarray, threshold: float) -> dict:
    """Mean, median, 95th percentile and max of nearest similarities; share >= threshold."""
    return {
        "mean": float(sims.mean()),
        "median": float(np.median(sims)),
        "p95": float(np.percentile(sims, 95)),
        "max": float(sims.max()),
        "share_above": float((sims >= threshold).mean()),
    }


def ngram_copy_rate(texts: Sequence[str], reference: Sequence[str], n: int) -> dict:
    """How much of the texts' word n-grams appear verbatim in the reference texts.

    `ngram_rate`: copied n-grams over all n-grams of the texts; `row_rate`: rows with at least
    one copied n-gram; `row_max`: the highest per-row copied share.
    """
    ref: set[tuple[str, ...]] = set()
    for t in reference:
        ref.update(ngrams(words(t), n))
    total = copied = rows_hit = 0
    row_max = 0.0
    for t in texts:
        grams = list(ngrams(words(t), n))
        hits = sum(1 for g in grams if g in ref)
        total += len(grams)
        copied += hits
        rows_hit += hits > 0
        if grams:
            row_max = max(row_max, hits / len(grams))
    return {
        "ngram_rate": copied / total if total else 0.0,
        "row_rate": rows_hit / len(texts) if texts else 0.0,
        "row_max": row_max,
    }
