"""Dataset layouts (PASCAL VOC 2012 (+SBD), MS COCO 2014 in the reference's VOC-style layout, and datasets described
by a ``dataset.yaml``), palette masks and the train / eval datasets.

Layouts (``ROOT`` = ``cfg.data.root``):

* voc: ``JPEGImages/NAME.jpg``, ``SegmentationClassAug/NAME.png`` (else ``SegmentationClass/``),
  ``ImageSets/Segmentation/SPLIT.txt``.
* coco: ``JPEGImages/{train2014,val2014}/NAME.jpg``, ``SegmentationClass/{train2014,val2014}/NAME.png``,
  ``ImageSets/SPLIT.txt``; the images of ``val`` and ``val_part`` live in ``val2014``, those of ``train`` in
  ``train2014``.
* custom, and synthetic: wherever ``ROOT/dataset.yaml`` says (:mod:`more.data.description`); a synthetic set
  generated before the generator wrote that file has the voc layout.

Splits whose name starts with ``test`` have no masks. Image-level labels: :mod:`more.data.labels`.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from more.data.classes import IGNORE_INDEX, VOC_PALETTE
from more.data.description import has_description, read_description
from more.data.labels import CACHE_DIR, derive_labels, image_labels, labels_from_mask, read_labels_file
from more.data.transforms import build_train_transform, eval_image

if TYPE_CHECKING:
    from more.config import MoReConfig

__all__ = ["CACHE_DIR", "EvalDataset", "SplitFiles", "TrainDataset", "atomic_save", "build_eval_dataset",
           "build_train_dataset", "coco_subset", "collate_eval", "derive_labels", "image_labels", "labels_from_mask",
           "mask_png", "read_labels_file", "read_mask", "read_split", "split_files", "write_mask"]

# ------------------------------------------------------------------------------------------------- masks


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a class-index mask (palette "P" or grey "L" PNG) as a (H, W) uint8 array.

    Raises:
        ValueError: the file holds a colour (RGB) image rather than class indices.
    """
    with Image.open(path) as im:
        im.load()
        if im.mode not in ("P", "L"):
            raise ValueError(f"{path}: mask must be a palette or greyscale PNG of class indices, not mode {im.mode}")
        return np.array(im, dtype=np.uint8)


def mask_png(mask: np.ndarray, where: str | os.PathLike = "mask") -> bytes:
    """A (H, W) class-index mask encoded as a VOC-palette PNG."""
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
        raise ValueError(f"{where}: expected a (H, W) array of values 0..255, got shape {arr.shape}")
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette(VOC_PALETTE.tobytes())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a (H, W) class-index mask as a VOC-palette PNG, atomically."""
    atomic_save(Path(path), mask_png(mask, path))


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _umask()
FILE_MODE = 0o666 & ~_UMASK  # what open() gives; mkstemp's files are private (0o600)
DIR_MODE = 0o777 & ~_UMASK  # what mkdir() gives; mkdtemp's folders are private (0o700)


def _atomic_save(path: Path, write: Callable[[Any], None]) -> None:
    """Write through ``write(binary_file)`` to a temporary sibling, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary sibling of ``path`` (with the permissions open() would give), then rename it."""
    _atomic_save(Path(path), lambda f: f.write(data))


# ------------------------------------------------------------------------------------------------ layout


@dataclass(frozen=True)
class SplitFiles:
    """Where one split's list, images and masks live."""

    root: Path
    split: str
    list_file: Path
    image_dir: Path
    mask_dir: Path | None  # None: the split has no masks (test)
    image_suffix: str = ".jpg"

    def image_path(self, name: str) -> Path:
        return self.image_dir / f"{name}{self.image_suffix}"

    def mask_path(self, name: str) -> Path | None:
        return None if self.mask_dir is None else self.mask_dir / f"{name}.png"


def coco_subset(split: str) -> str:
    """The image folder of a COCO split: ``val``, ``val_part`` (and other val lists) -> ``val2014``; ``train`` ->
    ``train2014``."""
    if split in ("train2014", "val2014"):
        return split
    if "val" in split:
        return "val2014"
    if "train" in split:
        return "train2014"
    return split


def described(root: str | os.PathLike, dataset: str) -> bool:
    """True when ``dataset`` at ``root`` is read through its ``dataset.yaml`` (always for custom; for synthetic when
    the generator wrote one)."""
    return dataset == "custom" or (dataset == "synthetic" and has_description(root))


def split_files(root: str | os.PathLike, dataset: str, split: str) -> SplitFiles:
    """The files of ``split`` under ``root`` for ``dataset`` in voc | coco | synthetic | custom (only a
    ``dataset.yaml`` is read).

    Raises:
        DatasetError: a custom dataset without a valid description, or a split it does not list.
    """
    root = Path(root)
    no_masks = split.startswith("test")
    if described(root, dataset):
        desc = read_description(root)
        return SplitFiles(desc.root, split, desc.list_file(split), desc.images,
                          desc.masks if desc.has_masks(split) else None, desc.image_suffix)
    if dataset == "coco":
        subset = coco_subset(split)
        return SplitFiles(root, split, root / "ImageSets" / f"{split}.txt", root / "JPEGImages" / subset,
                          None if no_masks else root / "SegmentationClass" / subset)
    aug = root / "SegmentationClassAug"
    mask_dir = aug if aug.is_dir() else root / "SegmentationClass"
    return SplitFiles(root, split, root / "ImageSets" / "Segmentation" / f"{split}.txt", root / "JPEGImages",
                      None if no_masks else mask_dir)


def read_split(list_file: str | os.PathLike) -> list[str]:
    """Image names of a split list, in file order.

    Accepts one name per line (``2007_000032``) and the DeepLab form ``/JPEGImages/X.jpg /SegmentationClassAug/X.png``.

    Raises:
        FileNotFoundError: naming the missing list file.
    """
    path = Path(list_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split list file not found")
    names = []
    for line in path.read_text().splitlines():
        token = line.strip().split()[0] if line.strip() else ""
        if token:
            names.append(Path(token).stem)
    return names


def labels_file(cfg: MoReConfig) -> str:
    """The labels file a run reads: ``data.labels_file``, else a described dataset's ``labels:``, else "" (derive
    the labels from the masks)."""
    if cfg.data.labels_file:
        return cfg.data.labels_file
    if described(cfg.data.root, cfg.data.dataset):
        desc = read_description(cfg.data.root)
        return str(desc.labels) if desc.labels is not None else ""
    return ""


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
