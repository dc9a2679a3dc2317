"""The archive the PASCAL VOC evaluation server takes for the segmentation challenge (paper Table 2, VOC test).

The server unpacks a ``.tar.gz`` and looks for ``results/VOC2012/Segmentation/comp6_test_cls/<image id>.png``: one
PNG per test image, at the image's original size, holding class indices 0..20 in palette ("P") mode with the VOC
colour map (comp6: methods trained with data beyond VOC, e.g. ImageNet-pretrained weights and SBD's masks). The
PNGs ``infer --task seg`` writes are already in that format; this module checks every one and packs them.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from more.outputs import OutputError, atomic_write

ARCHIVE_DIR = "results/VOC2012/Segmentation/comp6_test_cls"
ARCHIVE_NAME = "voc2012_comp6_test_cls.tar.gz"


def check_png(path: Path, *, num_classes: int, size: tuple[int, int] | None = None) -> None:
    """Raise :class:`OutputError` unless ``path`` is a palette PNG of class indices 0..C (of ``size`` (W, H))."""
    from PIL import Image

    with Image.open(path) as im:
        if im.format != "PNG" or im.mode != "P":
            raise OutputError(f"{path}: expected a palette (P) PNG, got {im.format} mode {im.mode}")
        if size is not None and im.size != size:
            raise OutputError(f"{path}: size {im.size} differs from its image's {size}")
        top = int(np.asarray(im).max(initial=0))
    if top > num_classes:
        raise OutputError(f"{path}: holds class {top}, more than the {num_classes} classes")


def write_voc_archive(out: str | os.PathLike, output: str, names: Sequence[str], *, num_classes: int,
                      sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    """Pack ``out/<output>/<name>.png`` for every name into ``out/voc2012_comp6_test_cls.tar.gz``, atomically.

    Args:
        out: the inference's output folder.
        output: the PNG folder to pack (``seg_crf`` with CRF, else ``seg_raw``).
        names: the split's image ids, every one of which must have its PNG.
        num_classes: C (20 for VOC).
        sizes: optional ``{name: (W, H)}`` of the original images, checked against the PNGs.

    Returns:
        the archive's path. Members are sorted and carry no owner or time, so the same PNGs give the same bytes.
    """
    folder = Path(out) / output
    missing = [n for n in names if not (folder / f"{n}.png").is_file()]
    if missing:
        raise OutputError(f"{folder}: {len(missing)} of {len(names)} PNGs are missing (e.g. {missing[0]}); run the "
                          f"inference to the end before packing")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for part in _parents(ARCHIVE_DIR):
            info = tarfile.TarInfo(part)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name in sorted(names):
            png = folder / f"{name}.png"
            check_png(png, num_classes=num_classes, size=(sizes or {}).get(name))
            data = png.read_bytes()
            info = tarfile.TarInfo(f"{ARCHIVE_DIR}/{name}.png")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return atomic_write(Path(out) / ARCHIVE_NAME, buffer.getvalue(), what="the VOC server archive")


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]
