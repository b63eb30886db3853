"""Each loss against a hand computation on a 1 x 2 example (2 x 3 for distribution-balanced)."""

import math

import numpy as np
import pytest
import torch

from tasks.losses import asymmetric_loss, build_loss, focal_loss, pos_weights

LOGITS = torch.tensor([[2.0, -1.0]])
TARGETS = torch.tensor([[1.0, 0.0]])
P = [1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))]  # sigmoid of the logits


def test_bce_is_the_mean_cross_entropy():
    hand = -(math.log(P[0]) + math.log(1 - P[1])) / 2
    assert build_loss("bce")(LOGITS, TARGETS).item() == pytest.approx(hand, rel=1e-6)


def test_weighted_bce_weights_each_labels_positives():
    y = np.array([[1, 0], [0, 0], [0, 1], [0, 0]], dtype=np.float32)
    np.testing.assert_allclose(pos_weights(y), [3.0, 3.0])
    hand = -(3.0 * math.log(P[0]) + math.log(1 - P[1])) / 2
    assert build_loss("weighted_bce", y)(LOGITS, TARGETS).item() == pytest.approx(hand, rel=1e-6)
    with pytest.raises(ValueError, match="weighted_bce needs the training labels"):
        build_loss("weighted_bce")


def test_focal_loss_by_hand():
    pos = 0.25 * (1 - P[0]) ** 2 * -math.log(P[0])
    neg = 0.75 * P[1] ** 2 * -math.log(1 - P[1])
    assert focal_loss(LOGITS, TARGETS).item() == pytest.approx((pos + neg) / 2, rel=1e-6)


def test_asymmetric_loss_by_hand_with_the_papers_setting():
    pm = P[1] - 0.05  # shifted negative probability
    pos = -((1 - P[0]) ** 1) * math.log(P[0])
    neg = -(pm**4) * math.log(1 - pm)
    assert asymmetric_loss(LOGITS, TARGETS).item() == pytest.approx((pos + neg) / 2, rel=1e-5)
    # A negative already below the clip margin costs nothing.
    easy = asymmetric_loss(torch.tensor([[-5.0]]), torch.tensor([[0.0]]))
    assert easy.item() == 0.0


def test_unknown_loss_is_refused_by_name():
    with pytest.raises(ValueError, match="loss='hinge'"):
        build_loss("hinge")


# Distribution-Balanced loss: 4 training documents, label counts n = [3, 1, 0] (label 2 has none).
DB_TRAIN = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
DB_LOGITS = torch.tensor([[1.0, -0.5, 0.2], [-1.0, 2.0, 0.0]])
DB_TARGETS = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _db_by_hand(gamma=2.0, balance=2.0, kappa=0.05, lam=2.0) -> float:
    # Priors p = n/N with label 2 counted as half a positive: 3/4, 1/4, 0.5/4.
    nu = [kappa * -math.log(1 / p - 1) for p in (0.75, 0.25, 0.125)]
    # Document 0 has labels {0, 1}: sum of 1/n = 1/3 + 1 = 4/3, so r = (1/4, 3/4, 0).
    r_hat0 = [0.1 + _sig(10 * (r - 0.2)) for r in (0.25, 0.75, 0.0)]
    weights = [r_hat0, [1.0, 1.0, 1.0]]  # document 1 has no positives: weight 1
    total = 0.0
    for i in range(2):
        for k in range(3):
            z, y, w = DB_LOGITS[i, k].item(), DB_TARGETS[i, k].item(), weights[i][k]
            if y:
                q = _sig(z + nu[k] / lam)
                ce, p_t = -math.log(q), q
            else:
                q = _sig(lam * z + nu[k])
                ce, p_t, w = -math.log(1 - q), 1 - q, w / lam
            total += balance * (1 - p_t) ** gamma * w * ce
    return total / 6


def test_distribution_balanced_loss_by_hand_with_the_reference_setting():
    loss = build_loss("distribution_balanced", DB_TRAIN)(DB_LOGITS, DB_TARGETS)
    assert loss.item() == pytest.approx(_db_by_hand(), rel=1e-5)
    # The same value from the order of operations of the authors' released code.
    assert loss.item() == pytest.approx(0.81924, abs=1e-5)
    with pytest.raises(ValueError, match="distribution_balanced needs the training labels"):
        build_loss("distribution_balanced")


def test_distribution_balanced_loss_without_focal_and_bias_is_rebalanced_bce():
    from tasks.losses import distribution_balanced_loss

    plain = distribution_balanced_loss(DB_TRAIN, kappa=0.0, neg_scale=1.0, gamma=0.0, balance=1.0)
    r_hat0 = [0.1 + _sig(10 * (r - 0.2)) for r in (0.25, 0.75, 0.0)]
    w = torch.tensor([r_hat0, [1.0, 1.0, 1.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(DB_LOGITS, DB_TARGETS, weight=w)
    assert plain(DB_LOGITS, DB_TARGETS).item() == pytest.approx(bce.item(), rel=1e-6)
    # The other terms one at a time, against the hand computation.
    one = distribution_balanced_loss(DB_TRAIN, gamma=0.0, balance=1.0)
    assert one(DB_LOGITS, DB_TARGETS).item() == pytest.approx(
        _db_by_hand(gamma=0.0, balance=1.0), rel=1e-5
    )


def test_distribution_balanced_loss_tolerates_a_rare_labels_negatives():
    # Same logit, both negatives: the rare label (prior 1/4) costs less than the common one (3/4).
    loss = build_loss("distribution_balanced", DB_TRAIN)
    common = loss(torch.tensor([[0.5, -9.0, -9.0]]), torch.tensor([[0.0, 0.0, 0.0]]))
    rare = loss(torch.tensor([[-9.0, 0.5, -9.0]]), torch.tensor([[0.0, 0.0, 0.0]]))
    assert rare.item() < common.item()


def test_distribution_balanced_loss_gradient_is_finite():
    logits = DB_LOGITS.clone().requires_grad_(True)
    loss = build_loss("distribution_balanced", DB_TRAIN)(logits, DB_TARGETS)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert (logits.grad[0, :2] < 0).all()  # positives pull their logits up
    assert (logits.grad[1] > 0).all()  # negatives push theirs down
