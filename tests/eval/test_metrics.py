"""Confusion-matrix metrics and the classification F1 against hand-computed values (MORE_SPEC §5.1, §5.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from more.eval.metrics import (
    ConfusionMatrix,
    absent_note,
    classification_f1,
    format_table,
    per_image_f1,
    scores,
)

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
    assert s.miou_gt == pytest.approx((0.5 + 0.4 + 0.0) / 3)  # the reference dict's miou: classes in the GT
    assert s.miou_present == pytest.approx(s.miou)  # every class is in the GT or the prediction: the plain mean
    np.testing.assert_array_equal(s.predicted, [True, True, True, False])
    assert not s.absent.any()
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
    assert math.isnan(s.miou) and s.miou_present == 1.0 and s.miou_gt == 1.0


# HIST with a fifth class that neither the GT nor the prediction contains (a small validation subset)
HIST5 = np.pad(HIST, ((0, 1), (0, 1)))
NAMES5 = ["background", "cat", "dog", "car", "boat"]


def test_miou_present_leaves_out_only_the_classes_absent_from_gt_and_prediction():
    s = scores(HIST5)
    assert math.isnan(s.iou[4]) and math.isnan(s.miou)
    np.testing.assert_array_equal(s.absent, [False, False, False, False, True])
    assert s.miou_present == pytest.approx((0.5 + 0.4 + 0.0 + 0.0) / 4)  # 'dog' is predicted only: IoU 0 counts
    assert s.miou_gt == pytest.approx((0.5 + 0.4 + 0.0) / 3)  # 'dog' is not in the GT: left out
    assert s.as_percent().miou_present == pytest.approx(22.5)


def test_absent_note_names_the_classes_the_outputs_and_the_split():
    full = scores(HIST)
    # seg predicts 'cat' where cam predicted 'dog': 'dog' is then in neither; IoU bg 2/4, cat 3/5, car 0
    seg = scores(np.pad(np.array([[2, 1, 0, 0], [0, 3, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]), ((0, 1), (0, 1))))
    note = absent_note({"cam": scores(HIST5), "seg": seg, "lam": full}, NAMES5, split="val_small")
    assert note == ("mIoU is nan for cam, seg: class(es) 'boat', 'dog' (seg) occur in neither the ground truth nor "
                    "the prediction on split 'val_small'; mIoU over the classes present (miou_present): cam 22.50, "
                    "seg 36.67")
    assert absent_note({"lam": full}, NAMES5[:4]) == ""
    table = format_table({"CAM": scores(HIST5)}, NAMES5, split="val_small")
    assert table.splitlines()[2] == "| CAM | nan | nan | nan | nan |"
    assert table.endswith("on split 'val_small'; mIoU over the classes present (miou_present): CAM 22.500")
    assert "mIoU is nan" not in format_table({"CAM": full}, NAMES5[:4])


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
