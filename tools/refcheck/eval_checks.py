"""Metrics (utils/evaluate.py, the table means of utils/pyutils.py) and the validation columns of
``engine/validatation_engine.build_validation`` (CAM, Score Map, Fused, Seg_Pred, val cls score).

The reference's engine runs unchanged on a list of (name, image, mask, labels) batches; its ``evaluate`` module is
wrapped so that the label maps it scores are recorded, which gives one row per column at pixel level besides the
scores.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import torch

from more.config import load_config
from more.data.transforms import eval_image, normalize
from more.eval.evaluate import column_labels, columns_at, evaluate, predict_batch
from more.eval.metrics import ConfusionMatrix, per_image_f1, scores
from tools.refcheck.build import SIZES, paired, voc_args
from tools.refcheck.common import Reference, Row, approx, exact

C = 20
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
COLUMNS = {"Seg_Pred": "seg", "CAM": "cam", "Score Map": "lam", "Fused": "fused"}  # the engine's scoring order


def _score_rows(name: str, ours, theirs: dict) -> list[Row]:  # noqa: ANN001 - our Scores
    def values(key: str) -> np.ndarray:
        return np.array(list(theirs[key].values()), dtype=np.float64)

    rows = [approx(f"{name}: per-class IoU / precision / recall / FP/TP",
                   [ours.iou, ours.precision, ours.recall, ours.confusion],
                   [values("iou"), values("precision"), values("recall"), values("confusion")], tol=1e-12)]
    # format_tabs' rows: plain means over all classes (NaN propagates), the dict's miou is the nan-mean over GT classes
    rows.append(approx(f"{name}: m-IoU / m-Precision / m-Recall / m-ConfusionRatio / dict miou / pAcc",
                       np.array([ours.miou, ours.mprecision, ours.mrecall, ours.mconfusion, ours.miou_gt,
                                 ours.pixel_acc]),
                       np.array([values("iou").mean(), values("precision").mean(), values("recall").mean(),
                                 values("confusion").mean(), theirs["miou"], theirs["pAcc"]]), tol=1e-12))
    return rows


def _metric_rows(ref: Reference) -> list[Row]:
    g = torch.Generator().manual_seed(31)
    gts, preds = [], []
    for h, w in ((40, 60), (55, 30), (32, 32)):
        gt = torch.randint(0, 6, (h, w), generator=g)
        gt[torch.rand(h, w, generator=g) < 0.1] = 255
        pred = torch.where(torch.rand(h, w, generator=g) < 0.6, gt.clamp(max=5), torch.randint(0, 7, (h, w),
                                                                                               generator=g))
        gts.append(gt.numpy().astype(np.int16))
        preds.append(pred.numpy().astype(np.int16))
    hist = ConfusionMatrix(21)
    for gt, pred in zip(gts, preds):
        hist.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(gt.astype(np.int64)))
    rows = _score_rows("metrics (21 classes, 255 ignored)", scores(hist.hist), ref.evaluate.scores(gts, preds))
    logits = torch.randn(16, C, generator=g)
    labels = (torch.rand(16, C, generator=g) < 0.15).float()
    ref_f1 = [ref.evaluate.multilabel_score(labels[i].numpy(), (logits[i] > 0).numpy().astype(np.int16))
              for i in range(16)]
    rows.append(approx("classification F1 per image (sklearn f1_score)", per_image_f1(logits, labels),
                       np.array(ref_f1, dtype=np.float64), tol=1e-12))
    return rows


@contextlib.contextmanager
def _recording(ref: Reference) -> Iterator[list]:
    """Wraps the engine's ``evaluate.scores`` to record what it scores (and returns)."""
    engine = ref.validatation_engine
    real = engine.evaluate
    calls: list = []

    def record(gts, preds, num_classes=21):  # noqa: ANN001 - the reference's signature
        result = real.scores(gts, preds, num_classes)
        calls.append(([np.array(p) for p in preds], result))
        return result

    engine.evaluate = SimpleNamespace(scores=record, multilabel_score=real.multilabel_score)
    try:
        yield calls
    finally:
        engine.evaluate = real


def _validation_rows(ref: Reference) -> list[Row]:
    ours, theirs = paired(ref, SIZES["small"], seed=4)
    g = torch.Generator().manual_seed(41)
    resize = 128
    samples = []
    for h, w in ((120, 160), (150, 100), (128, 128)):
        rgb = (torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(h, w), mode="bicubic",
                                               align_corners=False).clamp(0, 1) * 255).to(torch.uint8)[0]
        labels = torch.zeros(C)
        labels[torch.randperm(C, generator=g)[:2]] = 1
        mask = torch.zeros(h, w, dtype=torch.long)
        mask[h // 4: 3 * h // 4, w // 3:] = int(labels.nonzero()[0]) + 1
        mask[:3] = 255
        samples.append((rgb, mask, labels))
    loader = [(f"img{i}", normalize(rgb, MEAN, STD)[None], mask[None], labels[None])
              for i, (rgb, mask, labels) in enumerate(samples)]
    args = voc_args(ref, crop_size=resize)
    with _recording(ref) as calls, contextlib.redirect_stderr(io.StringIO()):  # tqdm bar
        ref_f1, _ = ref.validatation_engine.build_validation(model=theirs, data_loader=loader, args=args)

    cfg = load_config(None, [f"eval.resize={resize}"])
    batches = [{"image": eval_image(rgb.permute(1, 2, 0), resize, MEAN, STD)[None], "labels": labels[None],
                "mask": [mask]} for rgb, mask, labels in samples]
    result = evaluate(ours, batches, cfg=cfg, device=torch.device("cpu"))
    rows = [approx("validation: val cls score (mean per-image F1)", result.cls_f1, ref_f1, tol=1e-12)]
    ours.eval()
    per_image: dict[str, list[torch.Tensor]] = {k: [] for k in COLUMNS.values()}
    for batch in batches:
        maps = predict_batch(ours, batch["image"], batch["labels"], cfg=cfg)
        mask = batch["mask"][0]
        for name, column in columns_at(maps, [0], tuple(mask.shape)):
            if name in per_image:
                pred = column_labels(name, column, batch["labels"], bkg_thre=cfg.eval.bkg_thre)
                per_image[name].append(pred[0])
    ours.train()
    for (column, key), (ref_preds, ref_scores) in zip(COLUMNS.items(), calls):
        rows.append(exact(f"validation {column}: labels at label size (3 images)", per_image[key],
                          [torch.from_numpy(p.astype(np.int64)) for p in ref_preds]))
        rows += _score_rows(f"validation {column}", result.scores[key], ref_scores)
    return rows


def checks(ref: Reference) -> list[Row]:
    """Rows for metrics and the in-training validation."""
    return _metric_rows(ref) + _validation_rows(ref)
