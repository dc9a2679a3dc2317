"""Dataset checker (``python -m more data check``): finds every problem in a VOC / COCO / described (custom,
synthetic) tree and counts, per split, images, masks, labelled images, classes present and label statistics.

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

from more.data.classes import IGNORE_INDEX, tree_class_names
from more.data.description import DESCRIPTION_FILE, DatasetError, read_description
from more.data.labels import read_labels_file
from more.data.layout import SplitFiles, described, read_split, split_files
from more.data.masks import read_mask
from more.data.synth import META_FILE

VOC_SPLITS = ("train_aug", "train", "val", "test")
COCO_SPLITS = ("train", "val", "val_part", "train2014", "val2014")  # the reference's lists, then the older names
PREPARE_FILE = "prepare.json"  # more.data.prepare.common.PREPARE_FILE (not imported: it pulls in the writers)


@dataclass
class SplitStats:
    """What one split holds: listed images, readable masks, images with image-level labels (from the labels file
    when the dataset has one, else from the masks), images per class and ignored mask pixels."""

    images: int = 0
    masks: int = 0
    labelled: int = 0
    without_class: int = 0
    class_images: np.ndarray | None = None  # (C,) images containing each class
    ignored_pixels: int = 0
    mask_pixels: int = 0


@dataclass
class CheckReport:
    """Problems found (empty = OK), the number of listed images per split and their statistics."""

    root: Path
    num_classes: int
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    dataset: str = "voc"
    class_names: list[str] = field(default_factory=list)  # C+1, background first
    stats: dict[str, SplitStats] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def detect_dataset(root: str | os.PathLike) -> str:
    """The layout of a tree: ``dataset.yaml`` -> custom (synthetic with ``synth.json``), a ``prepare.json``'s
    dataset, ``ImageSets/Segmentation`` -> voc, COCO's subset folders -> coco; voc when nothing says otherwise."""
    root = Path(root)
    if (root / DESCRIPTION_FILE).is_file():
        return "synthetic" if (root / META_FILE).is_file() else "custom"
    try:
        recorded = json.loads((root / PREPARE_FILE).read_text()).get("dataset")
        if recorded in ("voc", "coco"):
            return recorded
    except (OSError, ValueError, AttributeError):
        pass
    if (root / "ImageSets" / "Segmentation").is_dir():
        return "voc"
    if (root / "JPEGImages" / "train2014").is_dir() or (root / "JPEGImages" / "val2014").is_dir():
        return "coco"
    return "voc"


def dataset_num_classes(root: str | os.PathLike, dataset: str) -> int:
    """C of a tree: a described set's class list, a generated set's ``synth.json``, else coco's or voc's."""
    return len(tree_class_names(root, dataset)) - 1


def _default_splits(root: Path, dataset: str, problems: list[str]) -> list[str]:
    """The splits present; a missing training or validation list is a problem."""
    if described(root, dataset):
        return list(read_description(root).splits)
    if dataset == "coco":
        present = [s for s in COCO_SPLITS if split_files(root, dataset, s).list_file.is_file()]
        if not present:
            problems.append(f"{root / 'ImageSets'}: list files missing: train.txt and val.txt (or train2014.txt and "
                            f"val2014.txt)")
        elif not {"train", "train2014"} & set(present):
            problems.append(f"{root / 'ImageSets' / 'train.txt'}: list file missing")
        elif not {"val", "val2014", "val_part"} & set(present):
            problems.append(f"{root / 'ImageSets' / 'val.txt'}: list file missing")
        return present
    lists = root / "ImageSets" / "Segmentation"
    present = [s for s in VOC_SPLITS if (lists / f"{s}.txt").is_file()]
    if lists.is_dir() and not {"train_aug", "train"} & set(present):
        problems.append(f"{lists}: list file missing: train_aug.txt or train.txt")
    if lists.is_dir() and "val" not in present:
        problems.append(f"{lists / 'val.txt'}: list file missing")
    return present


@dataclass
class _Item:
    """What checking one listed image found."""

    problems: list[str]
    mask_classes: list[int] | None = None  # classes in its readable mask, None without one
    ignored: int = 0
    pixels: int = 0


def _check_item(files: SplitFiles, name: str, num_classes: int, training: bool, mask_optional: bool) -> _Item:
    """Problems of one listed image (and its mask); a missing mask is fine when labels come from a file."""
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
        return _Item(out)
    if not mask_path.is_file():
        return _Item(out if mask_optional else [*out, f"{mask_path}: mask missing (listed in {files.list_file})"])
    try:
        mask = read_mask(mask_path)
    except (OSError, ValueError, SyntaxError) as exc:
        return _Item([*out, f"{mask_path}: unreadable mask: {exc}"])
    if size is not None and (mask.shape[1], mask.shape[0]) != size:
        out.append(f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image {image_path} "
                   f"{size[0]}x{size[1]}")
    counts = np.bincount(mask.ravel(), minlength=256)  # (256,)
    values = np.flatnonzero(counts)
    bad = values[(values > num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        out.append(f"{mask_path}: mask values {bad.tolist()} outside 0..{num_classes} and {IGNORE_INDEX}")
    present = (np.flatnonzero(counts[1 : num_classes + 1]) + 1).tolist()
    if training and not present and not mask_optional:
        out.append(f"{mask_path}: training image {name} (split {files.split}) has no foreground class")
    return _Item(out, present, int(counts[IGNORE_INDEX]), int(mask.size))


def _labels_table(root: Path, dataset: str, C: int, names: list[str], problems: list[str]) -> dict[str, list[int]]:
    """A described dataset's labels file (``labels:``) as ``{name: classes}``; empty without one."""
    if not described(root, dataset):
        return {}
    desc = read_description(root)
    if desc.labels is None:
        return {}
    if not desc.labels.is_file():
        problems.append(f"{desc.labels}: labels file missing (named in {desc.file})")
        return {}
    try:
        return read_labels_file(desc.labels, C, names[1:])
    except DatasetError as exc:
        problems.append(str(exc))
        return {}


def inspect_dataset(root: str | os.PathLike, dataset: str = "voc", splits: Sequence[str] | None = None,
                    num_classes: int | None = None, *, workers: int = 0) -> CheckReport:
    """Check a dataset tree (see :func:`check_dataset`); also counts and describes the listed images per split."""
    root = Path(root)
    report = CheckReport(root, num_classes or 0, dataset=dataset)
    problems = report.problems
    if not root.is_dir():
        problems.append(f"{root}: dataset folder missing")
        return report
    try:
        C = num_classes if num_classes is not None else dataset_num_classes(root, dataset)
        report.num_classes, report.class_names = C, tree_class_names(root, dataset, C)
        wanted = list(splits) if splits else _default_splits(root, dataset, problems)
        layouts = [split_files(root, dataset, s) for s in wanted]
    except DatasetError as exc:
        problems.append(str(exc))
        return report
    table = _labels_table(root, dataset, C, report.class_names, problems)
    has_table = bool(table) or (described(root, dataset) and read_description(root).labels is not None)
    folders = {f.list_file.parent for f in layouts} | {f.image_dir for f in layouts}
    folders |= {f.mask_dir for f in layouts if f.mask_dir is not None and not has_table}
    if dataset in ("voc",) or (dataset == "synthetic" and not described(root, dataset)):
        folders |= {root / "JPEGImages", root / "ImageSets" / "Segmentation"}
    missing = sorted(str(d) for d in folders if not d.is_dir())
    problems.extend(f"{d}: folder missing" for d in missing)

    jobs: dict[tuple[Path, Path | None, bool], tuple[SplitFiles, str]] = {}
    per_split: dict[str, list[tuple[Path, Path | None, bool]]] = {}
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
        keys = per_split.setdefault(files.split, [])
        for name in names:  # an image listed in several splits is checked once (twice if training in one)
            key = (files.image_path(name), files.mask_path(name), training)
            jobs.setdefault(key, (files, name))
            keys.append(key)
    if missing:  # every listed file would be reported again under a missing folder
        prefixes = tuple(d + os.sep for d in missing)
        jobs = {k: v for k, v in jobs.items() if not any(str(p).startswith(prefixes) for p in k[:2] if p)}
    seen = set(problems)
    found: dict[tuple[Path, Path | None, bool], _Item] = {}
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        items = pool.map(lambda job: _check_item(job[1][0], job[1][1], C, job[0][2], has_table), jobs.items())
        for key, item in zip(jobs, items):
            found[key] = item
            fresh = [p for p in item.problems if p not in seen]
            seen.update(fresh)
            problems.extend(fresh)
    for layout in layouts:
        if layout.split in per_split:
            report.stats[layout.split] = _split_stats(per_split[layout.split], found, table, has_table, C,
                                                      layout, problems)
    return report


def _split_stats(keys: list[tuple[Path, Path | None, bool]], found: dict, table: dict[str, list[int]],
                 has_table: bool, C: int, files: SplitFiles, problems: list[str]) -> SplitStats:
    stats = SplitStats(images=len(keys), class_images=np.zeros(C, dtype=np.int64))
    absent = []
    for key in keys:
        item = found.get(key)
        name = key[0].name[: -len(files.image_suffix)]
        if item is not None and item.mask_classes is not None:
            stats.masks += 1
            stats.ignored_pixels += item.ignored
            stats.mask_pixels += item.pixels
        classes = table.get(name) if has_table else (item.mask_classes if item is not None else None)
        if has_table and classes is None:
            absent.append(name)
        if classes is None:
            continue
        stats.labelled += 1
        stats.without_class += not classes
        stats.class_images[np.asarray(classes, dtype=np.int64) - 1] += 1
    if absent and not files.split.startswith("test"):  # training and evaluation both read every listed image's
        problems.append(f"{files.list_file}: {len(absent)} image(s) without labels in the labels file, "
                        f"e.g. {absent[:3]}")
    if has_table and files.split.startswith("train") and stats.without_class:
        problems.append(f"{files.list_file}: {stats.without_class} training image(s) whose labels name no class")
    return stats


def format_statistics(report: CheckReport) -> str:
    """Per split: images, masks, labelled images (and those without a class), classes present, labels per image,
    images per class (min and max) and the share of ignored mask pixels, as an aligned table."""
    names = report.class_names[1:]
    header = ["split", "images", "masks", "labelled", "no class", "classes", "labels/img", "imgs/class min..max",
              "ignored px"]
    rows, notes = [], []
    for split, s in report.stats.items():
        ci = s.class_images if s.class_images is not None else np.zeros(len(names), dtype=np.int64)
        present = int((ci > 0).sum())
        per_image = f"{ci.sum() / s.labelled:.2f}" if s.labelled else "-"
        spread = (f"{ci.min()} ({names[int(ci.argmin())]})..{ci.max()} ({names[int(ci.argmax())]})"
                  if s.labelled and len(names) else "-")
        ignored = f"{100 * s.ignored_pixels / s.mask_pixels:.1f}%" if s.mask_pixels else "-"
        rows.append([split, str(s.images), str(s.masks), str(s.labelled), str(s.without_class),
                     f"{present}/{len(names)}" if s.labelled else "-", per_image, spread, ignored])
        absent = [n for n, c in zip(names, ci) if c == 0]
        if s.labelled and absent:
            shown = ", ".join(absent[:8]) + (f", +{len(absent) - 8} more" if len(absent) > 8 else "")
            notes.append(f"  {split}: no image of {shown}")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"{report.root} ({report.dataset}, {report.num_classes} classes)"]
    lines += ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
              for r in [header, *rows]]
    return "\n".join(lines + notes)


def check_dataset(root: str | os.PathLike, dataset: str = "voc", splits: Sequence[str] | None = None,
                  num_classes: int | None = None) -> list[str]:
    """Every problem of a dataset tree; an empty list means it is usable.

    Reports missing folders and list files, listed images that are missing, unreadable or truncated images and
    masks (everything is decoded), masks whose size differs from their image, mask values outside {0..C, 255}
    and training-split images without a foreground class; for a described dataset with a labels file, masks are
    optional and the labels file's problems are reported instead. Each message names the file.

    Args:
        root: the dataset root.
        dataset: voc | coco | synthetic | custom (see :func:`detect_dataset`).
        splits: the splits to check; None = the standard ones present (a missing train or val list is a problem).
        num_classes: C; None = from the dataset (its ``dataset.yaml`` or ``synth.json``), else 20 (voc) or 80 (coco).
    """
    return inspect_dataset(root, dataset, splits, num_classes).problems
