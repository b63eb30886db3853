"""The two cheap families: a head on frozen sentence embeddings, and TF-IDF + linear models."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.checkpoint import TfidfLinearClassifier

if TYPE_CHECKING:
    from config.trials import FrozenHeadFamily, TfidfLinearFamily

#: AdamW weight decay of a frozen head (not a study axis).
HEAD_WEIGHT_DECAY = 1e-4
#: TF-IDF keeps n-grams seen in at least this many training documents.
TFIDF_MIN_DF = 1


def train_frozen_head(
    x: np.ndarray,
    y: np.ndarray,
    cfg: FrozenHeadFamily,
    loss: str,
    seed: int,
    *,
    blocks: np.ndarray | None = None,
    threads: int | None = None,
    steps: int | None = None,
    on_step: Callable[[int, np.ndarray], None] | None = None,
) -> dict[str, np.ndarray]:
    """Train a linear or MLP head on embeddings `x` (n, d) for labels `y` (n, L).

    Every epoch draws a fresh order: the mix's `blocks` in order, rows reshuffled within each
    (`tasks.mixes.epoch_order`; None: one block). `steps`: exactly that many optimizer steps,
    over as many epochs as they take, instead of `cfg.epochs` epochs. `on_step(epoch, rows)` is
    called before each optimizer step with the rows of its batch.
    `cfg` gives the head, hidden units, epochs, learning rate and batch size.
    Returns the head's weights as float32 numpy arrays (see `FrozenHeadClassifier`).
    """
    import torch

    from tasks.losses import build_loss
    from tasks.mixes import epoch_batches, step_budget

    if threads:
        torch.set_num_threads(max(1, int(threads)))
    torch.manual_seed(seed)
    d, n_labels = x.shape[1], y.shape[1]
    if cfg.head == "linear":
        net = torch.nn.Linear(d, n_labels)
    elif cfg.head == "mlp":
        net = torch.nn.Sequential(
            torch.nn.Linear(d, cfg.hidden), torch.nn.ReLU(), torch.nn.Linear(cfg.hidden, n_labels)
        )
    else:
        raise ValueError(f"head={cfg.head!r}; expected 'linear' or 'mlp'")
    loss_fn = build_loss(loss, y)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=HEAD_WEIGHT_DECAY)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    blocks = np.zeros(len(x), dtype=np.int64) if blocks is None else np.asarray(blocks)
    if blocks.shape != (len(x),):
        raise ValueError(f"blocks has shape {blocks.shape}, expected ({len(x)},)")
    total, n_epochs = step_budget(len(x), cfg.batch_size, cfg.epochs, steps)
    taken = 0
    for epoch in range(n_epochs):
        for rows in epoch_batches(blocks, seed, epoch, cfg.batch_size)[: total - taken]:
            if on_step is not None:
                on_step(epoch, rows)
            idx = torch.from_numpy(rows)
            opt.zero_grad(set_to_none=True)
            loss_fn(net(xt[idx]), yt[idx]).backward()
            opt.step()
            taken += 1
    state = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    if cfg.head == "linear":
        return {"w": state["weight"], "b": state["bias"]}
    return {
        "w1": state["0.weight"],
        "b1": state["0.bias"],
        "w2": state["2.weight"],
        "b2": state["2.bias"],
    }


#: Logit given to a label the training mix never shows (or always shows): no model can be fit.
CONSTANT_LOGIT = 8.0


def train_tfidf_linear(
    texts: list[str],
    y: np.ndarray,
    cfg: TfidfLinearFamily,
    loss: str,
    seed: int,
    **common: Any,
) -> TfidfLinearClassifier:
    """TF-IDF (word 1..ngram_max grams, at most max_features) + one logistic regression (C)
    per label.

    `loss=weighted_bce` uses balanced class weights; plain `bce` none. Focal and asymmetric
    losses have no linear-model counterpart here and are refused.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if loss not in ("bce", "weighted_bce"):
        raise ValueError(f"family tfidf_linear supports loss bce or weighted_bce, not {loss!r}")
    vec = TfidfVectorizer(
        ngram_range=(1, cfg.ngram_max),
        sublinear_tf=True,
        min_df=TFIDF_MIN_DF,
        max_features=cfg.max_features,
        dtype=np.float32,
    )
    xs = vec.fit_transform(texts)
    n_labels = y.shape[1]
    coef = np.zeros((n_labels, xs.shape[1]), dtype=np.float32)
    intercept = np.zeros(n_labels, dtype=np.float32)
    for j in range(n_labels):
        col = y[:, j]
        if col.min() == col.max():  # one class only: a constant prediction
            intercept[j] = CONSTANT_LOGIT if col[0] > 0 else -CONSTANT_LOGIT
            continue
        lr = LogisticRegression(
            C=cfg.C,
            solver="liblinear",
            class_weight="balanced" if loss == "weighted_bce" else None,
            random_state=seed,
        )
        lr.fit(xs, col.astype(int))
        coef[j] = lr.coef_[0]
        intercept[j] = lr.intercept_[0]
    return TfidfLinearClassifier(vec, coef, intercept, **common)
