"""Trivial baselines against hand-computed confusion matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from more.eval.baselines import baseline_hists, baseline_scores


def test_hand_computed_matrices():
    # image 1: 2x2, GT [[0,1],[2,255]] with labels {1, 2}; image 2: 1x2, GT [[0, 0]] with no labels
    m1 = torch.tensor([[0, 1], [2, 255]])
    m2 = torch.tensor([[0, 0]])
    h = baseline_hists([(m1, torch.tensor([1.0, 1.0])), (m2, torch.tensor([0.0, 0.0]))], num_classes=3)
    np.testing.assert_array_equal(h["all_background"], [[3, 0, 0], [1, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(h["uniform_labels"], [[2, 0.5, 0.5], [0, 0.5, 0.5], [0, 0.5, 0.5]])


def test_scores_of_the_baselines():
    m = torch.tensor([[0, 0, 1, 1]])
    s = baseline_scores([{"mask": m, "labels": torch.tensor([1.0])}], num_classes=2)
    assert s["all_background"].miou == pytest.approx((2 / 4 + 0.0) / 2)  # bg IoU 2/4, class 1 IoU 0
    assert s["uniform_labels"].miou == pytest.approx((0.0 + 2 / 4) / 2)  # everything predicted class 1
