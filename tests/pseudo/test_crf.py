"""DenseCRF wrapper, score-to-CRF mapping and the process pool (MORE_SPEC §5.2)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from more.pseudo.crf import crf_from_scores, crf_map, crf_pool, default_workers, dense_crf

H, W = 30, 40


def _two_regions() -> tuple[np.ndarray, np.ndarray]:
    """A dark left half and a bright right half (uint8 RGB), and the clean label map (0 left, 1 right)."""
    rng = np.random.default_rng(0)
    image = np.empty((H, W, 3), dtype=np.uint8)
    image[:, : W // 2] = 30 + rng.integers(0, 6, size=(H, W // 2, 3))
    image[:, W // 2 :] = 200 + rng.integers(0, 6, size=(H, W - W // 2, 3))
    truth = np.zeros((H, W), dtype=np.int64)
    truth[:, W // 2 :] = 1
    return image, truth


def test_dense_crf_cleans_noisy_probabilities():
    image, truth = _two_regions()
    rng = np.random.default_rng(1)
    noisy = np.where(rng.random((H, W)) < 0.2, 1 - truth, truth)  # 20 % of the pixels flipped
    probs = np.stack([np.where(noisy == 0, 0.6, 0.4), np.where(noisy == 1, 0.6, 0.4)]).astype(np.float32)
    assert (probs.argmax(0) == truth).mean() < 0.85
    out = dense_crf(image, probs)
    assert out.shape == (H, W) and out.dtype == np.int64
    assert (out == truth).mean() > 0.99
    # fewer iterations and weaker pairwise terms leave more noise: the settings are really used
    weak = dense_crf(image, probs, iters=1, gauss_compat=0.1, bi_compat=0.1)
    assert (weak == truth).mean() < (out == truth).mean()


def test_dense_crf_rejects_wrong_image():
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(np.zeros((H, W, 3), dtype=np.float32), np.ones((2, H, W), dtype=np.float32))


def test_crf_from_scores_maps_present_classes_back_to_ids():
    image, truth = _two_regions()
    scores = np.full((4, H, W), 0.95, dtype=np.float32)  # absent classes score high everywhere: must be ignored
    scores[2] = np.where(truth == 1, 0.9, 0.05)  # the only present class (id 3) on the right half
    out = crf_from_scores(image, scores, [2])
    assert out.dtype == np.int64 and set(np.unique(out)) == {0, 3}
    assert (out == np.where(truth == 1, 3, 0)).mean() > 0.99


def test_crf_from_scores_background_is_one_minus_max_not_renormalised():
    image, _ = _two_regions()
    scores = np.zeros((3, H, W), dtype=np.float32)
    scores[0], scores[1] = 0.45, 0.40  # bg = 1 - 0.45 = 0.55 beats both classes everywhere
    assert np.all(crf_from_scores(image, scores, [0, 1], iters=1) == 0)
    scores[1] = 0.52  # bg = 0.48 < 0.52: class id 2 wins everywhere (0.45 for class 1 loses)
    assert np.all(crf_from_scores(image, scores, [1, 0], iters=1) == 2)


def test_crf_from_scores_without_classes_is_background():
    image, _ = _two_regions()
    out = crf_from_scores(image, np.ones((5, H, W), dtype=np.float32), [])
    assert out.shape == (H, W) and out.dtype == np.int64 and not out.any()


def test_crf_map_parallel_equals_serial_in_order():
    image, _ = _two_regions()
    rng = np.random.default_rng(2)
    jobs = []
    for split in (10, 20, 30):  # the class covers the columns right of `split`
        scores = np.where(np.arange(W) >= split, 0.8, 0.1) + 0.2 * rng.random((1, H, W))
        jobs.append((image, np.clip(scores, 0, 1).astype(np.float32), [0]))
    fn = functools.partial(crf_from_scores, iters=5)
    seen: list[tuple[int, int]] = []
    serial = crf_map(fn, jobs, workers=1, progress=lambda done, total: seen.append((done, total)))
    parallel = crf_map(fn, jobs, workers=2)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert len(parallel) == 3 and all(np.array_equal(a, b) for a, b in zip(serial, parallel))
    assert not all(np.array_equal(serial[0], s) for s in serial[1:])  # the jobs really differ
    assert default_workers() >= 1
    with crf_pool(2) as pool:  # a pool kept open across calls
        for _ in range(2):
            assert all(np.array_equal(a, b) for a, b in zip(serial, crf_map(fn, jobs, executor=pool)))
