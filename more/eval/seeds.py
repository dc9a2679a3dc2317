"""Seeds from CAM / LAM score maps and the label-free ``cam2seg`` labels (MORE_SPEC §5.2, §5.4; paper Table 1).

Reference: ``tools/infer_cam.py`` and ``tools/infer_lam.py`` of zwyang6/MoRe. Every image is resized to a square
(``eval.resize``); its score map is computed there with flips and the inference scales, min-max normalised, then
upsampled to the label size and thresholded with ``cam_to_label(ignore_mid=False, bkg_thre)``.
All functions are pure tensor code on the input's device (no host syncs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from more.model.heads import lam
from more.pseudo.cam import cam_to_label, multi_scale_cam, multi_scale_lam

SOURCES = ("cam", "lam")


def score_maps(
    model: torch.nn.Module, images: torch.Tensor, *, source: str, scales: Sequence[float], lam_mode: str
) -> torch.Tensor:
    """Flip- and scale-augmented CAM or LAM of a batch at the input resolution.

    CAM: ``multi_scale_cam`` on the model's cam-only path (ReLU per scale). LAM: ``multi_scale_lam`` on the
    token dot product of §1.4 (no ReLU, §10). Both are summed over scales and min-max normalised per (b, c).

    Args:
        model: a MoRe model (``cams(x)`` and ``forward(x)``).
        images: (B, 3, R, R) normalised images.
        source: ``cam`` or ``lam``.
        scales: inference scales, e.g. ``eval.infer_cam_scales`` or ``eval.infer_multiscale``.
        lam_mode: ``model.lam`` (``dot`` reference, ``cosine`` paper; §7.6).

    Returns:
        (B, C, R, R) float32 maps in [0, 1).
    """
    if source == "cam":
        cam, _ = multi_scale_cam(model.cams, images, scales)
        return cam

    def lam_fn(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        with torch.autocast(x.device.type, enabled=False):  # the dot product in float32 even under bf16 autocast
            return lam(out.features.float(), out.tokens.float(), mode=lam_mode)  # (N, C, h, w)

    if source == "lam":
        return multi_scale_lam(lam_fn, images, scales)
    raise ValueError(f"source={source!r}: must be one of {', '.join(SOURCES)}")


class Seed(NamedTuple):
    """One image's score maps at its label size and the seed thresholded from them."""

    scores: torch.Tensor  # (C, H, W) float32 in [0, 1)
    label: torch.Tensor  # (H, W) int64: 0 background, 1..C


def seed_from_maps(maps: torch.Tensor, labels: torch.Tensor, *, size: tuple[int, int], bkg_thre: float) -> Seed:
    """Upsample one image's maps to its label size and threshold them (MORE_SPEC §5.2).

    The seed is ``argmax_c + 1`` over the present classes, and background where that class's score is
    ``≤ bkg_thre`` (the reference compares with "≤"; the paper writes "<", §3.2).

    Args:
        maps: (C, R, R) normalised maps of one image.
        labels: (C,) image-level labels (ground truth, or predicted for cam2seg).
        size: (H, W), the label / original image size.
        bkg_thre: background threshold (``eval.bkg_thre``).

    Returns:
        :class:`Seed`.
    """
    scores = F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)  # (1, C, H, W)
    label = cam_to_label(scores, labels[None], ignore_mid=False, bkg_thre=bkg_thre)  # (1, H, W)
    return Seed(scores=scores[0], label=label[0])


class PredictedLabels(NamedTuple):
    """Image-level labels predicted for the label-free cam2seg path."""

    labels: torch.Tensor  # (B, C) float 0/1
    from_decoder: torch.Tensor  # (B,) bool: the classifier predicted nothing and the decoder's classes were used


def predict_labels(cls_logits: torch.Tensor, seg_logits: torch.Tensor, *, min_pixels: int) -> PredictedLabels:
    """Labels from the classifier, falling back to the decoder when it predicts no class (MORE_SPEC §5.4).

    The classifier's labels are ``cls_logits > 0``. For an image where that is empty, the labels are the
    foreground classes that cover at least ``min_pixels`` pixels of the decoder's argmax at token resolution.
    # §5.4: the reference drops entry 0 of the sorted list of argmax values, assuming it is background even when
    # background covers fewer than ``min_pixels`` pixels; here background (class 0) is excluded explicitly.

    Args:
        cls_logits: (B, C) main classifier logits.
        seg_logits: (B, C+1, h, w) decoder logits at token resolution.
        min_pixels: ``eval.cam2seg_min_pixels`` (5 in the reference).

    Returns:
        :class:`PredictedLabels`.
    """
    batch, k = seg_logits.shape[:2]
    argmax = seg_logits.argmax(dim=1)  # (B, h, w)
    offsets = torch.arange(batch, device=argmax.device)[:, None, None] * k
    counts = torch.bincount((argmax + offsets).flatten(), minlength=batch * k).view(batch, k)  # (B, C+1)
    from_seg = counts[:, 1:] >= min_pixels  # (B, C)
    from_cls = cls_logits > 0  # (B, C)
    fallback = ~from_cls.any(dim=1)  # (B,)
    labels = torch.where(fallback[:, None], from_seg, from_cls)
    return PredictedLabels(labels=labels.float(), from_decoder=fallback)
