"""The train and eval datasets (torch) over any layout of :mod:`more.data.layout`: PASCAL VOC 2012 (+SBD), MS COCO
2014 in the reference's VOC-style layout, datasets described by a ``dataset.yaml`` and the synthetic set.

Masks on disk: :mod:`more.data.masks`; image-level labels: :mod:`more.data.labels`. Their names are re-exported
here for the callers that import them from this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from more.data.classes import IGNORE_INDEX
from more.data.labels import CACHE_DIR, derive_labels, image_labels, labels_from_mask, read_labels_file
from more.data.layout import SplitFiles, coco_subset, described, labels_file, read_split, split_files
from more.data.masks import DIR_MODE, FILE_MODE, atomic_save, mask_png, read_mask, write_mask
from more.data.transforms import build_train_transform, eval_image

if TYPE_CHECKING:
    from more.config import MoReConfig

__all__ = ["CACHE_DIR", "DIR_MODE", "FILE_MODE", "EvalDataset", "SplitFiles", "TrainDataset", "atomic_save",
           "build_eval_dataset", "build_train_dataset", "coco_subset", "collate_eval", "derive_labels", "described",
           "image_labels", "labels_file", "labels_from_mask", "mask_png", "read_labels_file", "read_mask",
           "read_split", "split_files", "write_mask"]

# ---------------------------------------------------------------------------------------------- datasets


def _read_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


class TrainDataset(Dataset):
    """Training images with image-level labels; item = dict(image (3, crop, crop), labels (C,), name)."""

    def __init__(self, files: SplitFiles, names: Sequence[str], labels: np.ndarray,
                 transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.files = files
        self.names = list(names)
        self.labels = labels  # (N, C) float32
        self.transform = transform

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        image = self.transform(_read_rgb(self.files.image_path(name)))  # (3, crop, crop)
        return {"image": image, "labels": torch.from_numpy(self.labels[index]), "name": name}


class EvalDataset(Dataset):
    """Evaluation images at ``resize``² with their original-size masks and RGB images.

    Item = dict(image (3, R, R) float, mask (H0, W0) long (all 255 without masks), labels (C,) float, name,
    orig (H0, W0, 3) uint8).
    """

    def __init__(self, files: SplitFiles, names: Sequence[str], labels: np.ndarray, resize: int,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        self.files = files
        self.names = list(names)
        self.labels = labels  # (N, C) float32
        self.resize = resize
        self.mean, self.std = list(mean), list(std)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        image_path = self.files.image_path(name)
        orig = torch.from_numpy(np.array(_read_rgb(image_path), dtype=np.uint8))  # (H0, W0, 3)
        mask_path = self.files.mask_path(name)
        if mask_path is None:
            mask = torch.full(orig.shape[:2], IGNORE_INDEX, dtype=torch.long)
        else:
            mask = torch.from_numpy(read_mask(mask_path).astype(np.int64))  # (H0, W0)
            if mask.shape != orig.shape[:2]:
                raise ValueError(f"{mask_path}: mask size {tuple(mask.shape)} differs from image {image_path} "
                                 f"{tuple(orig.shape[:2])}")
        return {"image": eval_image(orig, self.resize, self.mean, self.std), "mask": mask,
                "labels": torch.from_numpy(self.labels[index]), "name": name, "orig": orig}


def collate_eval(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch eval items: images (B, 3, R, R) and labels (B, C) stacked; masks, origs and names as lists."""
    return {
        "image": torch.stack([it["image"] for it in items]),
        "labels": torch.stack([it["labels"] for it in items]),
        "mask": [it["mask"] for it in items],
        "orig": [it["orig"] for it in items],
        "name": [it["name"] for it in items],
    }


def _split_for(cfg: MoReConfig, split: str) -> tuple[SplitFiles, list[str]]:
    files = split_files(cfg.data.root, cfg.data.dataset, split)
    return files, read_split(files.list_file)


def build_train_dataset(cfg: MoReConfig) -> TrainDataset:
    """The training split ``cfg.data.train_split`` with the augmentation of ``cfg.data.augmentation``.

    Images without any foreground class carry no training signal (and break the per-class losses): they are
    skipped with a warning (``python -m more data check`` reports them as errors).
    """
    from more.config import num_classes
    from more.data.classes import class_names

    files, names = _split_for(cfg, cfg.data.train_split)
    labels = image_labels(files, names, num_classes(cfg), labels_file(cfg), class_names(cfg)[1:])  # (N, C)
    keep = labels.any(axis=1)
    if not keep.all():
        empty = [n for n, k in zip(names, keep) if not k]
        warnings.warn(f"{files.list_file}: skipping {len(empty)} training image(s) without a foreground class, "
                      f"e.g. {empty[:3]}", stacklevel=2)
        names = [n for n, k in zip(names, keep) if k]
        labels = labels[keep]
    if not names:
        raise ValueError(f"{files.list_file}: no training image with a foreground class")
    return TrainDataset(files, names, labels, build_train_transform(cfg))


def build_eval_dataset(cfg: MoReConfig, split: str | None = None) -> EvalDataset:
    """The evaluation split ``split`` (default ``cfg.eval.split``), truncated to ``cfg.eval.max_images`` if > 0."""
    from more.config import num_classes
    from more.data.classes import class_names

    files, names = _split_for(cfg, split or cfg.eval.split)
    if cfg.eval.max_images > 0:
        names = names[: cfg.eval.max_images]
    C = num_classes(cfg)
    source = labels_file(cfg)
    if files.mask_dir is None and not source:
        labels = np.zeros((len(names), C), dtype=np.float32)  # unlabeled split (test)
    else:
        labels = image_labels(files, names, C, source, class_names(cfg)[1:])
    return EvalDataset(files, names, labels, cfg.eval.resize, cfg.data.mean, cfg.data.std)
