"""PASCAL VOC 2012 (+SBD) and MS COCO 2014 in the reference's VOC-style layout.

Split lists, palette masks, image-level labels (derived from masks and cached, or read from a labels file) and
the train / eval datasets. The synthetic set uses exactly the VOC layout.

Layouts (``ROOT`` = ``cfg.data.root``):

* voc / synthetic: ``JPEGImages/NAME.jpg``, ``SegmentationClassAug/NAME.png`` (else ``SegmentationClass/``),
  ``ImageSets/Segmentation/SPLIT.txt``.
* coco: ``JPEGImages/{train2014,val2014}/NAME.jpg``, ``SegmentationClass/{train2014,val2014}/NAME.png``,
  ``ImageSets/SPLIT.txt``; ``val_part`` images live in ``val2014``.

Splits whose name starts with ``test`` have no masks.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from more.data.classes import IGNORE_INDEX, VOC_PALETTE
from more.data.transforms import build_train_transform, eval_image

if TYPE_CHECKING:
    from more.config import MoReConfig

CACHE_DIR = ".more_cache"
_CACHE_VERSION = 1

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


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a (H, W) class-index mask as a VOC-palette PNG, atomically."""
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
        raise ValueError(f"{path}: expected a (H, W) array of values 0..255, got shape {arr.shape}")
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette(VOC_PALETTE.tobytes())
    _atomic_save(Path(path), lambda f: im.save(f, format="PNG"))


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


# ------------------------------------------------------------------------------------------------ layout


@dataclass(frozen=True)
class SplitFiles:
    """Where one split's list, images and masks live."""

    root: Path
    split: str
    list_file: Path
    image_dir: Path
    mask_dir: Path | None  # None: the split has no masks (test)

    def image_path(self, name: str) -> Path:
        return self.image_dir / f"{name}.jpg"

    def mask_path(self, name: str) -> Path | None:
        return None if self.mask_dir is None else self.mask_dir / f"{name}.png"


def coco_subset(split: str) -> str:
    """The image folder of a COCO split: ``val_part`` (and other val lists) -> ``val2014``."""
    if split in ("train2014", "val2014"):
        return split
    if "val" in split:
        return "val2014"
    if "train" in split:
        return "train2014"
    return split


def split_files(root: str | os.PathLike, dataset: str, split: str) -> SplitFiles:
    """The files of ``split`` under ``root`` for ``dataset`` in voc | coco | synthetic (nothing is read)."""
    root = Path(root)
    no_masks = split.startswith("test")
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


# ------------------------------------------------------------------------------------------------ labels


def labels_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Image-level labels (C,) bool: which of the classes 1..C occur in the mask (0 and 255 do not count)."""
    counts = np.bincount(mask.ravel(), minlength=256)  # (256,)
    return counts[1 : num_classes + 1] > 0


def derive_labels(files: SplitFiles, names: Sequence[str], num_classes: int, *, cache: bool = True) -> np.ndarray:
    """Labels (N, C) bool derived from the masks, cached in ``ROOT/.more_cache/labels_{split}.json``.

    The cache is keyed by image name and is rebuilt when the list file's size or mtime changes. A root that is
    not writable just skips the cache.

    Raises:
        FileNotFoundError: the split has no masks, or a listed mask is missing (named).
    """
    if files.mask_dir is None:
        raise FileNotFoundError(f"split '{files.split}' has no masks to derive image labels from; set data.labels_file")
    cache_path = files.root / CACHE_DIR / f"labels_{files.split}.json"
    stat = files.list_file.stat()
    key = {"version": _CACHE_VERSION, "list_size": stat.st_size, "list_mtime_ns": stat.st_mtime_ns,
           "mask_dir": files.mask_dir.name, "num_classes": num_classes}
    known: dict[str, list[int]] = {}
    if cache and cache_path.is_file():
        try:
            stored = json.loads(cache_path.read_text())
            if stored.get("key") == key:
                known = stored["labels"]
        except (OSError, ValueError, KeyError):
            known = {}
    missing = [n for n in dict.fromkeys(names) if n not in known]
    if missing:
        def classes_of(name: str) -> list[int]:
            path = files.mask_path(name)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: mask not found (listed in {files.list_file})")
            return (np.flatnonzero(labels_from_mask(read_mask(path), num_classes)) + 1).tolist()

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            known.update(zip(missing, pool.map(classes_of, missing)))
        if cache:
            _write_cache(cache_path, {"key": key, "labels": known})
    return _to_matrix([known[n] for n in names], num_classes)


def _write_cache(path: Path, payload: dict[str, Any]) -> None:
    try:
        _atomic_save(path, lambda f: f.write(json.dumps(payload, separators=(",", ":")).encode()))
    except OSError as exc:
        warnings.warn(f"{path}: cannot write the labels cache ({exc}); labels are recomputed next time", stacklevel=3)


def _to_matrix(class_lists: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    out = np.zeros((len(class_lists), num_classes), dtype=bool)  # (N, C)
    for i, classes in enumerate(class_lists):
        out[i, np.asarray(classes, dtype=np.int64) - 1] = True
    return out


def read_labels_file(path: str | os.PathLike, num_classes: int) -> dict[str, list[int]]:
    """Read image-level labels: JSON ``{name: [c, ...]}`` or text lines ``NAME c1 c2 ...`` with classes in 1..C.

    Raises:
        ValueError: malformed content or a class outside 1..C, naming the file and the entry.
    """
    p = Path(path)
    text = p.read_text()
    entries: dict[str, list[Any]] = {}
    if p.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{p}: not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ValueError(f"{p}: expected a JSON object mapping image name -> list of class indices")
        entries = data
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if parts:
                try:
                    entries[parts[0]] = [int(v) for v in parts[1:]]
                except ValueError:
                    raise ValueError(f"{p}:{lineno}: expected 'NAME c1 c2 ...' with integer classes") from None
    out: dict[str, list[int]] = {}
    for name, classes in entries.items():
        if not all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= num_classes for c in classes):
            raise ValueError(f"{p}: {name}: classes {classes} must be integers in 1..{num_classes}")
        out[str(name)] = classes
    return out


def image_labels(files: SplitFiles, names: Sequence[str], num_classes: int, labels_file: str = "") -> np.ndarray:
    """Labels (N, C) float32 of ``names``: from ``labels_file`` when given, else derived from the masks.

    Raises:
        ValueError: a name is missing from the labels file (the first few are named).
    """
    if not labels_file:
        return derive_labels(files, names, num_classes).astype(np.float32)
    table = read_labels_file(labels_file, num_classes)
    absent = [n for n in names if n not in table]
    if absent:
        raise ValueError(f"{labels_file}: no labels for {len(absent)} image(s) of split '{files.split}', "
                         f"e.g. {absent[:3]}")
    return _to_matrix([table[n] for n in names], num_classes).astype(np.float32)


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

    files, names = _split_for(cfg, cfg.data.train_split)
    labels = image_labels(files, names, num_classes(cfg), cfg.data.labels_file)  # (N, C)
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

    files, names = _split_for(cfg, split or cfg.eval.split)
    if cfg.eval.max_images > 0:
        names = names[: cfg.eval.max_images]
    C = num_classes(cfg)
    if files.mask_dir is None and not cfg.data.labels_file:
        labels = np.zeros((len(names), C), dtype=np.float32)  # unlabeled split (test)
    else:
        labels = image_labels(files, names, C, cfg.data.labels_file)
    return EvalDataset(files, names, labels, cfg.eval.resize, cfg.data.mean, cfg.data.std)
