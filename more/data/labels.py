"""Image-level labels: derived from masks (and cached), or read from a labels file.

Labels files (``data.labels_file``, or ``labels:`` of a ``dataset.yaml``); a class is its index 1..C or, where the
class names are known, its name:

* JSON: ``{"NAME": [c, ...], ...}``.
* CSV with a header row: a first column ``image`` (or ``name`` / ``file`` / ``filename``; a file name's folder and
  suffix are dropped) and either a ``labels`` column of classes separated by ``;`` (empty: no class), or one column
  per class name holding 1/0 (``true``/``false``, ``yes``/``no``, ``x``/empty). An optional ``split`` column is read
  by ``data prepare folder``.
* Text: lines ``NAME c1 c2 ...`` with class indices.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from more.data.description import DatasetError

if TYPE_CHECKING:
    from more.data.layout import SplitFiles

CACHE_DIR = ".more_cache"  # where older versions cached labels inside the dataset root (skipped by fingerprints)
_CACHE_VERSION = 1
NAME_COLUMNS = ("image", "name", "file", "filename")
TRUE_CELLS = ("1", "true", "yes", "x", "y")
FALSE_CELLS = ("", "0", "false", "no", "n", "-")


@dataclass(frozen=True)
class LabelRow:
    """One image's entry of a labels file: where it is, the image name, its class tokens (names or indices as
    written) and its ``split`` cell (CSV only; None when the file has no such column)."""

    where: str
    name: str
    classes: tuple[str, ...]
    split: str | None = None


def labels_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Image-level labels (C,) bool: which of the classes 1..C occur in the mask (0 and 255 do not count)."""
    counts = np.bincount(mask.ravel(), minlength=256)  # (256,)
    return counts[1 : num_classes + 1] > 0


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def image_name(value: str) -> str:
    """The image name of a cell: folders and an image suffix dropped (``imgs/a.jpg`` -> ``a``)."""
    p = Path(value.strip().replace("\\", "/"))
    return p.stem if p.suffix.lower() in IMAGE_SUFFIXES else p.name


def _csv_rows(path: Path, text: str) -> list[LabelRow]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DatasetError(f"{path}: empty CSV; expected a header row such as 'image,labels'") from None
    if not header or header[0].casefold() not in NAME_COLUMNS:
        raise DatasetError(f"{path}:1: the first column must be the image ({'/'.join(NAME_COLUMNS)}), got "
                           f"{header[0] if header else ''!r}")
    lowered = [h.casefold() for h in header]
    split_col = lowered.index("split") if "split" in lowered else None
    label_col = lowered.index("labels") if "labels" in lowered else None
    class_cols = [i for i in range(1, len(header)) if i not in (split_col, label_col)]
    if label_col is not None and class_cols:
        raise DatasetError(f"{path}:1: column {header[class_cols[0]]!r}: use either a 'labels' column or one column "
                           f"per class, not both")
    if label_col is None and not class_cols:
        raise DatasetError(f"{path}:1: no label columns: add a 'labels' column (classes separated by ';') or one "
                           f"column per class")
    rows = []
    for lineno, cells in enumerate(reader, 2):
        if not any(c.strip() for c in cells):
            continue
        where = f"{path}:{lineno}"
        if len(cells) != len(header):
            raise DatasetError(f"{where}: {len(cells)} cells, the header has {len(header)}")
        if label_col is not None:
            classes = tuple(c.strip() for c in cells[label_col].split(";") if c.strip())
        else:
            chosen = []
            for i in class_cols:
                cell = cells[i].strip().casefold()
                if cell not in TRUE_CELLS + FALSE_CELLS:
                    raise DatasetError(f"{where}: column {header[i]!r}: {cells[i]!r} is not 1/0 (true/false, yes/no)")
                if cell in TRUE_CELLS:
                    chosen.append(header[i])
            classes = tuple(chosen)
        split = cells[split_col].strip() if split_col is not None else None
        rows.append(LabelRow(where, image_name(cells[0]), classes, split))
    return rows


def read_label_rows(path: str | os.PathLike) -> list[LabelRow]:
    """The entries of a labels file as written (class tokens not yet resolved); JSON, CSV or text by content.

    Raises:
        DatasetError: malformed content, naming the file (and the line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{p}: cannot read the labels file: {exc}") from None
    if p.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DatasetError(f"{p}: not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise DatasetError(f"{p}: expected a JSON object mapping image name -> list of classes")
        rows = []
        for name, classes in data.items():
            if not all(isinstance(c, (int, str)) and not isinstance(c, bool) for c in classes):
                raise DatasetError(f"{p}: {name}: classes {classes} must be class indices or names")
            rows.append(LabelRow(f"{p}: {name}", str(name), tuple(str(c) for c in classes)))
        return rows
    if p.suffix.lower() == ".csv":
        return _csv_rows(p, text)
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if parts:
            rows.append(LabelRow(f"{p}:{lineno}", parts[0], tuple(parts[1:])))
    return rows


def resolve_classes(row: LabelRow, num_classes: int, class_names: Sequence[str] | None = None) -> list[int]:
    """The class indices 1..C of a row: integers as they are, names through ``class_names`` (foreground, C names).

    Raises:
        DatasetError: an index outside 1..C or an unknown name, naming the file and the entry.
    """
    lookup = {n: i for i, n in enumerate(class_names or (), 1)}
    out = []
    for token in row.classes:
        if token.lstrip("-").isdigit():
            index = int(token)
        elif token in lookup:
            index = lookup[token]
        else:
            known = f" (classes: {', '.join(class_names)})" if class_names else ""
            raise DatasetError(f"{row.where}: {row.name}: unknown class {token!r}; use indices 1..{num_classes}"
                               + (" or class names" if class_names else "") + known)
        if not 1 <= index <= num_classes:
            raise DatasetError(f"{row.where}: {row.name}: classes {list(row.classes)} must be in 1..{num_classes}")
        out.append(index)
    return sorted(set(out))


def read_labels_file(path: str | os.PathLike, num_classes: int,
                     class_names: Sequence[str] | None = None) -> dict[str, list[int]]:
    """Image-level labels ``{name: [class indices 1..C]}`` of a labels file (JSON, CSV or text, see the module).

    Args:
        path: the labels file.
        num_classes: C.
        class_names: the C foreground names; with them, classes may be given by name.

    Raises:
        DatasetError (a ValueError): malformed content, an image listed twice, or a class outside 1..C / unknown,
            naming the file and the entry.
    """
    out: dict[str, list[int]] = {}
    for row in read_label_rows(path):
        if row.name in out:
            raise DatasetError(f"{row.where}: image {row.name!r} is listed twice")
        out[row.name] = resolve_classes(row, num_classes, class_names)
    return out


def to_matrix(class_lists: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """Class index lists (1-based) -> (N, C) bool."""
    out = np.zeros((len(class_lists), num_classes), dtype=bool)  # (N, C)
    for i, classes in enumerate(class_lists):
        out[i, np.asarray(classes, dtype=np.int64) - 1] = True
    return out


def derive_labels(files: SplitFiles, names: Sequence[str], num_classes: int, *, cache: bool = True) -> np.ndarray:
    """Labels (N, C) bool derived from the masks, cached in the user's cache folder (:func:`labels_cache_path`),
    never inside the dataset root.

    The cache is keyed by image name and is rebuilt when the list file's size or mtime changes. A cache folder that
    is not writable just skips the cache.

    Raises:
        FileNotFoundError: the split has no masks, or a listed mask is missing (named).
    """
    from more.data.masks import read_mask

    if files.mask_dir is None:
        raise FileNotFoundError(f"split '{files.split}' has no masks to derive image labels from; set data.labels_file")
    cache_path = labels_cache_path(files)
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
    return to_matrix([known[n] for n in names], num_classes)


def labels_cache_path(files: SplitFiles) -> Path:
    """``<user cache>/labels/<digest>.json``, one file per (dataset root, mask folder, split)."""
    from more.outputs import user_cache_dir

    where = f"{Path(files.root).resolve()}\0{files.mask_dir}\0{files.split}"
    return user_cache_dir() / "labels" / f"{hashlib.sha256(where.encode()).hexdigest()[:24]}.json"


def _write_cache(path: Path, payload: dict[str, Any]) -> None:
    from more.data.masks import atomic_save

    try:
        atomic_save(path, json.dumps(payload, separators=(",", ":")).encode())
    except OSError as exc:
        warnings.warn(f"{path}: cannot write the labels cache ({exc}); labels are recomputed next time", stacklevel=3)


def image_labels(files: SplitFiles, names: Sequence[str], num_classes: int, labels_file: str | os.PathLike = "",
                 class_names: Sequence[str] | None = None) -> np.ndarray:
    """Labels (N, C) float32 of ``names``: from ``labels_file`` when given, else derived from the masks.

    Raises:
        DatasetError: a name is missing from the labels file (the first few are named).
    """
    if not labels_file:
        return derive_labels(files, names, num_classes).astype(np.float32)
    table = read_labels_file(labels_file, num_classes, class_names)
    absent = [n for n in names if n not in table]
    if absent:
        raise DatasetError(f"{labels_file}: no labels for {len(absent)} image(s) of split '{files.split}', "
                           f"e.g. {absent[:3]}")
    return to_matrix([table[n] for n in names], num_classes).astype(np.float32)
