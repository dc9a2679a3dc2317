"""Class-index masks on disk: read a palette or greyscale PNG, encode and write one with the VOC palette, and the
atomic write every dataset file goes through (temporary sibling, the permissions ``open()`` would give, rename).

Light (numpy and PIL only): ``data prepare`` and ``data check`` use it without importing torch.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from more.data.classes import VOC_PALETTE


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
