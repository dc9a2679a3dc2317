"""``data prepare coco``: MS COCO 2014 instance annotations -> class-index masks in the reference's layout.

Sources under ``--coco DIR`` (each an extracted folder or the downloaded zip beside it): ``train2014/`` (or
``train2014.zip``), ``val2014/`` (``val2014.zip``) and ``annotations/instances_{train,val}2014.json`` (or
``annotations_trainval2014.zip``).

Output at ``ROOT``:

* ``SegmentationClass/{train2014,val2014}/NAME.png``: class-index PNGs, 0 background, 1..80 the categories in
  COCO's order (sorted category ids, the reference's class list), 255 ignore.
* ``JPEGImages/{train2014,val2014}/NAME.jpg``: links to the source images (``--images link``) or copies (``copy``,
  and always out of a zip).
* ``ImageSets/{train,val,val_part}.txt``: the lists the reference reads (``--train_set train``, ``--val_set
  val_part``). ``train`` / ``val``: every image with at least one annotation, sorted by name (82,081 / 40,137 in the
  2014 release), ``train`` without images whose mask came out with no class; ``val_part``: the first 5,000 names
  of ``val`` (the reference's ``val_part.txt`` is exactly that prefix of its ``val.txt``).
* ``cls_labels.json``: the image-level labels (the classes present in each mask).
* ``prepare.json``: options, the mask rule, the category id -> class index map, counts and the content hash.

The mask rule follows the converter the authors' README names (alicranck/coco2voc, read, not copied): every
annotation is rasterised with pycocotools (polygons, compressed and uncompressed RLE), annotations are painted
smallest ``area`` first and a pixel keeps the first class painted on it (so a small object on a large one stays
visible), and crowd regions are painted like any other annotation; no void band. ``--overlap`` and ``--crowd``
choose other rules (:data:`OVERLAP_RULES`, :data:`CROWD_RULES`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from more.data.classes import COCO_CLASSES, IGNORE_INDEX
from more.data.labels import labels_from_mask
from more.data.masks import mask_png, read_mask
from more.data.prepare.common import (
    Outcome,
    PrepareError,
    Ticker,
    Workspace,
    check_out,
    compare_counts,
    run_parallel,
    verify,
    write_labels,
    write_lists,
)
from more.data.prepare.sources import Source, SourceError

SUBSETS = ("train2014", "val2014")
PUBLISHED = {"train": 82081, "val": 40137, "val_part": 5000}
VAL_PART = 5000
LABELS = "cls_labels.json"
OVERLAP_RULES = {
    "smaller-wins": "annotations painted smallest area first; a pixel keeps the first class painted on it "
                    "(coco2voc, the authors' converter)",
    "larger-wins": "annotations painted largest area first; a pixel keeps the first class painted on it",
    "void": "a pixel covered by annotations of two or more classes is 255 (ignore)",
}
CROWD_RULES = {
    "label": "crowd regions (iscrowd=1) are painted with their class like any annotation (coco2voc)",
    "void": "crowd pixels that no other annotation covers are 255 (ignore)",
    "skip": "crowd annotations are left out (their pixels stay background unless another annotation covers them)",
}


# ---------------------------------------------------------------------------------------------- sources


def _subset_source(coco: Path, subset: str) -> Source:
    folder, archive = coco / subset, coco / f"{subset}.zip"
    if folder.is_dir():
        return Source(coco, "--coco", "")
    if archive.is_file():
        return Source(archive, "--coco", "")
    raise SourceError(f"--coco {coco}: neither {subset}/ nor {subset}.zip is there")


def _read_annotations(coco: Path, subset: str) -> dict[str, Any]:
    rel = f"annotations/instances_{subset}.json"
    if (coco / rel).is_file():
        where, data = str(coco / rel), (coco / rel).read_bytes()
    elif (coco / "annotations_trainval2014.zip").is_file():
        with Source(coco / "annotations_trainval2014.zip", "--coco", "") as src:
            where, data = src.describe(rel), src.read(rel)
    else:
        raise SourceError(f"--coco {coco}: neither {rel} nor annotations_trainval2014.zip is there")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise PrepareError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations",
                                                                                     "categories")):
        raise PrepareError(f"{where}: not a COCO instances file (needs lists images, annotations, categories)")
    doc["_where"] = where
    return doc


def category_map(categories: Sequence[dict[str, Any]], where: str) -> dict[int, int]:
    """COCO category id -> class index 1..80: ids sorted, which is the order of COCO's 80 names.

    Raises:
        PrepareError: the categories are not COCO's 80 (the first difference is named).
    """
    cats = sorted(categories, key=lambda c: int(c["id"]))
    names = [str(c.get("name")) for c in cats]
    if names != list(COCO_CLASSES):
        diff = next((i for i, (a, b) in enumerate(zip(names, COCO_CLASSES)) if a != b), min(len(names), 80))
        got = names[diff] if diff < len(names) else "(none)"
        raise PrepareError(f"{where}: categories are not COCO's 80 in id order: class {diff + 1} is {got!r}, expected "
                           f"{COCO_CLASSES[diff] if diff < 80 else '(none)'!r} ({len(names)} categories)")
    return {int(c["id"]): i for i, c in enumerate(cats, 1)}


# ------------------------------------------------------------------------------------------------- masks


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 0/1 of one annotation: polygons (merged), uncompressed RLE (``counts`` a list) or compressed RLE.

    Raises:
        ValueError: a segmentation of none of these forms.
    """
    from pycocotools import mask as rle_tools

    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), dtype=np.uint8)
        rle = rle_tools.merge(rle_tools.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = rle_tools.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
        rle = segmentation
    else:
        raise ValueError(f"unknown segmentation form {type(segmentation).__name__}")
    return np.asarray(rle_tools.decode(rle), dtype=np.uint8)


def class_mask(annotations: Sequence[dict[str, Any]], height: int, width: int, cat_to_class: dict[int, int], *,
               overlap: str = "smaller-wins", crowd: str = "label") -> np.ndarray:
    """The (H, W) class-index mask of one image's annotations under the ``overlap`` and ``crowd`` rules."""
    crowd_anns = [a for a in annotations if a.get("iscrowd")]
    painted = [a for a in annotations if not a.get("iscrowd") or crowd == "label"]
    mask = np.zeros((height, width), dtype=np.uint8)  # (H, W)
    if overlap == "void":
        seen = np.zeros((height, width), dtype=np.uint8)  # the class first seen at a pixel
        clash = np.zeros((height, width), dtype=bool)
        for ann in painted:
            m = annotation_mask(ann["segmentation"], height, width).astype(bool)
            cls = cat_to_class[int(ann["category_id"])]
            clash |= m & (seen > 0) & (seen != cls)
            seen[m & (seen == 0)] = cls
        mask = np.where(clash, IGNORE_INDEX, seen).astype(np.uint8)
    else:
        # sorted() is stable: equal areas keep the file's order, as in coco2voc
        order = sorted(painted, key=lambda a: float(a.get("area", 0.0)), reverse=overlap == "larger-wins")
        for ann in order:
            m = annotation_mask(ann["segmentation"], height, width).astype(bool)
            mask[m & (mask == 0)] = cat_to_class[int(ann["category_id"])]
    if crowd == "void":
        for ann in crowd_anns:
            m = annotation_mask(ann["segmentation"], height, width).astype(bool)
            mask[m & (mask == 0)] = IGNORE_INDEX
    return mask


# -------------------------------------------------------------------------------------------------- plan


@dataclass
class CocoImage:
    """One listed image: its name, size, source file and annotations."""

    subset: str
    name: str
    file: str
    height: int
    width: int
    annotations: list[dict[str, Any]]


def plan_subset(doc: dict[str, Any], subset: str) -> list[CocoImage]:
    """The images of ``subset`` with at least one annotation, sorted by name (coco2voc skips the others)."""
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in doc["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(
            {k: ann[k] for k in ("segmentation", "area", "iscrowd", "category_id") if k in ann})
    out = []
    for img in doc["images"]:
        anns = by_image.get(int(img["id"]))
        if anns:
            file = str(img["file_name"])
            out.append(CocoImage(subset, Path(file).stem, file, int(img["height"]), int(img["width"]), anns))
    return sorted(out, key=lambda i: i.name)


# ----------------------------------------------------------------------------------------------- prepare


def prepare_coco(coco: str | os.PathLike, out: str | os.PathLike, *, overlap: str = "smaller-wins",
                 crowd: str = "label", images: str = "link", force: bool = False, workers: int = 0) -> Outcome:
    """Build (or finish, or verify) the COCO 2014 tree at ``out``; see the module docstring.

    Raises:
        SourceError, PrepareError, OutputError: a bad source or option, or an ``out`` that may not be written; all
            before anything is written.
    """
    if overlap not in OVERLAP_RULES:
        raise PrepareError(f"--overlap {overlap!r}: choose {', '.join(OVERLAP_RULES)}")
    if crowd not in CROWD_RULES:
        raise PrepareError(f"--crowd {crowd!r}: choose {', '.join(CROWD_RULES)}")
    if images not in ("link", "copy"):
        raise PrepareError(f"--images {images!r}: choose link or copy")
    root = Path(coco).expanduser().absolute()
    if not root.is_dir():
        raise SourceError(f"--coco {root}: " + ("is a file, expected the folder holding train2014/, val2014/ and "
                                                "annotations/" if root.exists() else "does not exist"))
    check_out(out, {"--coco": root}, force=force)
    sources = {s: _subset_source(root, s) for s in SUBSETS}
    try:
        cat_map: dict[int, int] = {}
        work = {}
        for subset in SUBSETS:  # one instances file in memory at a time; the plan keeps only what masks need
            doc = _read_annotations(root, subset)
            found = category_map(doc["categories"], doc["_where"])
            if cat_map and found != cat_map:
                raise PrepareError(f"{doc['_where']}: category ids differ from those of {SUBSETS[0]}")
            cat_map = found
            try:
                work[subset] = plan_subset(doc, subset)
            except (KeyError, TypeError, ValueError) as exc:
                raise PrepareError(f"{doc['_where']}: malformed image or annotation entry ({type(exc).__name__}: "
                                   f"{exc})") from None
            del doc
        _check_images(sources, work)
        ws = Workspace(out, "coco", {"overlap": overlap, "crowd": crowd, "images": images}, {"--coco": root})
        counts = {"train": len(work["train2014"]), "val": len(work["val2014"]),
                  "val_part": min(VAL_PART, len(work["val2014"]))}
        record = ws.begin()
        if record is not None:
            return verify(ws, record, counts)
        return _build(ws, sources, work, cat_map, overlap, crowd, images, workers or min(8, os.cpu_count() or 1))
    finally:
        for src in sources.values():
            src.close()


def _check_images(sources: dict[str, Source], work: dict[str, list[CocoImage]]) -> None:
    for subset, items in work.items():
        src = sources[subset]
        present = {f"{subset}/{n}" for n in src.listdir(subset)}
        missing = [i.file for i in items if f"{subset}/{i.file}" not in present]
        if missing:
            raise PrepareError(f"{src.describe(subset)}: {len(missing)} annotated image(s) missing, e.g. "
                               f"{missing[:3]}")


def _build(ws: Workspace, sources: dict[str, Source], work: dict[str, list[CocoImage]], cat_map: dict[int, int],
           overlap: str, crowd: str, images: str, workers: int) -> Outcome:
    placed = {s: "copy" if images == "copy" or sources[s].archive else "link" for s in SUBSETS}
    ws.clean_partial([*(f"{top}/{s}" for top in ("SegmentationClass", "JPEGImages") for s in SUBSETS), "ImageSets",
                      "."])
    labels: dict[str, list[int]] = {}
    everything = [img for s in SUBSETS for img in work[s]]
    todo_images = [i for i in everything if not ws.exists(f"JPEGImages/{i.subset}/{i.name}.jpg")]
    ticker = Ticker(len(everything) + len(todo_images), "prepare coco")

    ws.skipped = sum(ws.exists(f"SegmentationClass/{i.subset}/{i.name}.png") for i in everything)
    ws.skipped += len(everything) - len(todo_images)

    def make_mask(img: CocoImage) -> None:
        rel = f"SegmentationClass/{img.subset}/{img.name}.png"
        if ws.exists(rel):  # written by an earlier run: only its labels are needed
            mask = read_mask(ws.root / rel)
        else:
            try:
                mask = class_mask(img.annotations, img.height, img.width, cat_map, overlap=overlap, crowd=crowd)
            except (ValueError, TypeError, KeyError) as exc:
                raise PrepareError(f"{img.subset} {img.file}: cannot rasterise its annotations: {exc}") from None
            ws.write_file(rel, mask_png(mask, rel))
        labels[img.name] = (np.flatnonzero(labels_from_mask(mask, len(COCO_CLASSES))) + 1).tolist()

    run_parallel(everything, make_mask, ticker, workers=workers)

    def image_items() -> Iterator[tuple[CocoImage, bytes | None]]:
        for subset in SUBSETS:
            src, items = sources[subset], [i for i in todo_images if i.subset == subset]
            if placed[subset] == "link":
                yield from ((i, None) for i in items)
            else:
                by_rel = {f"{subset}/{i.file}": i for i in items}
                for rel, data in src.read_many(by_rel):
                    yield by_rel[rel], data

    def place(item: tuple[CocoImage, bytes | None]) -> None:
        img, data = item
        rel = f"JPEGImages/{img.subset}/{img.name}.jpg"
        local = sources[img.subset].local_path(f"{img.subset}/{img.file}")
        if data is None and local is not None:
            ws.link_file(rel, local)
        else:
            ws.write_file(rel, data if data is not None else sources[img.subset].read(f"{img.subset}/{img.file}"))

    run_parallel(image_items(), place, ticker, workers=workers)
    ticker.close()
    train = [i.name for i in work["train2014"] if labels[i.name]]
    val = [i.name for i in work["val2014"]]
    lists = {"train": train, "val": val, "val_part": val[:VAL_PART]}
    counts = {k: len(v) for k, v in lists.items()}
    check = compare_counts(counts, PUBLISHED, "COCO 2014 (images with at least one annotation)")
    notes = [f"mask rule: {OVERLAP_RULES[overlap]}; {CROWD_RULES[crowd]}",
             "images: " + ", ".join(f"{s} {'linked to' if m == 'link' else 'copied from'} the source"
                                    for s, m in placed.items())]
    dropped = len(work["train2014"]) - len(train)
    if dropped:
        notes.append(f"{dropped} annotated train image(s) left out of train: their mask has no class")
    if images == "link" and "copy" in placed.values():
        notes.append("images inside a zip were copied out of it (links need the extracted folders)")
    written = write_lists(ws, "ImageSets", lists)
    write_labels(ws, LABELS, {n: labels[n] for names in lists.values() for n in names})
    names = {i: n for i, n in enumerate(COCO_CLASSES, 1)}
    digest = ws.finish({"counts": counts, "published": PUBLISHED, "count_check": check,
                        "mask_rule": {"overlap": overlap, "crowd": crowd, "overlap_rule": OVERLAP_RULES[overlap],
                                      "crowd_rule": CROWD_RULES[crowd], "void_band": False},
                        "category_map": {str(cid): [idx, names[idx]] for cid, idx in sorted(cat_map.items())},
                        "train_without_class": dropped, "images": placed, "labels_file": LABELS, "lists": written},
                       hashed=["SegmentationClass", "ImageSets", LABELS], sized=["JPEGImages"])
    return Outcome(ws.root, "coco", counts, check, ws.written, ws.skipped, ws.elapsed(), notes=notes,
                   content_hash=digest)


__all__ = ["CROWD_RULES", "OVERLAP_RULES", "PUBLISHED", "annotation_mask", "category_map", "class_mask",
           "plan_subset", "prepare_coco"]
