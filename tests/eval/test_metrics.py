"""Confusion-matrix metrics and the classification F1 against hand-computed values (MORE_SPEC §5.1, §5.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from more.eval.metrics import ConfusionMatrix, classification_f1, format_table, per_image_f1, scores

# gt / pred over 4 classes. Class 2 is absent from the GT but predicted once; class 3 is in the GT but never
# predicted; the last two pixels are ignore (255) and must not count.
GT = torch.tensor([[0, 0, 0, 1, 1], [1, 3, 3, 255, 255]])
PRED = torch.tensor([[0, 0, 1, 1, 1], [2, 0, 1, 1, 2]])
# hist[gt, pred] by hand:
HIST = np.array([[2, 1, 0, 0], [0, 2, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]])


def test_confusion_matrix_counts_by_hand():
    cm = ConfusionMatrix(4)
    cm.update(PRED, GT)
    np.testing.assert_array_equal(cm.hist.numpy(), HIST)
    assert cm.hist.dtype == torch.int64


def test_batched_update_merge_and_out_of_range_prediction():
    a, b = ConfusionMatrix(4), ConfusionMatrix(4)
    a.update(PRED[None], GT[None])  # (N, H, W)
    b.update(torch.tensor([7, 0]), torch.tensor([0, 0]))  # prediction 7 is outside [0, 4): skipped
    a.merge(b)
    expected = HIST.copy()
    expected[0, 0] += 1
    np.testing.assert_array_equal(a.hist.numpy(), expected)
    a.reset()
    assert int(a.hist.sum()) == 0


def test_scores_by_hand_with_undefined_classes():
    s = scores(torch.from_numpy(HIST))
    # TP = [2, 2, 0, 0], FP = [1, 2, 1, 0], FN = [1, 1, 0, 2]
    np.testing.assert_allclose(s.iou, [2 / 4, 2 / 5, 0.0, 0.0])
    np.testing.assert_allclose(s.precision, [2 / 3, 2 / 4, 0.0, np.nan])  # class 3 never predicted: 0/0
    np.testing.assert_allclose(s.recall, [2 / 3, 2 / 3, np.nan, 0.0])  # class 2 absent from GT: 0/0
    np.testing.assert_allclose(s.confusion, [1 / 2, 1.0, np.inf, np.nan])
    np.testing.assert_array_equal(s.present, [True, True, False, True])
    assert s.miou == pytest.approx((0.5 + 0.4) / 4)
    assert s.miou_present == pytest.approx((0.5 + 0.4 + 0.0) / 3)
    assert math.isnan(s.mprecision) and math.isnan(s.mrecall) and math.isnan(s.mconfusion)
    assert s.pixel_acc == pytest.approx(4 / 8)


def test_scores_plain_means_and_percent_units():
    s = scores(np.array([[1, 1], [0, 2]]))  # TP = [1, 2], FP = [0, 1], FN = [1, 0]
    assert s.miou == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert s.mprecision == pytest.approx((1 + 2 / 3) / 2)
    assert s.mrecall == pytest.approx((1 / 2 + 1) / 2)
    assert s.mconfusion == pytest.approx((0 + 1 / 2) / 2)
    p = s.as_percent()
    assert p.percent and p.miou == pytest.approx(100 * s.miou) and p.mconfusion == s.mconfusion
    np.testing.assert_allclose(p.iou, [50.0, 200 / 3])
    assert p.as_percent() is p
    assert s.summary()["mprecision"] == pytest.approx(5 / 6)


def test_iou_of_class_absent_everywhere_is_nan_and_makes_plain_mean_nan():
    s = scores(np.array([[3, 0], [0, 0]]))
    assert s.iou[0] == 1.0 and math.isnan(s.iou[1])
    assert math.isnan(s.miou) and s.miou_present == 1.0


def test_classification_f1_by_hand():
    logits = torch.tensor([[1.0, -1.0, 2.0], [-1.0, -1.0, -1.0], [-1.0, 3.0, -1.0], [-2.0, -1.0, -1.0]])
    labels = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0]])
    # image 0: TP 1, FP 1, FN 1 -> 0.5; image 1: nothing at all -> 0 (sklearn zero_division default);
    # image 2: perfect -> 1; image 3: missed its only class -> 0
    np.testing.assert_allclose(per_image_f1(logits, labels).numpy(), [0.5, 0.0, 1.0, 0.0])
    assert classification_f1(logits, labels) == pytest.approx(1.5 / 4)


def test_format_table_markdown():
    good = scores(np.array([[1, 1], [0, 2]]))
    bad = scores(np.array([[2, 0], [2, 0]]))  # class 1 never predicted: precision NaN
    text = format_table({"CAM": good, "Seg_Pred": bad}, ["background", "cat"])
    lines = text.splitlines()
    assert lines[0] == "| output | mIoU | mPrecision | mRecall | mConfusionRatio |"
    assert lines[2] == "| CAM | 58.333 | 83.333 | 75.000 | 0.250 |"
    assert lines[3] == "| Seg_Pred | 25.000 | nan | 50.000 | nan |"
    assert "| class | CAM | Seg_Pred |" in lines
    assert "| cat | 66.667 | 0.000 |" in lines
