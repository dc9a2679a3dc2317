"""Segmentation and classification metrics: one confusion matrix on the device, reduced once.

Reference: ``utils/evaluate.py`` (``scores``, ``multilabel_score``) and ``utils/pyutils.py::format_tabs`` of
zwyang6/MoRe, paraphrased in MORE_SPEC §5.1 and §5.5.

Units: :class:`Scores` holds fractions (IoU 0.731, not 73.1); :meth:`Scores.as_percent` gives the table's units
(everything ×100 except the confusion ratio, which the reference prints as a plain ratio).
Undefined values follow numpy division: 0/0 is NaN (e.g. the precision of a class that is never predicted,
the IoU of a class absent from both GT and prediction) and x/0 with x > 0 is +inf (the confusion ratio FP/TP
of a class predicted but never correctly). Means are plain means, so one NaN makes the mean NaN, as in the
reference table: on a small validation subset a class that neither the ground truth nor the prediction contains
makes m-IoU NaN. ``miou_present`` is the mean over the classes present in the ground truth or the prediction (the
plain mean whenever that is defined, and a number a search can rank on small subsets); ``miou_gt`` is the reference
dict's ``miou`` (nan-mean over the classes present in the ground truth). :func:`absent_note` says which classes made
a mean NaN.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


class ConfusionMatrix:
    """A (K, K) int64 pixel confusion matrix ``hist[gt, pred]`` accumulated on a device.

    Args:
        num_classes: K, including background (21 for VOC, 81 for COCO).
        device: where the counts live (the predictions' device, to avoid copies).
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = int(num_classes)
        self.hist = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Add a batch: ``pred`` and ``gt`` are (N, H, W) or (H, W) integer maps of equal shape.

        Pixels whose GT or prediction lies outside [0, K) (e.g. 255 = ignore) are skipped. On CUDA
        ``torch.bincount`` reads its input's range once per call (a sync), so update once per batch.
        """
        if pred.shape != gt.shape:
            raise ValueError(f"ConfusionMatrix.update: pred {tuple(pred.shape)} != gt {tuple(gt.shape)}")
        k = self.num_classes
        pred = pred.to(device=self.hist.device, dtype=torch.int64).flatten()
        gt = gt.to(device=self.hist.device, dtype=torch.int64).flatten()
        valid = (gt >= 0) & (gt < k) & (pred >= 0) & (pred < k)
        # Invalid pixels go to an extra bin K*K that is dropped: no boolean indexing, no data-dependent shape.
        index = torch.where(valid, gt * k + pred, torch.full_like(gt, k * k))
        self.hist += torch.bincount(index, minlength=k * k + 1)[: k * k].view(k, k)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (e.g. from another shard); returns ``self``."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class into {self.num_classes}-class matrix")
        self.hist += other.hist.to(self.hist.device)
        return self

    def reset(self) -> None:
        """Zero the counts."""
        self.hist.zero_()

    def scores(self) -> Scores:
        """Reduce the matrix (one device-to-host copy)."""
        return scores(self.hist)


@dataclass
class Scores:
    """Per-class and mean segmentation scores from one confusion matrix (MORE_SPEC §5.5).

    Per-class arrays have length K (background first). All values are fractions unless ``percent`` is True.
    """

    iou: np.ndarray  # TP / (TP + FP + FN)
    precision: np.ndarray  # TP / (TP + FP)
    recall: np.ndarray  # TP / (TP + FN)
    confusion: np.ndarray  # FP / TP (a ratio, never scaled)
    present: np.ndarray  # bool: class occurs in the GT
    predicted: np.ndarray  # bool: class occurs in the prediction
    miou: float  # plain mean of iou over all classes (the table's m-IoU; NaN if any class is undefined)
    miou_present: float  # mean of iou over classes present in the GT or the prediction (= miou when that is defined)
    miou_gt: float  # nan-mean of iou over classes present in the GT (the reference dict's "miou")
    mprecision: float  # plain mean over all classes incl. background
    mrecall: float  # plain mean over all classes incl. background
    mconfusion: float  # plain mean of FP / TP
    pixel_acc: float  # trace / total
    percent: bool = False

    def as_percent(self) -> Scores:
        """A copy in table units: IoU, precision, recall, pixel accuracy and their means ×100."""
        if self.percent:
            return self
        scaled = ("iou", "precision", "recall", "miou", "miou_present", "miou_gt", "mprecision", "mrecall",
                  "pixel_acc")
        return dataclasses.replace(self, percent=True, **{name: getattr(self, name) * 100 for name in scaled})

    @property
    def absent(self) -> np.ndarray:
        """bool (K,): classes in neither the GT nor the prediction; their IoU is 0/0 and makes ``miou`` NaN."""
        return ~self.present & ~self.predicted

    def summary(self) -> dict[str, float]:
        """The four table means plus ``miou_present``, ``miou_gt`` and ``pixel_acc`` as plain floats (for logging)."""
        names = ("miou", "miou_present", "miou_gt", "mprecision", "mrecall", "mconfusion", "pixel_acc")
        return {name: float(getattr(self, name)) for name in names}


def scores(hist: torch.Tensor | np.ndarray) -> Scores:
    """Scores of a (K, K) confusion matrix indexed ``[gt, pred]``.

    Args:
        hist: counts, a tensor on any device or a numpy array.

    Returns:
        :class:`Scores` in fractions (see the module docstring for NaN / inf).
    """
    if isinstance(hist, torch.Tensor):
        hist = hist.detach().cpu().numpy()
    hist = np.asarray(hist, dtype=np.float64)
    tp = np.diag(hist)
    gt_count = hist.sum(axis=1)  # TP + FN
    pred_count = hist.sum(axis=0)  # TP + FP
    fp = pred_count - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (gt_count + pred_count - tp)
        precision = tp / pred_count
        recall = tp / gt_count
        confusion = fp / tp
        pixel_acc = float(tp.sum() / hist.sum())
    present = gt_count > 0  # a class present in the GT always has a defined IoU
    predicted = pred_count > 0
    defined = present | predicted  # IoU is 0/0 exactly for the classes in neither
    return Scores(
        iou=iou,
        precision=precision,
        recall=recall,
        confusion=confusion,
        present=present,
        predicted=predicted,
        miou=float(np.mean(iou)),
        miou_present=float(np.mean(iou[defined])) if defined.any() else math.nan,
        miou_gt=float(np.mean(iou[present])) if present.any() else math.nan,
        mprecision=float(np.mean(precision)),
        mrecall=float(np.mean(recall)),
        mconfusion=float(np.mean(confusion)),
        pixel_acc=pixel_acc,
    )


def per_image_f1(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-image F1 of ``logits > 0`` against multi-hot labels, on the inputs' device (no host sync).

    F1 = 2TP / (2TP + FP + FN), and 0 when the denominator is 0 (no positive label and no positive prediction):
    sklearn ``f1_score``'s binary result with its default ``zero_division="warn"``.

    Args:
        logits: (N, C) classification logits.
        labels: (N, C) 0/1 labels.

    Returns:
        (N,) float64 F1 per image.
    """
    pred = logits > 0
    truth = labels > 0
    tp = (pred & truth).sum(dim=1).double()
    fp = (pred & ~truth).sum(dim=1).double()
    fn = (~pred & truth).sum(dim=1).double()
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(denom))


def classification_f1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over images of :func:`per_image_f1` (the reference's ``val cls score``); reads one value."""
    return float(per_image_f1(logits, labels).mean())


def _fmt(value: float, digits: int) -> str:
    return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.{digits}f}")


def format_table(rows: dict[str, Scores], class_names: Sequence[str], *, digits: int = 3,
                 split: str | None = None) -> str:
    """Markdown tables: the means per output, then per-class IoU with one column per output, then (when an m-IoU is
    NaN) the line of :func:`absent_note`.

    Values are in the reference table's units (×100 except the confusion ratio).

    Args:
        rows: output name (e.g. "CAM", "Seg_Pred") -> its :class:`Scores`.
        class_names: K names, background first.
        digits: decimals.
        split: the split scored, named in the note.

    Returns:
        Markdown text.
    """
    pct = {name: s.as_percent() for name, s in rows.items()}
    lines = ["| output | mIoU | mPrecision | mRecall | mConfusionRatio |", "|---|---|---|---|---|"]
    for name, s in pct.items():
        values = (s.miou, s.mprecision, s.mrecall, s.mconfusion)
        lines.append(f"| {name} | " + " | ".join(_fmt(v, digits) for v in values) + " |")
    lines += ["", "| class | " + " | ".join(pct) + " |", "|---" * (len(pct) + 1) + "|"]
    for k, cls in enumerate(class_names):
        lines.append(f"| {cls} | " + " | ".join(_fmt(float(s.iou[k]), digits) for s in pct.values()) + " |")
    note = absent_note(rows, class_names, split=split, digits=digits)
    return "\n".join(lines) + (f"\n\n{note}" if note else "")


def absent_note(rows: dict[str, Scores], class_names: Sequence[str], *, split: str | None = None,
                digits: int = 2) -> str:
    """Why an output's m-IoU is NaN, in one line ('' when none is): which classes occur in neither the ground truth
    nor that output's prediction, on which split, and the m-IoU over the classes present (``miou_present``).

    Args:
        rows: output name -> its :class:`Scores`.
        class_names: K names, background first.
        split: the split scored (named in the note when given).
        digits: decimals of the ``miou_present`` values.
    """
    nan_rows = {name: s for name, s in rows.items() if math.isnan(s.miou)}
    if not nan_rows:
        return ""
    by_class: dict[str, list[str]] = {}
    for name, s in nan_rows.items():
        for k in np.flatnonzero(s.absent):
            by_class.setdefault(class_names[k], []).append(name)
    classes = ", ".join(f"'{c}'" + ("" if len(outs) == len(nan_rows) else f" ({', '.join(outs)})")
                        for c, outs in by_class.items())
    where = f"split '{split}'" if split else "this split"
    present = ", ".join(f"{name} {_fmt(100 * s.miou_present if not s.percent else s.miou_present, digits)}"
                        for name, s in nan_rows.items())
    return (f"mIoU is nan for {', '.join(nan_rows)}: class(es) {classes} occur in neither the ground truth nor the "
            f"prediction on {where}; mIoU over the classes present (miou_present): {present}")
