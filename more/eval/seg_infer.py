"""Multi-scale, flip-augmented segmentation inference with the decoder (MORE_SPEC §5.3; paper Table 2).

Reference: ``tools/infer_seg_voc.py`` of zwyang6/MoRe. For each scale s the square input is resized to
int(R·s)², the model runs on [x, flip(x)], the seg logits are upsampled to the label size and the flipped half
is flipped back and **added**; the scales are merged by element-wise **max**. The raw prediction is the argmax;
the CRF variant refines the softmax of the fused logits (see :mod:`more.pseudo.crf`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def seg_logits_per_scale(model: torch.nn.Module, images: torch.Tensor, scales: Sequence[float]) -> list[torch.Tensor]:
    """Decoder logits of [x, flip(x)] at every scale, at token resolution (one batched forward per scale).

    Args:
        model: a MoRe model.
        images: (B, 3, R, R) normalised images.
        scales: ``eval.seg_scales``, e.g. (1.0, 1.25, 1.5).

    Returns:
        one (2B, C+1, h_s, w_s) float32 tensor per scale: rows 0..B-1 are the images, rows B..2B-1 their flips.
    """
    _, _, h, w = images.shape
    out = []
    for s in scales:
        x = images if s == 1.0 else F.interpolate(images, size=(int(s * h), int(s * w)), mode="bilinear",
                                                    align_corners=False)
        out.append(model(torch.cat([x, x.flip(-1)], dim=0)).seg_logits.float())
    return out


def fuse_seg_logits(per_scale: Sequence[torch.Tensor], index: int, *, size: tuple[int, int]) -> torch.Tensor:
    """One image's fused logits at its label size: flips added, scales merged by element-wise max.

    Args:
        per_scale: the output of :func:`seg_logits_per_scale`.
        index: the image's row in the batch (0..B-1).
        size: (H, W), the label / original image size.

    Returns:
        (C+1, H, W) fused logits.
    """
    fused = None
    for logits in per_scale:
        batch = logits.shape[0] // 2
        pair = F.interpolate(logits[[index, batch + index]], size=size, mode="bilinear", align_corners=False)
        summed = pair[0] + pair[1].flip(-1)  # (C+1, H, W): flips are added for seg (max for CAM/LAM, §10)
        fused = summed if fused is None else torch.maximum(fused, summed)
    if fused is None:
        raise ValueError("fuse_seg_logits: no scales")
    return fused
