"""What training validates on: the split (or the authors' COCO ``val_part`` subset) and the final full validation.

The authors validate their COCO run during training on ``val_part`` (``datasets/coco/val_part.txt``: the first 5000
names of ``val.txt``, in its order), because a pass over the 40137 images of val2014 takes hours; the published
numbers come from a separate pass over the whole split afterwards. ``train.val_subset`` names such a subset (the
``coco`` preset: ``val_part``), used when its list file is in the data root (for COCO ``ROOT/ImageSets/val_part.txt``,
which ``more data prepare coco`` writes); without the file training validates the whole ``data.val_split``.
``train.final_full_val`` ends the run with that separate pass: its metrics are logged as ``val_full/...`` beside
the last ``val/...`` ones, at the last iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from more.config import MoReConfig
from more.eval.evaluate import EvalResult

FULL_PREFIX = "val_full/"


def eval_metrics(result: EvalResult, class_names: list[str], prefix: str = "val/") -> dict[str, float]:
    """An evaluation as flat metrics: per output mIoU, precision, recall and confusion ratio (percent but the
    ratio), per class IoU and confusion ratio, and the classification F1; keys ``<prefix><output>/...``."""
    metrics = result.flat(prefix)
    for out, s in result.scores.items():
        for name, iou, confusion in zip(class_names, s.iou, s.confusion):
            metrics[f"{prefix}{out}/iou/{name}"] = 100.0 * float(iou)
            metrics[f"{prefix}{out}/confusion/{name}"] = float(confusion)
    return metrics


def subset_list(cfg: MoReConfig) -> Path | None:
    """The list file of ``train.val_subset`` in the data root, or None when it is not set or when a described
    dataset (``dataset.yaml``) does not list such a split."""
    if not cfg.train.val_subset or cfg.train.val_subset == cfg.data.val_split:
        return None
    from more.data.description import DatasetError
    from more.data.voc import split_files

    try:
        return split_files(cfg.data.root, cfg.data.dataset, cfg.train.val_subset).list_file
    except DatasetError:  # the description names its splits: one it lacks is absent, like a missing list file
        return None


def training_val_split(cfg: MoReConfig) -> tuple[str, str]:
    """``(split, note)``: the split validated during training and a phrase saying why, for the run's first line."""
    if not cfg.train.val_subset or cfg.train.val_subset == cfg.data.val_split:
        return cfg.data.val_split, cfg.data.val_split
    subset = subset_list(cfg)
    if subset is not None and subset.is_file():
        return cfg.train.val_subset, f"{cfg.train.val_subset} (train.val_subset, part of {cfg.data.val_split})"
    missing = subset if subset is not None else f"split {cfg.train.val_subset!r} in {cfg.data.root}/dataset.yaml"
    return cfg.data.val_split, f"{cfg.data.val_split} (train.val_subset={cfg.train.val_subset}: no {missing})"


def full_validation(
    model: torch.nn.Module,
    cfg: MoReConfig,
    *,
    validated: str,
    last: dict[str, float],
    class_names: list[str],
    device: torch.device,
    autocast: bool,
    log: Callable[[str], None],
) -> tuple[dict[str, float], EvalResult | None]:
    """The ``val_full/...`` metrics of the whole ``data.val_split``.

    Args:
        validated: the split training validated (see :func:`training_val_split`).
        last: the metrics of the last training-time evaluation; when ``validated`` already is the whole split
            they are the full validation, copied under ``val_full/`` instead of computed again.

    Returns:
        The metrics, and the evaluation when one ran (None when the last one was copied).
    """
    from more.data import build_eval_dataset, collate_eval
    from more.eval.evaluate import evaluate

    if validated == cfg.data.val_split:
        return {FULL_PREFIX + k[len("val/"):]: v for k, v in last.items() if k.startswith("val/")}, None
    dataset = build_eval_dataset(cfg, cfg.data.val_split)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False,
                                         num_workers=cfg.data.num_workers, collate_fn=collate_eval,
                                         pin_memory=device.type == "cuda")
    log(f"full validation on {cfg.data.val_split}: {len(dataset)} images")
    step = max(1, len(dataset) // 10)

    def progress(done: int, total: int) -> None:
        if done >= total or done % step < cfg.eval.batch_size:
            log(f"full validation: {done}/{total} images")

    result = evaluate(model, loader, cfg=cfg, device=device, autocast=autocast, progress=progress)
    return eval_metrics(result, class_names, prefix=FULL_PREFIX), result
