"""``data prepare folder``: a folder of images (+ a labels CSV and/or masks) -> a dataset with its own classes.

Writes, at ``ROOT`` (never next to the images):

* ``dataset.yaml``: name, classes, the image folder (referenced where it is, by absolute path; nothing is copied
  or linked), the mask folder when given, the labels file and the split lists (:mod:`more.data.description`).
* ``labels.json``: every listed image's classes by name, from the CSV (or, without one, from its mask).
* ``splits/{train,val,...}.txt``: from the CSV's ``split`` column when it has one, else a seeded random split
  (``--val-fraction`` of the labelled images in ``val``, at least one).
* ``prepare.json``: options, counts and the content hash.

Train it with ``data.dataset=custom data.root=ROOT``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from more.data.description import (
    DESCRIPTION_FILE,
    DatasetDescription,
    DatasetError,
    check_class_names,
    parse_description,
)
from more.data.labels import IMAGE_SUFFIXES, LabelRow, labels_from_mask, read_label_rows, resolve_classes
from more.data.masks import read_mask
from more.data.prepare.common import Outcome, PrepareError, Workspace, check_out, verify, write_lists

LABELS = "labels.json"
SPLITS = "splits"


def _images(folder: Path) -> dict[str, Path]:
    """Image name -> file of the images directly in ``folder``.

    Raises:
        PrepareError: no images, or two files with the same name and different suffixes.
    """
    found: dict[str, Path] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = Path(entry.path)
        if not entry.is_file() or entry.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in found:
            raise PrepareError(f"--images {folder}: {found[path.stem].name} and {path.name} have the same name; "
                               f"image names must be unique")
        found[path.stem] = path
    if not found:
        raise PrepareError(f"--images {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return found


def _classes_from(rows: list[LabelRow], given: list[str] | None, where: str) -> tuple[str, ...]:
    names = sorted({t for r in rows for t in r.classes if not t.lstrip("-").isdigit()})
    if not given and any(t.lstrip("-").isdigit() for r in rows for t in r.classes):
        raise PrepareError(f"{where}: classes are given by index; name them with --classes a,b,c (in index order)")
    try:
        return check_class_names(given, "--classes") if given else check_class_names(names, where)
    except DatasetError as exc:
        raise PrepareError(str(exc)) from None


def prepare_folder(images: str | os.PathLike, out: str | os.PathLike, *, labels: str | os.PathLike | None = None,
                   masks: str | os.PathLike | None = None, classes: list[str] | None = None, name: str = "",
                   val_fraction: float = 0.1, seed: int = 0, force: bool = False) -> Outcome:
    """Describe a folder of images as a dataset at ``out``; see the module docstring.

    Args:
        images: the folder of images.
        out: the output root (``dataset.yaml`` and the lists go there).
        labels: a labels CSV (or JSON / text, see :mod:`more.data.labels`); classes by name or index.
        masks: a folder of class-index PNGs ``NAME.png``; without ``labels`` the labels come from them.
        classes: the class names in index order; default: the names the labels file uses, sorted.
        name: the dataset's name (default: the image folder's name).
        val_fraction: share of the labelled images in ``val`` when the labels file has no ``split`` column.
        seed: the random split's seed.
        force: write into an ``out`` holding files more did not create.

    Raises:
        PrepareError, DatasetError, OutputError: bad input, named, before anything is written.
    """
    src = Path(images).expanduser().absolute()
    if not src.is_dir():
        raise PrepareError(f"--images {src}: " + ("is a file, expected a folder" if src.exists() else "does not exist"))
    mask_dir = Path(masks).expanduser().absolute() if masks else None
    if mask_dir is not None and not mask_dir.is_dir():
        raise PrepareError(f"--masks {mask_dir}: " + ("is a file, expected a folder" if mask_dir.exists()
                                                      else "does not exist"))
    if labels is None and mask_dir is None:
        raise PrepareError("give --labels CSV (image-level labels) or --masks DIR (labels are taken from the masks)")
    if labels is None and not classes:
        raise PrepareError("--masks without --labels: name the mask values 1..C with --classes a,b,c")
    if not 0.0 <= val_fraction < 1.0:
        raise PrepareError(f"--val-fraction {val_fraction}: must be in [0, 1)")
    reads = {"--images": src, **({"--masks": mask_dir} if mask_dir else {})}
    check_out(out, reads, force=force)
    files = _images(src)
    rows = read_label_rows(labels) if labels is not None else []
    names = _classes_from(rows, classes, str(labels or "--classes"))
    C = len(names)
    table: dict[str, list[int]] = {}
    splits_given: dict[str, str] = {}
    for row in rows:
        if row.name not in files:
            raise PrepareError(f"{row.where}: image {row.name!r} is not in --images {src}")
        if row.name in table:
            raise PrepareError(f"{row.where}: image {row.name!r} is listed twice")
        table[row.name] = resolve_classes(row, C, names)
        if row.split:
            splits_given[row.name] = row.split
    if rows and splits_given and len(splits_given) != len(rows):
        missing = next(r for r in rows if not r.split)
        raise PrepareError(f"{missing.where}: {missing.name}: empty split cell (give every row a split, or none)")
    suffixes = Counter(files[n].suffix for n in (table or files))
    if len(suffixes) > 1:
        raise PrepareError(f"--images {src}: the images have several suffixes ({dict(suffixes)}); a dataset has one "
                           f"(convert the others, or keep them out of the labels file)")
    if mask_dir is not None and not table:  # labels from the masks
        for n in files:
            mask_path = mask_dir / f"{n}.png"
            if mask_path.is_file():
                table[n] = (np.flatnonzero(labels_from_mask(read_mask(mask_path), C)) + 1).tolist()
        if not table:
            raise PrepareError(f"--masks {mask_dir}: no NAME.png for any image of --images {src}")
    lists = _split(sorted(table), splits_given, val_fraction, seed)
    root = Path(out).expanduser().absolute()
    dataset_name = name or src.name
    options = {"images": str(src), "masks": str(mask_dir) if mask_dir else None,
               "labels": str(Path(labels).expanduser().absolute()) if labels else None, "classes": list(names),
               "name": dataset_name, "val_fraction": val_fraction, "seed": seed}
    desc = DatasetDescription(file=root / DESCRIPTION_FILE, name=dataset_name, classes=names, images=src,
                              image_suffix=next(iter(suffixes)), masks=mask_dir, labels=root / LABELS,
                              splits={k: root / SPLITS / f"{k}.txt" for k in lists})
    text = desc.to_yaml()
    try:  # what will be written must read back (a split or dataset name the description refuses)
        parse_description(yaml.safe_load(text), desc.file)
    except DatasetError as exc:
        raise PrepareError(f"{exc} (from the options or the labels file)") from None
    ws = Workspace(root, "folder", options, reads)
    record = ws.begin()
    counts = {k: len(v) for k, v in lists.items()}
    if record is not None:
        return verify(ws, record, counts)
    ws.clean_partial([SPLITS, "."])
    written = write_lists(ws, SPLITS, lists)
    body = {n: [names[c - 1] for c in table[n]] for n in sorted(table)}
    ws.write_file(LABELS, (json.dumps(body, indent=0, ensure_ascii=False) + "\n").encode())
    ws.write_file(DESCRIPTION_FILE, text.encode())
    unlabelled = len(files) - len(table)
    notes = ["images are referenced where they are (nothing copied or linked); train with data.dataset=custom "
             f"data.root={root}"]
    if unlabelled:
        notes.append(f"{unlabelled} image(s) in --images have no labels and are left out")
    if mask_dir is None:
        notes.append("no masks: training works from the image-level labels, but mIoU needs masks for the val split")
    digest = ws.finish({"counts": counts, "classes": list(names), "lists": written, "labels_file": LABELS,
                        "images": "referenced in place", "split_source": "labels file" if splits_given else
                        f"random, val fraction {val_fraction}, seed {seed}"},
                       hashed=[DESCRIPTION_FILE, SPLITS, LABELS], sized=[])
    return Outcome(root, f"custom dataset '{dataset_name}' ({C} classes: {', '.join(names)})", counts,
                   written=ws.written, seconds=ws.elapsed(), notes=notes, content_hash=digest)


def _split(names: list[str], given: dict[str, str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """The split lists: as the labels file says, else ``val_fraction`` of ``names`` (seeded, at least one when
    there are two or more images) in val and the rest in train; names sorted within a split."""
    if given:
        out: dict[str, list[str]] = {}
        for n in names:
            out.setdefault(given[n], []).append(n)
        return dict(sorted(out.items()))
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = max(1, round(val_fraction * len(names))) if val_fraction > 0 and len(names) >= 2 else 0
    val = {names[i] for i in order[:n_val]}
    lists = {"train": [n for n in names if n not in val]}
    if val:
        lists["val"] = sorted(val)
    return lists
