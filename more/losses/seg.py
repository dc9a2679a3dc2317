"""Segmentation loss L_seg (paper: L = L_MoRe + gamma * L_seg), background/foreground-balanced CE (MORE_SPEC §2.6).

# §7.7: the reference trains the decoder on PAR-refined main-CAM labels, not on LAM as the paper says; this loss
# does not care which target it gets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = 255
_COUNT_EPS = 1e-6


def seg_loss(*, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``0.5 * mean CE over background pixels + 0.5 * mean CE over foreground pixels``, pooled over the batch.

    Args:
        logits: decoder logits, shape (B, K, h, w); upsampled bilinearly (align_corners=False) to the target size
            when the sizes differ.
        target: pixel labels with 0 bg, 1..K-1 class, 255 ignore (excluded from both terms), shape (B, H, W).

    Returns:
        Scalar loss (fp32). Each mean divides by (count + 1e-6), so an absent group contributes 0.
    """
    target = target.long()
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits = logits.float()
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        ce = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")  # (B, H, W), 0 where ignored
        background = (target == 0).float()
        foreground = ((target != 0) & (target != IGNORE)).float()
        bg_loss = (ce * background).sum() / (background.sum() + _COUNT_EPS)
        fg_loss = (ce * foreground).sum() / (foreground.sum() + _COUNT_EPS)
        return 0.5 * (bg_loss + fg_loss)
