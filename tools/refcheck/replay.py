"""Replaying the reference's random draws on our side.

L_ure's token sampler in the reference (``URELoss_neg.uncertain_kernel_search``) draws ``torch.randperm`` from the
global RNG; ours takes one score per crop position (the highest are picked). To compare the loss bit for bit, the
reference's own search is run once on an *index map* (each position's feature is its flat index) under a fixed seed,
which tells exactly which positions it picks; those positions get the top scores on our side. The reference's loss
is then evaluated under the same seed, so it draws the same permutations.
"""

from __future__ import annotations

import torch

from more.losses.lir import ure_crop_shape
from tools.refcheck.common import Reference


def ure_scores(ref: Reference, mask: torch.Tensor, *, seed: int, kernel: int = 6, num_tokens: int = 8) -> torch.Tensor:
    """Scores (B, h-2m, w-2m) that make our sampler pick the reference's tokens under ``torch.manual_seed(seed)``.

    Args:
        ref: the loaded reference.
        mask: M_a (B, h, w) with 0 bg, 1..C class, 255 uncertain.
        seed: the global seed the reference's loss will run under.
        kernel: d.
        num_tokens: N.
    """
    ure = ref.losses.URELoss_neg(temp=0.5)
    b, h, w = mask.shape
    roi = ure.mask2roi(mask)
    index_map = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w).expand(b, 1, h, w)
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    chosen = ure.uncertain_kernel_search(index_map, roi, selected_num=num_tokens, kernel_size=kernel)
    torch.set_rng_state(state)
    hc, wc = ure_crop_shape(h, w, kernel)
    scores = torch.zeros(b, hc, wc)
    for i, picked in enumerate(chosen):
        flat = picked[:, 0].long()  # the reference takes the token at crop coordinates (r, c) of the full grid
        scores[i, flat // w, flat % w] = 0.5
    return scores
