"""Trivial baselines that any localisation must beat, scored with the same confusion-matrix metrics (§5.5).

- ``all_background``: every pixel predicted background.
- ``uniform_labels``: a map that is uniform over the image's ground-truth labels — it knows which classes are in
  the image but not where. Every labelled pixel is predicted as each present class with probability 1/n; the
  confusion matrix holds the expected counts, so the score needs no random draw.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from more.eval.metrics import Scores, scores


def baseline_hists(items: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> dict[str, np.ndarray]:
    """Confusion matrices of both baselines.

    Args:
        items: ``(mask (H, W) long with 0..C and 255, labels (C,) float)`` per image.
        num_classes: K = C + 1 (background included).
    """
    k = num_classes
    bg = np.zeros((k, k), dtype=np.float64)
    uniform = np.zeros((k, k), dtype=np.float64)
    for mask, labels in items:
        gt = mask.flatten().long()
        gt = gt[(gt >= 0) & (gt < k)]
        counts = torch.bincount(gt, minlength=k).double().numpy()  # pixels per GT class
        bg[:, 0] += counts
        present = (torch.nonzero(labels > 0).flatten() + 1).tolist()
        if present:
            uniform[:, present] += counts[:, None] / len(present)
        else:
            uniform[:, 0] += counts
    return {"all_background": bg, "uniform_labels": uniform}


def baseline_scores(dataset: Iterable[dict], num_classes: int) -> dict[str, Scores]:
    """Scores of both baselines over an eval dataset (items with ``mask`` and ``labels``)."""
    hists = baseline_hists(((item["mask"], item["labels"]) for item in dataset), num_classes)
    return {name: scores(h) for name, h in hists.items()}
