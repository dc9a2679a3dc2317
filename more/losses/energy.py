"""Dense energy (CRF) regularization of the segmentation output (MORE_SPEC §2.7; rloss, Tang et al. 2018).

# §7.8: not in the paper, which only says that regularization losses from ToCo/DuPL are adopted.

Two bilateral filters compute ``AS_k(i) ~ sum_j exp(-|f_i - f_j|^2 / 2) S_k(j)`` with
``f = (x/s_xy, y/s_xy, R/s_rgb, G/s_rgb, B/s_rgb)``, over all pixels j including i and without normalisation:

* ``lattice`` (the reference): rloss's permutohedral lattice (:mod:`more.losses.lattice`), equal to the authors'
  ``bilateralfilter`` extension up to float rounding. O(N) per image. Its values are not a constant factor of the
  Gaussian sum: at the reference's 224 grid the loss is 0.55-0.63 of the exact one depending on the image and the
  maps (about 4% spread between photos), and per gradient element the ratio has a standard deviation of 7-13% of
  its mean (bench/RESULTS.md, "Energy filter: rloss's lattice against the exact Gaussian sum").
* ``exact``: the Gaussian sum itself, in row tiles on the input's device (§8.1). O(N^2) per image, a few dense
  matmuls, the energy as the rloss paper defines it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from more.losses.lattice import permutohedral_filter

IGNORE = 255
FILTERS = ("lattice", "exact")


@contextlib.contextmanager
def _exact_fp32(device_type: str) -> Iterator[None]:
    """Disable autocast and TF32/bf16 fp32 matmuls: |f_i|^2 + |f_j|^2 - 2 f_i.f_j cancels in reduced precision."""
    backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
    saved = [backend.fp32_precision for backend in backends]
    try:
        for backend, precision in zip(backends, saved):
            if precision != "ieee":
                backend.fp32_precision = "ieee"
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    finally:
        for backend, precision in zip(backends, saved):
            if backend.fp32_precision != precision:
                backend.fp32_precision = precision


def bilateral_features(image: torch.Tensor, *, sigma_rgb: float, sigma_xy: float) -> torch.Tensor:
    """The 5-D bilateral feature of every pixel: (x / sigma_xy, y / sigma_xy, R / sigma_rgb, G / ..., B / ...).

    Args:
        image: RGB on the 0-255 scale, shape (B, 3, H, W).
        sigma_rgb: colour bandwidth.
        sigma_xy: spatial bandwidth in pixels of this grid.

    Returns:
        float32 features of shape (B, 5, H, W); x is the column and y the row index.
    """
    b, _, h, w = image.shape
    rows = torch.arange(h, device=image.device, dtype=torch.float32)
    cols = torch.arange(w, device=image.device, dtype=torch.float32)
    y, x = torch.meshgrid(rows, cols, indexing="ij")  # (H, W)
    position = torch.stack([x, y])[None].expand(b, 2, h, w) / sigma_xy  # (B, 2, H, W)
    return torch.cat([position, image.float() / sigma_rgb], dim=1)  # (B, 5, H, W)


def bilateral_filter(*, features: torch.Tensor, maps: torch.Tensor, tile: int = 2048) -> torch.Tensor:
    """Exact, unnormalised Gaussian filter ``out_k(i) = sum_j exp(-|f_i - f_j|^2 / 2) maps_k(j)`` (MORE_SPEC §2.7.1).

    Computed in tiles of ``tile`` rows (query pixels) per image: with the augmented vectors
    ``a_i = (f_i, -|f_i|^2/2, 1)`` and ``c_j = (f_j, 1, -|f_j|^2/2)``, one ``bmm`` gives the exponent
    ``a_i.c_j = -|f_i - f_j|^2 / 2`` of a (B, tile, N) block, which is exponentiated in place and multiplied with the
    maps. Peak memory is about B * tile * N * 4 bytes. The fp32 expansion has an absolute exponent error of about
    1e-5 (features are centred first), i.e. a relative kernel error of about 1e-5.

    Args:
        features: per-pixel features already divided by their bandwidths, shape (B, F, H, W)
            (see :func:`bilateral_features`).
        maps: the maps to filter, shape (B, K, H, W).
        tile: query rows per block; it changes the result only through fp32 rounding.

    Returns:
        float32 filtered maps, shape (B, K, H, W). Not differentiable (computed from detached inputs).
    """
    b, k, h, w = maps.shape
    n = h * w
    with _exact_fp32(maps.device.type), torch.no_grad():
        f = features.detach().float().flatten(2).transpose(1, 2)  # (B, N, F)
        f = f - f.mean(dim=1, keepdim=True)  # distances are shift invariant; centring shrinks the cancellation
        half_sq = 0.5 * (f * f).sum(-1, keepdim=True)  # (B, N, 1)
        ones = torch.ones_like(half_sq)
        queries = torch.cat([f, -half_sq, ones], dim=-1)  # (B, N, F + 2)
        keys = torch.cat([f, ones, -half_sq], dim=-1).transpose(1, 2)  # (B, F + 2, N)
        values = maps.detach().float().flatten(2).transpose(1, 2)  # (B, N, K)
        out = torch.empty((b, n, k), device=maps.device, dtype=torch.float32)
        for start in range(0, n, tile):
            stop = min(start + tile, n)
            kernel = torch.bmm(queries[:, start:stop], keys).exp_()  # (B, t, N): exp(-|f_i - f_j|^2 / 2)
            out[:, start:stop] = torch.bmm(kernel, values)  # (B, t, K)
    return out.transpose(1, 2).reshape(b, k, h, w)


class _DenseEnergy(torch.autograd.Function):
    """Value ``-sum(S * AS) / B`` with the reference's gradient ``-2 * AS / B`` w.r.t. S (§2.7 item 7).

    AS already includes the gate G; G is not differentiated and the symmetric-kernel shortcut is kept even though
    G multiplies only one side.
    """

    @staticmethod
    def forward(ctx, probs: torch.Tensor, gated: torch.Tensor) -> torch.Tensor:  # (B, K, h, w) each
        ctx.save_for_backward(gated)
        return -(probs * gated).sum() / probs.shape[0]

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (gated,) = ctx.saved_tensors
        return -2.0 * grad_output * gated / gated.shape[0], None


def downscaled_size(height: int, width: int, scale_factor: float) -> tuple[int, int]:
    """Output size of ``interpolate(scale_factor=s, recompute_scale_factor=True)``: floor(H*s), floor(W*s)."""
    return math.floor(height * scale_factor), math.floor(width * scale_factor)


def energy_inputs(
    *, seg_logits: torch.Tensor, image: torch.Tensor, target: torch.Tensor, scale_factor: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The energy's grid (MORE_SPEC §2.7 steps 1-4): downscaled S (differentiable), image and the gate G.

    Args:
        seg_logits: decoder logits, shape (B, K, h, w); upsampled to the image size before the softmax.
        image: RGB on the 0-255 scale, shape (B, 3, H, W).
        target: Y_ref with 255 = ignore, shape (B, H, W).
        scale_factor: downscaling of the grid.

    Returns:
        fp32 ``probs`` (B, K, h', w'), ``small_image`` (B, 3, h', w') and ``gate`` (B, h', w'), the last two detached.
    """
    height, width = image.shape[-2:]
    size = downscaled_size(height, width, scale_factor)
    with torch.autocast(device_type=seg_logits.device.type, enabled=False):
        logits = seg_logits.float()
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        probs = logits.softmax(dim=1)  # (B, K, H, W)
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)  # (B, K, h', w')
        with torch.no_grad():
            small_image = F.interpolate(image.float(), size=size, mode="nearest")  # (B, 3, h', w')
            small_target = F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0]  # (B, h', w')
            gate = (1.0 - probs.max(dim=1).values).clamp(min=0.0)  # (B, h', w')
            gate = torch.where(small_target == IGNORE, 1.0, gate)
    return probs, small_image, gate


def gated_filter(
    *,
    probs: torch.Tensor,
    small_image: torch.Tensor,
    gate: torch.Tensor,
    sigma_rgb: float,
    sigma_xy: float,
    filter: str = "lattice",
    tile: int = 2048,
) -> torch.Tensor:
    """``G * AS``: the bilateral filter of ``probs`` on the energy grid, times the gate (MORE_SPEC §2.7 step 5).

    Args:
        probs: S on the energy grid, shape (B, K, h', w').
        small_image: RGB on the 0-255 scale on the same grid, shape (B, 3, h', w').
        gate: G, shape (B, h', w').
        sigma_rgb: colour bandwidth.
        sigma_xy: spatial bandwidth in pixels of this grid.
        filter: ``lattice`` (rloss's permutohedral lattice, the reference) or ``exact`` (the Gaussian sum).
        tile: query rows per block of the exact filter.

    Returns:
        float32 (B, K, h', w'), detached.
    """
    if filter not in FILTERS:
        raise ValueError(f"energy filter {filter!r}: expected one of {', '.join(FILTERS)}")
    features = bilateral_features(small_image, sigma_rgb=sigma_rgb, sigma_xy=sigma_xy)
    if filter == "lattice":
        filtered = permutohedral_filter(features=features, maps=probs)
    else:
        filtered = bilateral_filter(features=features, maps=probs, tile=tile)
    return filtered * gate[:, None]


def energy_loss(
    *,
    seg_logits: torch.Tensor,
    image: torch.Tensor,
    target: torch.Tensor,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 100.0,
    scale_factor: float = 0.5,
    weight: float = 1e-7,
    filter: str = "lattice",
    tile: int = 2048,
) -> torch.Tensor:
    """Dense CRF energy ``-weight / B * sum_{b,k,i} S_k(i) G(i) sum_j W_ij S_k(j)`` (``DenseEnergyLoss``).

    Steps (MORE_SPEC §2.7): S = softmax of the logits upsampled to (H, W); downscale the image (nearest), S
    (bilinear) and the target (nearest) by ``scale_factor``; gate G = max(0, 1 - max_k S_k), set to 1 where the
    target is 255; AS = bilateral filter of S with sigma_xy * scale_factor pixels and sigma_rgb; AS <- AS * G.

    Args:
        seg_logits: decoder logits, shape (B, K, h, w).
        image: RGB on the 0-255 scale (de-normalised network input, not clipped), shape (B, 3, H, W).
        target: segmentation target Y_ref with 255 = ignore, shape (B, H, W).
        sigma_rgb: colour bandwidth.
        sigma_xy: spatial bandwidth in full-resolution pixels (scaled by ``scale_factor``).
        scale_factor: downscaling of the grid the energy is evaluated on.
        weight: the reference's internal ``DenseEnergyLoss`` weight (1e-7); the total-loss weight is separate.
        filter: ``lattice`` (rloss's permutohedral lattice, the reference) or ``exact`` (the Gaussian sum).
        tile: query rows per block of the exact filter.

    Returns:
        Scalar loss (fp32) whose gradient w.r.t. the downscaled S is ``-2 * weight * G * AS / B``.
    """
    if filter not in FILTERS:  # before any work
        raise ValueError(f"energy filter {filter!r}: expected one of {', '.join(FILTERS)}")
    probs, small_image, gate = energy_inputs(
        seg_logits=seg_logits, image=image, target=target, scale_factor=scale_factor
    )
    with torch.autocast(device_type=seg_logits.device.type, enabled=False):
        gated = gated_filter(
            probs=probs,
            small_image=small_image,
            gate=gate,
            sigma_rgb=sigma_rgb,
            sigma_xy=sigma_xy * scale_factor,
            filter=filter,
            tile=tile,
        )
        return weight * _DenseEnergy.apply(probs, gated)
