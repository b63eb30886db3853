"""Each loss against a hand computation on a 1 x 2 example."""

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
