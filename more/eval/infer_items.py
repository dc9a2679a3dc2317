"""What one image's inference produces, as plain values that cross threads, processes and Ray workers.

The network pass turns a batch into :class:`ImageWork` items (encoded PNG / score-map files, the image's confusion
counts, and a :class:`CrfJob` when a DenseCRF output is wanted); :func:`run_crf` turns a job into :class:`CrfDone`.
Whoever runs them (the in-process driver, a process pool, Ray tasks) hands the items to
:class:`more.eval.infer_store.InferStore`, which alone writes files. Nothing here touches the disk.

Score maps are stored compactly (:func:`encode_maps`): the present classes only, quantised to ``uint8`` (the default;
value / 255) or ``float16``, in a compressed npz. The CRF always refines the float32 maps of the network pass, never
the stored ones, so pseudo masks are the same whatever the storage format.

This module imports only numpy at load time; a worker that encodes a PNG imports ``more.data`` (the VOC palette)
once, and one that runs a CRF imports pydensecrf.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAP_FORMATS = ("uint8", "float16", "none")  # "none": no maps/ folder
_UINT8_SCALE = 255.0


@dataclass
class CrfJob:
    """The input of one image's DenseCRF output.

    Attributes:
        name: image name.
        output: the folder of the result (``masks``, ``seg_crf`` or ``cam2seg_crf``).
        args: positional arguments of the CRF function: ``(image, fg scores, channel indices)`` for score maps
            (:func:`more.pseudo.crf.crf_from_scores`), ``(image, probabilities)`` for seg
            (:func:`more.pseudo.crf.dense_crf`). Arrays are float32 at the label size.
        gt: (H, W) uint8 ground truth (255 = ignore, all 255 without ground truth).
        lookup: CRF label index -> class id (None: the index is the class id).
    """

    name: str
    output: str
    args: tuple[Any, ...]
    gt: np.ndarray
    lookup: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.args if isinstance(a, np.ndarray)) + self.gt.nbytes


@dataclass
class ImageWork:
    """One image after the network pass: the files of its first output and what its CRF output needs.

    Attributes:
        name: image name.
        output: the first output (``seeds``, ``seg_raw``, ``cam2seg``).
        files: relative path under the output folder -> encoded bytes (the PNG, and the score maps' npz); empty
            when this image's first output was already recorded.
        hist: sparse confusion counts of the first output, (m, 2) int64 rows ``[gt * K + pred, count]``.
        from_decoder: cam2seg only: the image's labels came from the decoder fallback.
        crf: the CRF job, when this image still needs its CRF output.
    """

    name: str
    output: str
    files: dict[str, bytes]
    hist: np.ndarray
    from_decoder: bool = False
    crf: CrfJob | None = None


@dataclass
class CrfDone:
    """One image's CRF output: its PNG and confusion counts."""

    name: str
    output: str
    files: dict[str, bytes] = field(default_factory=dict)
    hist: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))


# --------------------------------------------------------------------------------------------------- encoding


def encode_mask(label: np.ndarray) -> bytes:
    """A (H, W) class-index mask as VOC-palette PNG bytes (the format ``more.data.write_mask`` writes)."""
    from PIL import Image

    from more.data.classes import VOC_PALETTE

    arr = np.asarray(label)
    if arr.ndim != 2 or arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
        raise ValueError(f"encode_mask: expected a (H, W) array of values 0..255, got shape {arr.shape}")
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette(VOC_PALETTE.tobytes())
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_maps(scores: np.ndarray, class_ids: np.ndarray, fmt: str = "uint8") -> bytes:
    """One image's score maps of its present classes as compressed npz bytes.

    Args:
        scores: (n, H, W) normalised maps in [0, 1] at the label size, one per present class.
        class_ids: (n,) class ids 1..C (mask values) of the rows.
        fmt: ``uint8`` (round(255 x), step 1/255) or ``float16``.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if fmt == "uint8":
        stored = np.rint(np.clip(scores, 0.0, 1.0) * _UINT8_SCALE).astype(np.uint8)
    elif fmt == "float16":
        stored = scores.astype(np.float16)
    else:
        raise ValueError(f"maps format {fmt!r}: must be uint8 or float16")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, scores=stored, classes=np.asarray(class_ids, dtype=np.int64))
    return buffer.getvalue()


def decode_maps(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(scores (n, H, W) float32 in [0, 1], class ids (n,))`` from :func:`encode_maps` output (bytes or a path)."""
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    with np.load(source, allow_pickle=False) as npz:
        stored, classes = npz["scores"], npz["classes"]
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) / np.float32(_UINT8_SCALE), classes
    return stored.astype(np.float32), classes


# ------------------------------------------------------------------------------------------------- confusion


def sparse_hist(pred: np.ndarray, gt: np.ndarray, k: int) -> np.ndarray:
    """One image's confusion counts as (m, 2) int64 rows ``[gt * k + pred, count]`` (pixels with gt >= k ignored)."""
    gt = np.asarray(gt).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    valid = gt < k
    flat = np.bincount(gt[valid] * k + pred[valid], minlength=k * k)
    index = np.flatnonzero(flat)
    return np.stack([index, flat[index]], axis=1).astype(np.int64)


def add_sparse(dense: np.ndarray, sparse: np.ndarray | list) -> None:
    """Add sparse counts (see :func:`sparse_hist`) into a flat (k * k,) int64 matrix, in place."""
    rows = np.asarray(sparse, dtype=np.int64).reshape(-1, 2)
    np.add.at(dense, rows[:, 0], rows[:, 1])


# ------------------------------------------------------------------------------------------------------- CRF


def crf_function(task: str, crf_kwargs: dict[str, float]) -> Any:
    """The DenseCRF function of a task with the config's CRF settings bound (picklable)."""
    from more.pseudo.crf import crf_from_scores, dense_crf

    return functools.partial(dense_crf if task == "seg" else crf_from_scores, **crf_kwargs)


def run_crf(job: CrfJob, task: str, crf_kwargs: dict[str, float], k: int) -> CrfDone:
    """Run one image's DenseCRF and encode the result (runs in a worker process or a Ray task).

    Args:
        job: the image's :class:`CrfJob`.
        task: ``seg`` (probabilities) or a score-map task (``seeds``, ``masks``, ``cam2seg``).
        crf_kwargs: ``more.eval.infer.crf_kwargs(cfg)``.
        k: number of classes including background (for the confusion counts).
    """
    # arrays that arrive through Ray's object store are read-only views; pydensecrf needs writable buffers
    args = [np.array(a) if isinstance(a, np.ndarray) and not a.flags.writeable else a for a in job.args]
    index = crf_function(task, crf_kwargs)(*args)
    label = np.asarray(index if job.lookup is None else job.lookup[index], dtype=np.uint8)
    return CrfDone(job.name, job.output, {f"{job.output}/{job.name}.png": encode_mask(label)},
                   sparse_hist(label, job.gt, k))


def run_crf_many(jobs: list[CrfJob], task: str, crf_kwargs: dict[str, float], k: int) -> list[CrfDone]:
    """:func:`run_crf` over a chunk of jobs (one pickling round trip per chunk)."""
    return [run_crf(job, task, crf_kwargs, k) for job in jobs]
