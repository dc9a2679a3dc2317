"""Pixel-Adaptive Refinement (PAR) and the two-threshold PAR refinement of the segmentation target.

Reference: ``model/PAR.py`` (ToCo's PAR) and ``refine_cams_with_bkg_v2`` in ``utils/camutils.py`` of
zwyang6/MoRe, paraphrased in MORE_SPEC §3.3; the batched form follows MORE_SPEC §8.4.

Differences from the reference that do not change the result:

* All images and both background variants run in one batch; the image affinity is computed once per image and
  shared by the two variants (the reference loops over images and recomputes it for each variant).
* The 48 neighbours are shifted slices of one replicate-padded tensor (padding by the largest dilation gives
  the same values as padding by each dilation), accumulated in place, instead of dilated one-hot convolutions.
* ``channels="all"`` keeps every class channel and masks absent classes to -inf before the channel softmax;
  their probabilities are then exactly 0, stay 0 under PAR and never win the argmax, so the labels equal those
  of the reference's "keep only present channels" (up to float summation order). ``channels="present"``
  gathers the background and the present classes into max(#present) + 1 channels instead (one scalar read
  from the device); it is the CPU default and worth it on GPUs when C is large (COCO).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = 255

# PAR on the CPU runs over channel chunks of about this many bytes (all masks of the chunk), which keeps the 48
# neighbour passes of every iteration inside the last-level cache (~2x faster at VOC shapes than one pass).
CPU_CHUNK_BYTES = 4 * 2**20

# The 3x3 ring without its centre, in the reference kernel's order (row-major).
_RING: tuple[tuple[int, int], ...] = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


class PAR(nn.Module):
    """Pixel-adaptive refinement: masks are repeatedly averaged over 48 colour-weighted dilated neighbours.

    Args:
        dilations: dilations of the 3x3 ring; 8 neighbours each.
        num_iter: propagation iterations.
        colour_temp: the 0.3 divisor of the normalised differences (``w1`` in the reference).
        pos_weight: weight of the position affinity (``w2`` = 0.01).
    """

    def __init__(
        self,
        dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
        num_iter: int = 10,
        *,
        colour_temp: float = 0.3,
        pos_weight: float = 0.01,
    ) -> None:
        super().__init__()
        self.dilations = [int(d) for d in dilations]
        self.num_iter = int(num_iter)
        self.colour_temp = colour_temp
        self.pos_weight = pos_weight
        self.offsets = [(dy * d, dx * d) for d in self.dilations for dy, dx in _RING]
        self.pad = max(self.dilations)
        dist = torch.tensor(
            [d * (math.sqrt(2.0) if dy != 0 and dx != 0 else 1.0) for d in self.dilations for dy, dx in _RING],
            dtype=torch.float32,
        )
        # Constant position affinity: -(dist / unbiased std / 0.3)^2, softmax over the 48 neighbours.
        pos_aff = -((dist / (dist.std() + 1e-8) / colour_temp) ** 2)
        self.register_buffer("pos_softmax", pos_aff.softmax(dim=0), persistent=False)  # (48,)

    def _neighbours(self, x: torch.Tensor) -> list[torch.Tensor]:
        """48 shifted views of ``x`` (N, K, H, W): neighbour n of pixel (y, x) is x[clamp(y+dy), clamp(x+dx)]."""
        h, w = x.shape[-2:]
        p = self.pad
        padded = F.pad(x, [p, p, p, p], mode="replicate")  # (N, K, H+2p, W+2p)
        return [padded[..., p + dy : p + dy + h, p + dx : p + dx + w] for dy, dx in self.offsets]

    def affinity(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel weights of the 48 neighbours.

        Args:
            images: (B, 3, H, W) images (the reference feeds uint8-truncated RGB / 255).

        Returns:
            (B, 48, H, W) weights: softmax of the colour affinity + 0.01 · softmax of the position affinity
            (each pixel's weights sum to 1.01; not renormalised, as in the reference).
        """
        images = images.float()
        b, _, h, w = images.shape
        nbrs = self._neighbours(images)  # 48 × (B, 3, H, W) views; processed one at a time to stay in cache
        mean = torch.zeros_like(images)
        for x in nbrs:
            mean.add_(x)
        mean.div_(len(nbrs))
        var = torch.zeros_like(images)
        for x in nbrs:
            centred = x - mean
            var.addcmul_(centred, centred)
        std = var.div_(len(nbrs) - 1).sqrt_()  # unbiased std over the 48 neighbours (centre excluded)
        std.add_(1e-8)
        aff = torch.empty(b, len(nbrs), h, w, device=images.device)  # (B, 48, H, W)
        diff = torch.empty_like(images)
        for n, x in enumerate(nbrs):  # -(|I_n - I_0| / (std + 1e-8) / 0.3)^2, averaged over RGB
            torch.sub(x, images, out=diff)
            diff.abs_().div_(std).div_(self.colour_temp).square_()
            torch.mean(diff, dim=1, out=aff[:, n])
        aff = aff.neg_().softmax(dim=1)  # softmax over the 48 neighbours
        pos = self.pos_softmax.to(device=aff.device, dtype=aff.dtype)
        return aff + self.pos_weight * pos[None, :, None, None]

    def propagate(self, masks: torch.Tensor, aff: torch.Tensor) -> torch.Tensor:
        """Run ``num_iter`` steps of ``mask <- Σ_n aff_n · mask_n``.

        Args:
            masks: (V·B, K, H, W) masks; V variants stacked variant-major (index v·B + b) share image b's affinity.
            aff: (B, 48, H, W) from :meth:`affinity`.

        Returns:
            (V·B, K, H, W) propagated masks.
        """
        b, _, h, w = aff.shape
        if masks.shape[-2:] != (h, w):
            masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=True)
        vb, k = masks.shape[:2]
        if vb % b:
            raise ValueError(f"PAR: {vb} masks are not a multiple of the {b} affinity maps")
        weights = aff.unsqueeze(1).unbind(dim=2)  # 48 × (B, 1, H, W)
        step = k
        if masks.device.type == "cpu":  # channels are independent: keep the working set in the CPU cache
            step = max(1, CPU_CHUNK_BYTES // (vb * h * w * masks.element_size()))
        if step < k:
            return torch.cat([self._iterate(c.contiguous(), weights) for c in masks.split(step, dim=1)], dim=1)
        return self._iterate(masks, weights)

    def _iterate(self, masks: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """``num_iter`` propagation steps of (V·B, K, H, W) masks with 48 (B, 1, H, W) neighbour weights."""
        vb, k, h, w = masks.shape
        b = weights[0].shape[0]
        for _ in range(self.num_iter):
            nbrs = self._neighbours(masks.reshape(vb // b, b * k, h, w))  # views of (V, B·K, H, W)
            out = torch.zeros(vb // b, b, k, h, w, device=masks.device, dtype=masks.dtype)
            for nbr, wgt in zip(nbrs, weights):
                out.addcmul_(nbr.view(vb // b, b, k, h, w), wgt)
            masks = out.view(vb, k, h, w)
        return masks

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Refine ``masks`` (V·B, K, h, w) with the affinity of ``images`` (B, 3, H, W); returns (V·B, K, H, W)."""
        return self.propagate(masks, self.affinity(images))


def _present_channels(labels: torch.Tensor) -> torch.Tensor:
    """(B, K') channel ids, background first, then present classes, then padding (-1); K' = 1 + max #present.

    Reads one scalar from the device (the largest class count) to size the result.
    """
    b, c = labels.shape
    present = labels > 0
    count = int(present.sum(dim=1).max())
    ids = torch.arange(1, c + 1, device=labels.device).expand(b, c)
    key = torch.where(present, ids, ids + c)  # present classes sort first, in class order
    order = key.argsort(dim=1)[:, :count]
    chosen = torch.where(present.gather(1, order), order + 1, torch.full_like(order, -1))
    return torch.cat([torch.zeros(b, 1, dtype=chosen.dtype, device=chosen.device), chosen], dim=1)


def refine_cams_with_bkg(
    par: PAR,
    images: torch.Tensor,
    cams: torch.Tensor,
    labels: torch.Tensor,
    *,
    high: float,
    low: float,
    down_scale: int = 2,
    channels: str = "auto",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """PAR-refined segmentation target from CAMs with two background levels (MORE_SPEC §3.3).

    The image is truncated to uint8 and divided by 255 (§10); image and CAMs are bilinearly downscaled by
    ``down_scale``; a constant background channel ``high`` (resp. ``low``) is prepended; absent classes are
    excluded from the channel softmax; PAR refines both variants; the maps are upsampled back (bilinear) and
    argmax'ed. ``Y = label_high``; 255 where label_high is background; 0 where both variants say background.

    Args:
        par: the PAR module.
        images: (B, 3, H, W) float RGB on the 0-255 scale (the caller de-normalises the network input).
        cams: (B, C, H, W) CAMs in [0, 1].
        labels: (B, C) image-level labels.
        high: background level of the high variant (0.7 VOC, 0.65 COCO).
        low: background level of the low variant (0.25).
        down_scale: PAR runs at (H // down_scale, W // down_scale).
        channels: ``"all"``: every class channel, absent ones masked (no host sync); ``"present"``: only the
            background plus as many channels as the image with most present classes needs (one scalar read from
            the device; much less PAR work when C is large); ``"auto"``: ``"present"`` on the CPU, where the read
            costs nothing, else ``"all"``. All give the same labels.
        ignore_index: value of uncertain pixels.

    Returns:
        (B, H, W) int64 labels: 0 background, 1..C classes, ``ignore_index`` uncertain.
    """
    b, c, h, w = cams.shape
    small = (h // down_scale, w // down_scale)
    # The reference's uint8 cast (truncation toward zero), then / 255 in float32. Clamping first only matters outside
    # [0, 256), which the reference's own pipeline never produces and where its cast would wrap around.
    imgs = images.float().clamp(0.0, 255.0).to(torch.uint8) / 255.0  # (B, 3, H, W)
    imgs = F.interpolate(imgs, size=small, mode="bilinear", align_corners=False)  # (B, 3, h', w')
    # The constant background channels go through the same bilinear resize as the CAMs, as in the reference.
    bkg = torch.cat([torch.full((1, 1, h, w), v, dtype=torch.float32, device=cams.device) for v in (high, low)])
    bkg = F.interpolate(bkg, size=small, mode="bilinear", align_corners=False)  # (2, 1, h', w')
    cams_small = F.interpolate(cams.float(), size=small, mode="bilinear", align_corners=False)  # (B, C, h', w')

    if channels == "auto":
        channels = "present" if cams.device.type == "cpu" else "all"
    if channels == "all":
        ids = torch.arange(c + 1, device=cams.device).expand(b, c + 1)  # (B, C+1) channel = class id
        keep = torch.cat([torch.ones_like(labels[:, :1], dtype=torch.bool), labels > 0], dim=1)
        fg = cams_small
    elif channels == "present":
        ids = _present_channels(labels)  # (B, K'), -1 = padding
        keep = ids >= 0
        fg = cams_small.gather(1, (ids[:, 1:] - 1).clamp(min=0)[:, :, None, None].expand(-1, -1, *small))
    else:
        raise ValueError(f"refine_cams_with_bkg: channels must be 'auto', 'all' or 'present', got {channels!r}")

    k = fg.shape[1] + 1
    logits = torch.cat([bkg[:, None].expand(2, b, 1, *small), fg[None].expand(2, b, k - 1, *small)], dim=2)
    logits = logits.masked_fill(~keep[None, :, :, None, None], float("-inf"))  # (2, B, K, h', w')
    probs = logits.softmax(dim=2).reshape(2 * b, k, *small)  # variant-major: high then low

    refined = par(imgs, probs)  # (2B, K, h', w')
    refined = F.interpolate(refined, size=(h, w), mode="bilinear", align_corners=False)
    label = ids.repeat(2, 1).gather(1, refined.argmax(dim=1).flatten(1)).view(2, b, h, w)
    label_high, label_low = label[0], label[1]

    out = torch.where(label_high == 0, torch.full_like(label_high, ignore_index), label_high)
    return torch.where((label_high == 0) & (label_low == 0), torch.zeros_like(out), out)
