"""DenseCRF post-processing of CAM/LAM scores and segmentation probabilities (MORE_SPEC §5.2, §5.3).

Reference: ``utils/dcrf.py::DenseCRF`` and the ``--crf_post`` paths of ``tools/infer_cam.py``,
``tools/infer_lam.py`` and ``tools/infer_seg_voc.py`` of zwyang6/MoRe. The CRF runs on the CPU (pydensecrf,
provided by the ``pydensecrf2`` wheel, whose arrays must be C-contiguous); :func:`crf_map` spreads jobs over
processes as the reference's joblib pool does.

This module imports numpy and pydensecrf only (no torch) so that worker processes start fast.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    *,
    iters: int = 10,
    gauss_sxy: float = 1.0,
    gauss_compat: float = 3.0,
    bi_sxy: float = 67.0,
    bi_srgb: float = 3.0,
    bi_compat: float = 4.0,
) -> np.ndarray:
    """Mean-field DenseCRF with a Gaussian and a bilateral kernel; returns the argmax label per pixel.

    The unary is ``unary_from_softmax``: -log(clip(p, 1e-5, 1)). Defaults are the reference's
    ``DenseCRF(iter_max=10, pos_xy_std=1, pos_w=3, bi_xy_std=67, bi_rgb_std=3, bi_w=4)``.

    Args:
        image: (H, W, 3) uint8 RGB image.
        probs: (K, H, W) per-label probabilities (need not sum to 1).
        iters: mean-field iterations.
        gauss_sxy: spatial std of the Gaussian (smoothness) kernel.
        gauss_compat: weight of the Gaussian kernel (Potts compatibility).
        bi_sxy: spatial std of the bilateral (appearance) kernel.
        bi_srgb: colour std of the bilateral kernel.
        bi_compat: weight of the bilateral kernel.

    Returns:
        (H, W) int64 index into the K labels.
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    k, h, w = probs.shape
    if image.shape != (h, w, 3) or image.dtype != np.uint8:
        raise ValueError(f"dense_crf: image must be uint8 (H, W, 3) = ({h}, {w}, 3), got {image.dtype} {image.shape}")
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.astype(np.float32, copy=False))))
    crf.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    crf.addPairwiseBilateral(sxy=bi_sxy, srgb=bi_srgb, rgbim=np.ascontiguousarray(image), compat=bi_compat)
    q = np.asarray(crf.inference(iters), dtype=np.float32).reshape(k, h, w)
    return q.argmax(axis=0).astype(np.int64)


def crf_from_scores(
    image: np.ndarray,
    scores: np.ndarray,
    present_classes: Sequence[int],
    **crf_kwargs: Any,
) -> np.ndarray:
    """CRF mask from normalised CAM/LAM scores of the present classes (MORE_SPEC §5.2, ``--crf_post``).

    Probabilities are ``[1 - max_c score_c, score_c for present c]`` (not renormalised), refined by
    :func:`dense_crf`, and the argmax is mapped back to class ids (0 = background). With no present class the
    prediction is all background.

    Args:
        image: (H, W, 3) uint8 RGB image at the scores' resolution.
        scores: (C, H, W) per-class scores in [0, 1]; channel c is class c + 1.
        present_classes: 0-based indices of the present classes (channel indices into ``scores``).
        **crf_kwargs: forwarded to :func:`dense_crf` (iters, gauss_sxy, ...).

    Returns:
        (H, W) int64 labels in {0} ∪ {c + 1 : c present}.
    """
    keys = np.asarray(sorted(int(c) for c in present_classes), dtype=np.int64)
    h, w = scores.shape[-2:]
    if keys.size == 0:
        return np.zeros((h, w), dtype=np.int64)
    fg = scores[keys].astype(np.float32)  # (n, H, W)
    probs = np.concatenate([1.0 - fg.max(axis=0, keepdims=True), fg], axis=0)  # (n + 1, H, W)
    index = dense_crf(image, probs, **crf_kwargs)
    return np.concatenate([[0], keys + 1])[index]


def default_workers() -> int:
    """60 % of the CPU cores (the reference's joblib setting), at least one."""
    return max(1, int(0.6 * (os.cpu_count() or 1)))


def crf_map(
    fn: Callable[..., Any],
    jobs: Sequence[tuple[Any, ...]],
    workers: int = 0,
    *,
    progress: Callable[[int, int], None] | None = None,
    executor: Executor | None = None,
) -> list[Any]:
    """Run ``fn(*job)`` for every job on a pool of processes; results come back in job order.

    ``fn`` and the job arguments must be picklable (a module-level function such as :func:`crf_from_scores`;
    keyword arguments can be bound with ``functools.partial``). Workers are started with ``spawn`` so that a
    parent holding torch / Ray threads is never forked. With one worker (or one job) everything runs in this
    process.

    Args:
        fn: the job function.
        jobs: positional-argument tuples, one per job.
        workers: processes; 0 means :func:`default_workers`.
        progress: optional ``progress(done, total)`` callback, called in this process after each job.
        executor: an existing pool to submit to (e.g. one kept open over many calls, see :func:`crf_pool`);
            ``workers`` is then ignored and the pool is left open.

    Returns:
        ``[fn(*job) for job in jobs]``.
    """
    workers = default_workers() if workers <= 0 else workers
    total = len(jobs)
    if executor is None and (workers == 1 or total <= 1):
        results = []
        for i, job in enumerate(jobs):
            results.append(fn(*job))
            if progress is not None:
                progress(i + 1, total)
        return results
    if executor is not None:
        return _collect(executor, fn, jobs, progress)
    with crf_pool(min(workers, total)) as pool:
        return _collect(pool, fn, jobs, progress)


def crf_pool(workers: int = 0) -> ProcessPoolExecutor:
    """A ``spawn`` process pool for :func:`crf_map` (0 workers = :func:`default_workers`); close it when done."""
    workers = default_workers() if workers <= 0 else workers
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _collect(
    pool: Executor,
    fn: Callable[..., Any],
    jobs: Sequence[tuple[Any, ...]],
    progress: Callable[[int, int], None] | None,
) -> list[Any]:
    results: list[Any] = [None] * len(jobs)
    futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
    for done, future in enumerate(as_completed(futures), start=1):
        results[futures[future]] = future.result()
        if progress is not None:
            progress(done, len(jobs))
    return results
