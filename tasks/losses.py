"""Multi-label training losses on logits: BCE, class-weighted BCE, focal and asymmetric.

Every loss is a mean over all (document, label) cells, so their scales are comparable and the
learning rate means the same for each. Focal and asymmetric losses are written here because
torch has neither for multi-label logits (torchvision's focal loss would pull in a torchvision
build that does not match the local torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

LOSSES = ("bce", "weighted_bce", "focal", "asymmetric")

# Focal loss constants from Lin et al. (2017); asymmetric loss from Ridnik et al. (2021), the
# setting the study reports as the strongest long-tail loss.
FOCAL_GAMMA = 2.0
FOCAL_ALPHA = 0.25
ASL_GAMMA_NEG = 4.0
ASL_GAMMA_POS = 1.0
ASL_CLIP = 0.05


def pos_weights(y: np.ndarray, max_weight: float = 100.0) -> np.ndarray:
    """Per-label weight of positives: negatives / positives in the training labels, capped.

    A label without positives gets weight 1 (there is nothing to up-weight).
    """
    pos = y.sum(axis=0)
    neg = len(y) - pos
    w = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return np.clip(w, 1.0, max_weight).astype(np.float32)


def focal_loss(logits: Any, targets: Any, gamma: float = FOCAL_GAMMA, alpha: float = FOCAL_ALPHA):
    """Sigmoid focal loss, mean over cells."""
    import torch
    import torch.nn.functional as F

    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * (1 - p_t) ** gamma * ce).mean()


def asymmetric_loss(
    logits: Any,
    targets: Any,
    gamma_neg: float = ASL_GAMMA_NEG,
    gamma_pos: float = ASL_GAMMA_POS,
    clip: float = ASL_CLIP,
    eps: float = 1e-8,
):
    """Asymmetric loss: negatives' probability shifted down by `clip`, mean over cells."""
    import torch

    p = torch.sigmoid(logits)
    p_neg = (p - clip).clamp(min=0) if clip > 0 else p  # probability margin for negatives
    loss_pos = targets * (1 - p) ** gamma_pos * torch.log(p.clamp(min=eps))
    loss_neg = (1 - targets) * p_neg**gamma_neg * torch.log((1 - p_neg).clamp(min=eps))
    return -(loss_pos + loss_neg).mean()


def build_loss(name: str, train_labels: np.ndarray | None = None) -> Callable[[Any, Any], Any]:
    """The loss function `(logits, targets) -> scalar` named in the config (`trials.losses`).

    `weighted_bce` needs the training label matrix to weight each label's positives.
    """
    import torch
    import torch.nn.functional as F

    if name == "bce":
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits, y)
    if name == "weighted_bce":
        if train_labels is None:
            raise ValueError("loss=weighted_bce needs the training labels for its class weights")
        w = torch.from_numpy(pos_weights(train_labels))
        return lambda logits, y: F.binary_cross_entropy_with_logits(
            logits, y, pos_weight=w.to(device=logits.device, dtype=logits.dtype)
        )
    if name == "focal":
        return focal_loss
    if name == "asymmetric":
        return asymmetric_loss
    raise ValueError(f"loss={name!r}; expected one of {LOSSES}")
