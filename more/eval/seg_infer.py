"""Multi-scale, flip-augmented segmentation inference with the decoder (MORE_SPEC §5.3; paper Table 2).

Reference: ``tools/infer_seg_voc.py`` of zwyang6/MoRe. For each scale s the *original* image (normalised) is
resized to int(R·s)² (not the R² square: resizing twice changes about 1% of the labels), the model runs on
[x, flip(x)], the seg logits are upsampled to the label size and the flipped half
is flipped back and **added**; the scales are merged by element-wise **max**. The raw prediction is the argmax;
the CRF variant refines the softmax of the fused logits (see :mod:`more.pseudo.crf`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from more.data.transforms import normalize, to_square


def scaled_inputs(
    images: torch.Tensor,
    originals: Sequence[torch.Tensor],
    scales: Sequence[float],
    *,
    mean: Sequence[float],
    std: Sequence[float],
) -> list[torch.Tensor]:
    """The network input of every scale, each resized from the original image as the reference does.

    Args:
        images: (B, 3, R, R) normalised images (the scale-1 input, returned as it is).
        originals: B (H0, W0, 3) uint8 original images.
        scales: ``eval.seg_scales``, e.g. (1.0, 1.25, 1.5).
        mean: normalisation mean (``data.mean``).
        std: normalisation std (``data.std``).

    Returns:
        one (B, 3, int(R·s), int(R·s)) tensor per scale, on ``images``' device and dtype.
    """
    side = images.shape[-1]
    out, normalised = [], None
    for s in scales:
        size = int(s * side)
        if size == side:
            out.append(images)
            continue
        if normalised is None:  # each original is copied and normalised once, whatever the number of scales
            normalised = [normalize(o.to(images.device).permute(2, 0, 1), mean, std) for o in originals]
        out.append(torch.stack([to_square(x, size) for x in normalised]).to(images.dtype))
    return out


@torch.no_grad()
def seg_logits_per_scale(model: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Decoder logits of [x, flip(x)] at every scale, at token resolution (one batched forward per scale).

    Args:
        model: a MoRe model.
        inputs: the output of :func:`scaled_inputs`.

    Returns:
        one (2B, C+1, h_s, w_s) float32 tensor per scale: rows 0..B-1 are the images, rows B..2B-1 their flips.
    """
    return [model(torch.cat([x, x.flip(-1)], dim=0)).seg_logits.float() for x in inputs]


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
