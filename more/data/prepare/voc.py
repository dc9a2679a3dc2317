"""``data prepare voc``: PASCAL VOC 2012 + SBD -> the ``train_aug`` tree every WSSS codebase trains on.

Sources (extracted folders or the downloaded archives themselves): ``VOCtrainval_11-May-2012.tar`` (``VOC2012/``
with ``JPEGImages``, ``SegmentationClass``, ``ImageSets/Segmentation/{train,val}.txt``) and SBD's ``benchmark.tgz``
(``benchmark_RELEASE/dataset/`` with ``cls/NAME.mat`` and ``{train,val}.txt``).

Output at ``ROOT``:

* ``SegmentationClassAug/NAME.png`` for every image of ``train_aug`` and ``val``: **VOC's own**
  ``SegmentationClass`` PNG (its bytes as released, with the 255 void band along object borders) wherever VOC 2012
  has one, and SBD's class segmentation (``GTcls.Segmentation``, no void band) otherwise. VOC wins where both
  have a mask: its annotation is the finer one, and the val masks must be VOC's.
* ``ImageSets/Segmentation/{train_aug,train,val}.txt``: ``train_aug`` = VOC train ∪ SBD train ∪ SBD val − VOC
  val (10,582 images), ``train`` = VOC train (1,464), ``val`` = VOC val (1,449), sorted; checked against those
  published counts.
* ``JPEGImages/NAME.jpg``: symbolic links to the VOC images (``--images link``) or copies (``--images copy``, and
  always when the source is an archive).
* ``cls_labels.json``: the image-level labels of every listed image, from its mask (``data.labels_file`` reads it).
* ``prepare.json``: options, counts against the published ones, the mask rule and the content hash.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from more.data.classes import IGNORE_INDEX, VOC_CLASSES
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

PUBLISHED = {"train_aug": 10582, "train": 1464, "val": 1449}
LISTS = "ImageSets/Segmentation"
MASKS = "SegmentationClassAug"
IMAGES = "JPEGImages"
LABELS = "cls_labels.json"
MASK_RULE = ("SegmentationClassAug: VOC 2012's SegmentationClass PNG (bytes as released, 255 void borders) where VOC "
             "has one; SBD's GTcls.Segmentation (no void border) otherwise; VOC wins where both have a mask")


def open_sources(voc: str | os.PathLike, sbd: str | os.PathLike) -> tuple[Source, Source]:
    """The two releases, found inside the folders or archives given.

    Raises:
        SourceError: a source is missing or is not the release it should be.
    """
    voc_src = Source(voc, "--voc", "ImageSets/Segmentation/train.txt",
                     beside=("ImageSets/Segmentation/val.txt", "JPEGImages/", "SegmentationClass/"))
    try:
        sbd_src = Source(sbd, "--sbd", "train.txt", beside=("val.txt", "cls/"))
    except BaseException:
        voc_src.close()
        raise
    return voc_src, sbd_src


def _names(src: Source, rel: str) -> list[str]:
    return [line.split()[0] for line in src.read_text(rel).splitlines() if line.strip()]


@dataclass
class VocPlan:
    """What the tree will hold: the split lists and, per image, where its mask and its image come from."""

    lists: dict[str, list[str]]
    mask_from: dict[str, str]  # name -> "voc" | "sbd"
    image_from: dict[str, str]  # name -> "voc" | "sbd" (SBD's img/ when VOC lacks the image)
    sbd_counts: dict[str, int] = field(default_factory=dict)


def plan(voc: Source, sbd: Source) -> VocPlan:
    """Read the four lists and the two mask folders and decide every output file.

    Raises:
        PrepareError: a val image without a VOC mask, a train_aug image without any mask or image (named).
    """
    voc_train, voc_val = _names(voc, f"{LISTS}/train.txt"), _names(voc, f"{LISTS}/val.txt")
    sbd_train, sbd_val = _names(sbd, "train.txt"), _names(sbd, "val.txt")
    voc_masks = {n[: -len(".png")] for n in voc.listdir("SegmentationClass", ".png")}
    sbd_masks = {n[: -len(".mat")] for n in sbd.listdir("cls", ".mat")}
    train_aug = sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))
    lists = {"train_aug": train_aug, "train": sorted(voc_train), "val": sorted(voc_val)}
    no_val_mask = [n for n in lists["val"] if n not in voc_masks]
    if no_val_mask:
        raise PrepareError(f"{voc.describe('SegmentationClass')}: no mask for {len(no_val_mask)} val image(s), e.g. "
                           f"{no_val_mask[:3]}; is the VOC 2012 trainval release complete?")
    mask_from = {}
    for name in dict.fromkeys(train_aug + lists["val"]):
        if name in voc_masks:
            mask_from[name] = "voc"
        elif name in sbd_masks:
            mask_from[name] = "sbd"
    no_mask = [n for n in train_aug if n not in mask_from]
    if no_mask:
        raise PrepareError(f"{sbd.describe('cls')}: no mask for {len(no_mask)} train_aug image(s) (neither VOC nor SBD "
                           f"has one), e.g. {no_mask[:3]}; is the SBD release complete?")
    voc_images = {n[: -len(".jpg")] for n in voc.listdir("JPEGImages", ".jpg")}
    sbd_images = {n[: -len(".jpg")] for n in sbd.listdir("img", ".jpg")}
    image_from = {}
    for name in mask_from:
        if name in voc_images:
            image_from[name] = "voc"
        elif name in sbd_images:
            image_from[name] = "sbd"
    no_image = [n for n in mask_from if n not in image_from]
    if no_image:
        raise PrepareError(f"{voc.describe('JPEGImages')}: {len(no_image)} listed image(s) missing (and not in SBD's "
                           f"img/), e.g. {no_image[:3]}")
    return VocPlan(lists, mask_from, image_from, {"train": len(sbd_train), "val": len(sbd_val)})


def sbd_mask(data: bytes, where: str) -> np.ndarray:
    """The (H, W) uint8 class segmentation of an SBD ``cls/NAME.mat`` (``GTcls.Segmentation``).

    Raises:
        PrepareError: not an SBD class file, or values outside 0..20.
    """
    from scipy.io import loadmat

    try:
        gt = loadmat(io.BytesIO(data), struct_as_record=False, squeeze_me=True)["GTcls"]
        seg = np.asarray(gt.Segmentation)
    except Exception as exc:  # noqa: BLE001 -- scipy raises anything from IndexError to MatReadError on a bad file
        raise PrepareError(f"{where}: not an SBD class segmentation (GTcls.Segmentation): "
                           f"{type(exc).__name__}: {exc}") from None
    if seg.ndim != 2 or seg.size == 0 or seg.min() < 0 or seg.max() > len(VOC_CLASSES):
        raise PrepareError(f"{where}: GTcls.Segmentation must be a 2-D map of 0..{len(VOC_CLASSES)}, got shape "
                           f"{seg.shape}")
    return seg.astype(np.uint8)


def _voc_mask(data: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise ValueError(f"mode {im.mode}, not a class-index PNG")
            mask = np.array(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise PrepareError(f"{where}: unreadable VOC mask: {exc}") from None
    bad = np.setdiff1d(np.unique(mask), [*range(len(VOC_CLASSES) + 1), IGNORE_INDEX])
    if bad.size:
        raise PrepareError(f"{where}: mask values {bad.tolist()} outside 0..{len(VOC_CLASSES)} and {IGNORE_INDEX}")
    return mask


def prepare_voc(voc: str | os.PathLike, sbd: str | os.PathLike, out: str | os.PathLike, *, images: str = "link",
                force: bool = False, workers: int = 0) -> Outcome:
    """Build (or finish, or verify) the VOC 2012 + SBD ``train_aug`` tree at ``out``; see the module docstring.

    Args:
        voc: the VOC 2012 trainval folder or ``VOCtrainval_11-May-2012.tar``.
        sbd: the SBD release folder or ``benchmark.tgz``.
        out: the output root.
        images: ``link`` (symbolic links to the VOC images; copies when ``voc`` is an archive) or ``copy``.
        force: write into an ``out`` that holds files more did not create.
        workers: threads (0: the CPU count, at most 8).

    Raises:
        SourceError, PrepareError, OutputError: a bad source, an inconsistent release, or an ``out`` that may not
            be written; all before anything is written.
    """
    if images not in ("link", "copy"):
        raise PrepareError(f"--images {images!r}: choose link or copy")
    check_out(out, {"--voc": voc, "--sbd": sbd}, force=force)
    voc_src, sbd_src = open_sources(voc, sbd)
    try:
        ws = Workspace(out, "voc", {"images": images}, {"--voc": voc, "--sbd": sbd})
        work = plan(voc_src, sbd_src)
        counts = {k: len(v) for k, v in work.lists.items()}
        record = ws.begin()
        if record is not None:
            return verify(ws, record, counts)
        mode = "copy" if voc_src.archive else images  # an image inside an archive cannot be linked to
        return _build(ws, voc_src, sbd_src, work, mode, workers or min(8, os.cpu_count() or 1))
    finally:
        voc_src.close()
        sbd_src.close()


def _build(ws: Workspace, voc: Source, sbd: Source, work: VocPlan, mode: str, workers: int) -> Outcome:
    ws.clean_partial([MASKS, IMAGES, LISTS, "."])
    labels: dict[str, list[int]] = {}
    C = len(VOC_CLASSES)

    def classes(mask: np.ndarray) -> list[int]:
        return (np.flatnonzero(labels_from_mask(mask, C)) + 1).tolist()

    todo_masks = [n for n in work.mask_from if not ws.exists(f"{MASKS}/{n}.png")]
    todo_images = [n for n in work.image_from if not ws.exists(f"{IMAGES}/{n}.jpg")]
    pending = set(todo_masks)
    done = [n for n in work.mask_from if n not in pending]
    ws.skipped = len(done) + len(work.image_from) - len(todo_images)
    ticker = Ticker(len(work.mask_from) + len(todo_images), "prepare voc")

    def reread(name: str) -> None:  # a mask an earlier run wrote: only its labels are needed
        labels[name] = classes(read_mask(ws.root / MASKS / f"{name}.png"))

    def convert(item: tuple[str, str, bytes]) -> None:
        kind, name, data = item
        if kind == "voc":
            mask = _voc_mask(data, voc.describe(f"SegmentationClass/{name}.png"))
            ws.write_file(f"{MASKS}/{name}.png", data)  # VOC's own PNG, byte for byte
        else:
            mask = sbd_mask(data, sbd.describe(f"cls/{name}.mat"))
            ws.write_file(f"{MASKS}/{name}.png", mask_png(mask, name))
        labels[name] = classes(mask)

    def place_image(item: tuple[str, str, bytes | None]) -> None:
        origin, name, data = item
        src = voc if origin == "voc" else sbd
        rel = f"{'JPEGImages' if origin == 'voc' else 'img'}/{name}.jpg"
        local = src.local_path(rel)
        if mode == "link" and local is not None:
            ws.link_file(f"{IMAGES}/{name}.jpg", local)
        else:
            ws.write_file(f"{IMAGES}/{name}.jpg", data if data is not None else src.read(rel))

    def reads() -> Iterator[tuple[str, str, bytes]]:
        yield from (("done", n, b"") for n in done)
        for origin, src, folder, suffix in (("voc", voc, "SegmentationClass", ".png"), ("sbd", sbd, "cls", ".mat")):
            wanted = [f"{folder}/{n}{suffix}" for n in todo_masks if work.mask_from[n] == origin]
            for rel, data in src.read_many(wanted):
                yield origin, Path(rel).stem, data

    run_parallel(reads(), lambda it: reread(it[1]) if it[0] == "done" else convert(it), ticker, workers=workers)

    def image_reads() -> Iterator[tuple[str, str, bytes | None]]:
        for origin, src, folder in (("voc", voc, "JPEGImages"), ("sbd", sbd, "img")):
            names = [n for n in todo_images if work.image_from[n] == origin]
            if mode == "link" and not src.archive:
                yield from ((origin, n, None) for n in names)
            else:
                for rel, data in src.read_many(f"{folder}/{n}.jpg" for n in names):
                    yield origin, Path(rel).stem, data

    run_parallel(image_reads(), place_image, ticker, workers=workers)
    ticker.close()
    counts = {k: len(v) for k, v in work.lists.items()}
    check = compare_counts(counts, PUBLISHED, "VOC 2012 + SBD")
    notes = [f"images: {'symbolic links to' if mode == 'link' else 'copies of'} the source images"]
    if voc.archive and mode == "copy":
        notes.append("--voc is an archive: its images were copied out of it (links need the extracted folder)")
    sources = {"voc": sum(v == "voc" for v in work.mask_from.values()),
               "sbd": sum(v == "sbd" for v in work.mask_from.values())}
    notes.append(f"masks from VOC 2012 SegmentationClass: {sources['voc']}, from SBD cls: {sources['sbd']} "
                 f"(VOC wins where both have one)")
    lists = write_lists(ws, LISTS, work.lists)
    write_labels(ws, LABELS, labels)
    digest = ws.finish({"counts": counts, "published": PUBLISHED, "count_check": check, "mask_rule": MASK_RULE,
                        "mask_sources": sources, "sbd_lists": work.sbd_counts, "images": mode,
                        "labels_file": LABELS, "lists": lists},
                       hashed=[MASKS, LISTS, LABELS], sized=[IMAGES])
    return Outcome(ws.root, "voc", counts, check, ws.written, ws.skipped, ws.elapsed(), notes=notes,
                   content_hash=digest)


__all__ = ["MASK_RULE", "PUBLISHED", "SourceError", "VocPlan", "open_sources", "plan", "prepare_voc", "sbd_mask"]
