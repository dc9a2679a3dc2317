"""Multi-scale CAM / LAM, min-max normalisation, thresholding and the token-grid masks of the LIR losses.

Reference: ``utils/camutils.py`` (``multi_scale_cam2``, ``multi_scale_lam2``, ``cam_to_label``) and
``scripts/train_voc.py`` of zwyang6/MoRe, paraphrased in MORE_SPEC §3.1, §3.2, §3.4, §5.2 and §10.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255

CamFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
LamFn = Callable[[torch.Tensor], torch.Tensor]


def minmax_normalize(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-(b, c) spatial min-max normalisation, exactly as the reference.

    The spatial min is subtracted first; the result is then divided by (its spatial max + eps), i.e. by
    (max - min + eps) of the input. Values lie in [0, 1).

    Args:
        maps: (B, C, H, W) maps.
        eps: added to the denominator (1e-5 in the reference).

    Returns:
        (B, C, H, W) normalised maps.
    """
    shifted = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return shifted / (shifted.amax(dim=(-2, -1), keepdim=True) + eps)


def _minmax_(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """:func:`minmax_normalize` in place, for tensors this module owns."""
    maps.sub_(maps.amin(dim=(-2, -1), keepdim=True))
    return maps.div_(maps.amax(dim=(-2, -1), keepdim=True).add_(eps))


def _scale_inputs(images: torch.Tensor, scales: Sequence[float]) -> list[torch.Tensor]:
    """The unit scale (always, first; the reference computes it unconditionally) plus every other scale."""
    _, _, h, w = images.shape
    resized = [images]
    for s in scales:
        if s != 1.0:
            resized.append(F.interpolate(images, size=(int(s * h), int(s * w)), mode="bilinear", align_corners=False))
    return resized


def _merge_flip(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample the (2B, C, h, w) output of [x, flip(x)] and merge the two halves by element-wise max."""
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    b = maps.shape[0] // 2
    return torch.maximum(maps[:b], maps[b:].flip(-1))


def multi_scale_cam(
    cam_fn: CamFn, images: torch.Tensor, scales: Sequence[float], *, size: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-scale, flip-augmented main and aux CAMs (MORE_SPEC §3.1, ``multi_scale_cam2``).

    For each scale the batch is resized (bilinear, align_corners False) to int(s·H) × int(s·W), ``cam_fn`` runs
    once on [x, flip(x)], both maps are upsampled to ``size``, the flipped half is flipped back and merged by
    element-wise max, and ReLU is applied. Scales are summed, then min-max normalised per (b, c).
    As in the reference the unit scale is always evaluated (first) and further entries equal to 1.0 are skipped.
    Runs under ``torch.no_grad``; the caller's train/eval mode is left untouched.

    Args:
        cam_fn: ``x (N, 3, h', w') -> (cam (N, C, h, w), cam_aux (N, C, h, w))``, the model's cam-only path.
        images: (B, 3, H, W) normalised network input.
        scales: CAM scales, e.g. (1.0, 0.5, 0.75, 1.5).
        size: output size; defaults to (H, W).

    Returns:
        ``(cam, cam_aux)``, each (B, C, *size) in [0, 1).
    """
    size = tuple(size) if size is not None else tuple(images.shape[-2:])
    with torch.no_grad():
        cam_sum = aux_sum = None
        for x in _scale_inputs(images, scales):
            cam, cam_aux = cam_fn(torch.cat([x, x.flip(-1)], dim=0))  # (2B, C, h, w) each
            cam = _merge_flip(cam.float(), size).relu_()  # (B, C, *size)
            cam_aux = _merge_flip(cam_aux.float(), size).relu_()
            cam_sum = cam if cam_sum is None else cam_sum.add_(cam)
            aux_sum = cam_aux if aux_sum is None else aux_sum.add_(cam_aux)
        return _minmax_(cam_sum), _minmax_(aux_sum)


def multi_scale_lam(
    lam_fn: LamFn, images: torch.Tensor, scales: Sequence[float], *, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Multi-scale, flip-augmented LAM (MORE_SPEC §1.4, §5.2, ``multi_scale_lam2``).

    Same scale and flip handling as :func:`multi_scale_cam` (flips merged by max, scales summed) but with
    **no ReLU** (§10); the sum is min-max normalised per (b, c).

    Args:
        lam_fn: ``x (N, 3, h', w') -> lam (N, C, h, w)``, the token dot-product map of the model.
        images: (B, 3, H, W) normalised network input.
        scales: scales; the unit scale is always included.
        size: output size; defaults to (H, W).

    Returns:
        (B, C, *size) LAM in [0, 1).
    """
    size = tuple(size) if size is not None else tuple(images.shape[-2:])
    with torch.no_grad():
        lam_sum = None
        for x in _scale_inputs(images, scales):
            lam = _merge_flip(lam_fn(torch.cat([x, x.flip(-1)], dim=0)).float(), size)  # (B, C, *size)
            lam_sum = lam if lam_sum is None else lam_sum.add_(lam)
        return _minmax_(lam_sum)


def cam_to_label(
    cam: torch.Tensor,
    labels: torch.Tensor,
    *,
    high: float | None = None,
    low: float | None = None,
    ignore_mid: bool = True,
    bkg_thre: float | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Threshold CAMs into a pixel label map (MORE_SPEC §3.2).

    ``valid = cam · labels``; the label is argmax + 1 of ``valid`` over classes. With ``ignore_mid`` pixels whose
    max is ≤ ``high`` become ``ignore_index`` and then pixels whose max is ≤ ``low`` become 0; ``bkg_thre`` is
    ignored in this mode (as in the reference). Without it, pixels whose max is ≤ ``bkg_thre`` become 0.
    # §7 (paper writes ">" for foreground and "<" for background): the code compares with "≤".

    Args:
        cam: (B, C, H, W) normalised CAMs.
        labels: (B, C) image-level labels (0/1, any dtype).
        high: upper threshold (ignore_mid mode).
        low: lower threshold (ignore_mid mode).
        ignore_mid: whether to mark the band (low, high] as ``ignore_index``.
        bkg_thre: background threshold (only without ignore_mid).
        ignore_index: the ignore value.

    Returns:
        (B, H, W) int64 labels: 0 background, 1..C classes, ``ignore_index`` uncertain.
    """
    valid = cam * labels.to(cam.dtype)[:, :, None, None]  # (B, C, H, W)
    value, index = valid.max(dim=1)  # (B, H, W)
    label = index + 1
    if ignore_mid:
        if high is None or low is None:
            raise ValueError("cam_to_label(ignore_mid=True) needs high and low")
        label = torch.where(value <= high, torch.full_like(label, ignore_index), label)
        label = torch.where(value <= low, torch.zeros_like(label), label)
    else:
        if bkg_thre is None:
            raise ValueError("cam_to_label(ignore_mid=False) needs bkg_thre")
        label = torch.where(value <= bkg_thre, torch.zeros_like(label), label)
    return label


class TokenMasks(NamedTuple):
    """Token-grid pseudo labels (0 bg, 1..C class, 255 uncertain) for the token losses (MORE_SPEC §3.4)."""

    cre: torch.Tensor  # (B, h, w) mask for L_cre
    ure: torch.Tensor  # (B, h, w) mask for L_ure
    ptc: torch.Tensor  # (B, h, w) mask for the PTC affinity target


def token_masks(
    cam: torch.Tensor,
    cam_aux: torch.Tensor,
    labels: torch.Tensor,
    *,
    grid: tuple[int, int],
    cre_high: float,
    cre_low: float,
    aux_high: float,
    aux_low: float,
    main_high: float,
    main_low: float,
    use_main: bool,
) -> TokenMasks:
    """The three token-grid masks of one training step (MORE_SPEC §3.4).

    Both CAMs are bilinearly downsampled (align_corners False) to ``grid`` and thresholded with
    ``cam_to_label(ignore_mid=True)``. ``M_cle`` = aux CAM with the cre thresholds (0.5/0.25), ``M_aux`` = aux CAM
    with the aux thresholds (0.7/0.25), ``M_main`` = main CAM with the main thresholds (0.6/0.35).
    # §7.11: the reference feeds L_cre / L_ure from the aux (block-10) CAM until the switch iteration, then from
    # the main CAM; ``use_main`` selects the latter. PTC always uses M_aux.

    Args:
        cam: (B, C, H, W) main CAM in [0, 1).
        cam_aux: (B, C, H, W) aux CAM in [0, 1).
        labels: (B, C) image-level labels.
        grid: token grid (h, w).
        cre_high: high threshold of M_cle.
        cre_low: low threshold of M_cle.
        aux_high: high threshold of M_aux.
        aux_low: low threshold of M_aux.
        main_high: high threshold of M_main.
        main_low: low threshold of M_main.
        use_main: use M_main for L_cre and L_ure (late phase).

    Returns:
        :class:`TokenMasks` with three (B, h, w) int64 maps.
    """
    grid = tuple(grid)
    aux_small = F.interpolate(cam_aux, size=grid, mode="bilinear", align_corners=False)  # (B, C, h, w)
    m_aux = cam_to_label(aux_small, labels, high=aux_high, low=aux_low, ignore_mid=True)
    if use_main:
        main_small = F.interpolate(cam, size=grid, mode="bilinear", align_corners=False)
        m_main = cam_to_label(main_small, labels, high=main_high, low=main_low, ignore_mid=True)
        return TokenMasks(cre=m_main, ure=m_main, ptc=m_aux)
    m_cle = cam_to_label(aux_small, labels, high=cre_high, low=cre_low, ignore_mid=True)
    return TokenMasks(cre=m_cle, ure=m_aux, ptc=m_aux)
