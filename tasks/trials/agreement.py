"""The `filtered` arm's agreement filter: synthetic rows whose labels a real-only classifier
agrees with.

Agreement: the Jaccard overlap of a row's labels with a TF-IDF classifier's predicted set
(val-tuned global threshold) reaches `trials.filter_min_overlap`. One classifier per regime key
(each draw of a regime judges its own corpora), trained once on that draw's real rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tasks.trials.grid import MixKey, volume
from tasks.trials.inputs import TrialInputs


def agreement_filter(
    inputs: TrialInputs,
    corpora: Sequence[Mapping[str, Any]],
    ratios: Sequence[float],
    min_overlap: float,
) -> dict[MixKey, frozenset[str]]:
    """Per corpus (corpora.json entries with `corpus_id` and `regime_key`) and ratio: the ids
    of the synthetic rows of that volume that the filter keeps."""
    from config.trials import TfidfLinearFamily
    from tasks.evaluation import choose_thresholds, jaccard_matrix
    from tasks.heads import train_tfidf_linear
    from tasks.mixes import slice_volume

    shared = inputs.shared
    judges = {}
    for key, real in inputs.real.items():
        clf = train_tfidf_linear(
            real.text.tolist(),
            shared.y(real),
            TfidfLinearFamily(),
            "bce",
            0,
            labels=shared.labels,
            names=shared.names,
        )
        p_val = clf.predict_proba(shared.val.text.tolist())
        judges[key] = (clf, choose_thresholds(shared.y(shared.val), p_val, "global"))
    keep: dict[MixKey, frozenset[str]] = {}
    for c in corpora:
        clf, th = judges[c["regime_key"]]
        syn = inputs.corpora[c["corpus_id"]]
        n_real = len(inputs.real[c["regime_key"]])
        for r in ratios:
            vol = slice_volume(syn, r, n_real)
            if len(vol) != volume(r, n_real, len(syn)):
                raise RuntimeError(f"{c['corpus_id']}: volume at ratio {r} is not the grid's")
            pred = clf.predict_proba(vol.text.tolist()) >= th[None, :]
            overlap = np.diag(jaccard_matrix(shared.y(vol), pred.astype(np.float32)))
            kept = vol.id[overlap >= min_overlap]
            keep[MixKey(c["corpus_id"], float(r))] = frozenset(kept.astype(str))
    return keep
