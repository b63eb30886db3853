"""Multi-label training losses on logits: BCE, class-weighted BCE, focal, asymmetric and
distribution-balanced.

Every loss is a mean over all (document, label) cells, so their scales are comparable and the
learning rate means the same for each. Focal, asymmetric and distribution-balanced losses are
written here because torch has none of them for multi-label logits (torchvision's focal loss would
pull in a torchvision build that does not match the local torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

LOSSES = ("bce", "weighted_bce", "focal", "asymmetric", "distribution_balanced")

# Focal loss constants from Lin et al. (2017); asymmetric loss from Ridnik et al. (2021), the
# setting the study reports as the strongest long-tail loss.
FOCAL_GAMMA = 2.0
FOCAL_ALPHA = 0.25
ASL_GAMMA_NEG = 4.0
ASL_GAMMA_POS = 1.0
ASL_CLIP = 0.05
# Distribution-Balanced loss (Wu et al., ECCV 2020), the settings of the authors' released configs
# (github.com/wutong16/DistributionBalancedLoss, configs/*/LT_resnet50_pfc_DB.py): the smoothing
# r_hat = alpha + sigmoid(beta * (r - mu)), the prior bias scale kappa, the negative logit scale
# lambda and the focal term (gamma, and the constant factor `balance_param` of their code).
DB_ALPHA = 0.1
DB_BETA = 10.0
DB_MU = 0.2
DB_KAPPA = 0.05
DB_LAMBDA = 2.0
DB_GAMMA = 2.0
DB_BALANCE = 2.0


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


def distribution_balanced_loss(
    train_labels: np.ndarray,
    alpha: float = DB_ALPHA,
    beta: float = DB_BETA,
    mu: float = DB_MU,
    kappa: float = DB_KAPPA,
    neg_scale: float = DB_LAMBDA,
    gamma: float = DB_GAMMA,
    balance: float = DB_BALANCE,
) -> Callable[[Any, Any], Any]:
    """Distribution-Balanced loss (Wu et al., "Distribution-Balanced Loss for Multi-Label
    Classification in Long-Tailed Datasets", ECCV 2020), mean over cells.

    Re-balanced weighting: for a document with positive labels P and label k,
    r_k = (1/n_k) / sum_{j in P} 1/n_j (n: positives per label in `train_labels`), smoothed to
    r_hat = alpha + sigmoid(beta * (r - mu)); the weight applies to every cell of the document.
    Negative-tolerant regularization: the label prior p_k = n_k / N gives b_k = -log(1/p_k - 1)
    and the bias nu_k = kappa * b_k. As in the authors' code, the logit is shifted by nu_k/lambda
    and a negative's logit then scaled by lambda, so a negative costs
    (r_hat/lambda) * log(1 + exp(lambda*z + nu_k)) and a positive r_hat * log(1 + exp(-(z +
    nu_k/lambda))); each cell's cost is then multiplied by `balance * (1 - p_t)**gamma` (focal term,
    p_t the probability of the true value under the shifted logits). With gamma=0, balance=1,
    kappa=0 and lambda=1 it is BCE weighted by r_hat.

    A label without positives in `train_labels` gets 1/n_k = 0 (it never adds to a document's
    sum, and its cells weigh alpha + sigmoid(-beta*mu)); its prior is taken as half a positive
    (and a label positive everywhere as half a negative) so that b_k stays finite. A document
    without positive labels has no r: its cells weigh 1.
    """
    import torch
    import torch.nn.functional as F

    y = np.asarray(train_labels, dtype=np.float64)
    n_docs = max(len(y), 1)
    pos = y.sum(axis=0)
    freq_inv_np = np.divide(1.0, pos, out=np.zeros_like(pos), where=pos > 0)
    prior = np.clip(pos, 0.5, max(n_docs - 0.5, 0.5)) / n_docs  # in (0, 1): b_k finite
    nu_np = kappa * -np.log(1.0 / prior - 1.0)
    freq_inv_t = torch.from_numpy(freq_inv_np.astype(np.float32))
    nu_t = torch.from_numpy(nu_np.astype(np.float32))

    def loss(logits: Any, targets: Any) -> Any:
        z = logits.float()
        t = targets.to(dtype=z.dtype)
        freq_inv = freq_inv_t.to(z.device)
        nu = nu_t.to(z.device)
        repeat = t @ freq_inv  # (B,): the document's summed 1/n_j over its positives
        has_pos = (repeat > 0).unsqueeze(1)
        r = freq_inv.unsqueeze(0) / torch.where(has_pos, repeat.unsqueeze(1), torch.ones_like(z))
        r_hat = torch.where(has_pos, alpha + torch.sigmoid(beta * (r - mu)), torch.ones_like(z))
        shifted = z + nu / neg_scale
        scaled = t * shifted + (1 - t) * neg_scale * shifted
        weight = r_hat * (t + (1 - t) / neg_scale)
        ce = F.binary_cross_entropy_with_logits(scaled, t, reduction="none")
        p_t = torch.exp(-ce)  # probability of the true value under the regularized logit
        return (balance * (1 - p_t) ** gamma * weight * ce).mean()

    return loss


def build_loss(name: str, train_labels: np.ndarray | None = None) -> Callable[[Any, Any], Any]:
    """The loss function `(logits, targets) -> scalar` named in the config (`trials.losses`).

    `weighted_bce` and `distribution_balanced` need the training label matrix (each label's
    positives and prior).
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
    if name == "distribution_balanced":
        if train_labels is None:
            raise ValueError(
                "loss=distribution_balanced needs the training labels for its label frequencies"
            )
        return distribution_balanced_loss(train_labels)
    raise ValueError(f"loss={name!r}; expected one of {LOSSES}")
