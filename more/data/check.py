"""Dataset checker (``python -m more data check``): finds every problem in a VOC / COCO / synthetic tree.

Every image and mask is actually decoded, so truncated files are caught before a training run hits them.
Each message starts with the file (or folder) it is about.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from more.data.classes import IGNORE_INDEX
from more.data.synth import META_FILE
from more.data.voc import SplitFiles, read_mask, read_split, split_files

VOC_SPLITS = ("train_aug", "train", "val", "test")
COCO_SPLITS = ("train2014", "val2014", "val_part")


@dataclass
class CheckReport:
    """Problems found (empty = OK) and the number of listed images per split."""

    root: Path
    num_classes: int
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def dataset_num_classes(root: str | os.PathLike, dataset: str) -> int:
    """C of a tree: from a generated set's ``synth.json``, else 80 for coco and 20 for voc."""
    meta = Path(root) / META_FILE
    if meta.is_file():
        try:
            return int(json.loads(meta.read_text())["classes"])
        except (ValueError, KeyError, TypeError):
            pass
    return 80 if dataset == "coco" else 20


def _default_splits(root: Path, dataset: str, problems: list[str]) -> list[str]:
    """The splits present; a missing training or validation list is a problem."""
    if dataset == "coco":
        required, optional = ["train2014", "val2014"], ["val_part"]
        present = [s for s in optional if split_files(root, dataset, s).list_file.is_file()]
        return required + present
    lists = root / "ImageSets" / "Segmentation"
    present = [s for s in VOC_SPLITS if (lists / f"{s}.txt").is_file()]
    if lists.is_dir() and not {"train_aug", "train"} & set(present):
        problems.append(f"{lists}: list file missing: train_aug.txt or train.txt")
    if lists.is_dir() and "val" not in present:
        problems.append(f"{lists / 'val.txt'}: list file missing")
    return present


def _check_item(files: SplitFiles, name: str, num_classes: int, training: bool) -> list[str]:
    """Problems of one listed image (and its mask)."""
    image_path = files.image_path(name)
    out: list[str] = []
    size = None
    if not image_path.is_file():
        out.append(f"{image_path}: image missing (listed in {files.list_file})")
    else:
        try:
            with Image.open(image_path) as im:
                im.load()  # decodes everything: truncated or corrupt files fail here
                size = im.size
        except (OSError, ValueError, SyntaxError) as exc:
            out.append(f"{image_path}: unreadable image: {exc}")
    mask_path = files.mask_path(name)
    if mask_path is None:
        return out
    if not mask_path.is_file():
        return [*out, f"{mask_path}: mask missing (listed in {files.list_file})"]
    try:
        mask = read_mask(mask_path)
    except (OSError, ValueError, SyntaxError) as exc:
        return [*out, f"{mask_path}: unreadable mask: {exc}"]
    if size is not None and (mask.shape[1], mask.shape[0]) != size:
        out.append(f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image {image_path} "
                   f"{size[0]}x{size[1]}")
    counts = np.bincount(mask.ravel(), minlength=256)  # (256,)
    values = np.flatnonzero(counts)
    bad = values[(values > num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        out.append(f"{mask_path}: mask values {bad.tolist()} outside 0..{num_classes} and {IGNORE_INDEX}")
    if training and not counts[1 : num_classes + 1].any():
        out.append(f"{mask_path}: training image {name} (split {files.split}) has no foreground class")
    return out


def inspect_dataset(root: str | os.PathLike, dataset: str = "voc", splits: Sequence[str] | None = None,
                    num_classes: int | None = None, *, workers: int = 0) -> CheckReport:
    """Check a dataset tree; see :func:`check_dataset`. Also counts the listed images per split."""
    root = Path(root)
    C = num_classes if num_classes is not None else dataset_num_classes(root, dataset)
    report = CheckReport(root, C)
    problems = report.problems
    if not root.is_dir():
        problems.append(f"{root}: dataset folder missing")
        return report
    wanted = list(splits) if splits else _default_splits(root, dataset, problems)
    layouts = [split_files(root, dataset, s) for s in wanted]
    folders = {f.list_file.parent for f in layouts} | {f.image_dir for f in layouts}
    folders |= {f.mask_dir for f in layouts if f.mask_dir is not None}
    if dataset != "coco":
        folders |= {root / "JPEGImages", root / "ImageSets" / "Segmentation"}
    missing = sorted(str(d) for d in folders if not d.is_dir())
    problems.extend(f"{d}: folder missing" for d in missing)

    jobs: dict[tuple[Path, Path | None, bool], tuple[SplitFiles, str]] = {}
    for files in layouts:
        if not files.list_file.is_file():
            if str(files.list_file.parent) not in missing:
                problems.append(f"{files.list_file}: list file missing")
            continue
        names = read_split(files.list_file)
        report.counts[files.split] = len(names)
        if not names:
            problems.append(f"{files.list_file}: list file is empty")
        training = files.split.startswith("train")
        for name in names:  # an image listed in several splits is checked once (twice if training in one)
            jobs.setdefault((files.image_path(name), files.mask_path(name), training), (files, name))
    if missing:  # every listed file would be reported again under a missing folder
        prefixes = tuple(d + os.sep for d in missing)
        jobs = {k: v for k, v in jobs.items() if not any(str(p).startswith(prefixes) for p in k[:2] if p)}
    seen = set(problems)
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for found in pool.map(lambda job: _check_item(job[1][0], job[1][1], C, job[0][2]), jobs.items()):
            fresh = [p for p in found if p not in seen]
            seen.update(fresh)
            problems.extend(fresh)
    return report


def check_dataset(root: str | os.PathLike, dataset: str = "voc", splits: Sequence[str] | None = None,
                  num_classes: int | None = None) -> list[str]:
    """Every problem of a dataset tree; an empty list means it is usable.

    Reports missing folders and list files, listed images that are missing, unreadable or truncated images and
    masks (everything is decoded), masks whose size differs from their image, mask values outside {0..C, 255}
    and training-split images without a foreground class. Each message names the file.

    Args:
        root: the dataset root.
        dataset: voc | coco | synthetic (synthetic has the voc layout).
        splits: the splits to check; None = the standard ones present (a missing train or val list is a problem).
        num_classes: C; None = from ``synth.json`` of a generated set, else 20 (voc) or 80 (coco).
    """
    return inspect_dataset(root, dataset, splits, num_classes).problems

