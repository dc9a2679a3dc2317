"""Plain re-statements of the reference pseudo-label code (MORE_SPEC §3.1, §3.3), used as test oracles.

Written the way the reference is: per image, dilated one-hot convolutions for the neighbours, only the present
channels, affinity recomputed per call, ``multi_scale_cam2``'s per-scale list and ``adaptive_max_pool2d``
normalisation. Deliberately independent of ``more.pseudo``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _ring_kernel() -> torch.Tensor:
    weight = torch.zeros(8, 1, 3, 3)
    for i, (r, c) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]):
        weight[i, 0, r, c] = 1
    return weight


class LoopPAR:
    """The reference PAR: conv-based dilated neighbours, unbiased std, softmax colour + 0.01 softmax position."""

    def __init__(self, dilations, num_iter):
        self.dilations = list(dilations)
        self.num_iter = num_iter
        self.kernel = _ring_kernel()
        ker = torch.ones(1, 1, 8, 1, 1)
        for i in (0, 2, 5, 7):
            ker[0, 0, i] = np.sqrt(2)
        self.pos = torch.cat([ker * d for d in self.dilations], dim=2)  # (1, 1, 48, 1, 1)

    def neighbours(self, x):
        b, c, h, w = x.shape
        out = []
        for d in self.dilations:
            xp = F.pad(x, [d] * 4, mode="replicate").reshape(b * c, -1, h + 2 * d, w + 2 * d)
            out.append(F.conv2d(xp, self.kernel.to(x), dilation=d).view(b, c, -1, h, w))
        return torch.cat(out, dim=2)  # (b, c, 48, h, w)

    def __call__(self, imgs, masks):
        masks = F.interpolate(masks, size=imgs.shape[-2:], mode="bilinear", align_corners=True)
        b, c, h, w = imgs.shape
        nb = self.neighbours(imgs)
        pos = self.pos.to(nb).repeat(b, 1, 1, h, w)
        rep = imgs.unsqueeze(2).repeat(1, 1, nb.shape[2], 1, 1)
        aff = -(((nb - rep).abs() / (nb.std(dim=2, keepdim=True) + 1e-8) / 0.3) ** 2)
        aff = aff.mean(dim=1, keepdim=True)
        pos_aff = -((pos / (pos.std(dim=2, keepdim=True) + 1e-8) / 0.3) ** 2)
        aff = F.softmax(aff, dim=2) + 0.01 * F.softmax(pos_aff, dim=2)
        for _ in range(self.num_iter):
            masks = (self.neighbours(masks) * aff).sum(2)
        return masks


def loop_refine(par, images255, cams, labels, high, low, down_scale=2, ignore_index=255):
    """``refine_cams_with_bkg_v2``: per image, present channels only, two PAR calls each."""
    b, _, h, w = images255.shape
    imgs = images255.to(torch.uint8).float() / 255.0  # denormalize_img2: uint8 cast, then / 255
    small = [h // down_scale, w // down_scale]
    imgs = F.interpolate(imgs, size=small, mode="bilinear", align_corners=False)
    cams = cams * labels[:, :, None, None]
    lab = torch.cat([torch.ones(b, 1), labels.float()], dim=1)
    out_h = torch.empty(b, h, w, dtype=torch.long)
    out_l = torch.empty(b, h, w, dtype=torch.long)
    for bg, out in ((high, out_h), (low, out_l)):
        with_bkg = torch.cat([torch.ones(b, 1, h, w) * bg, cams], dim=1)
        with_bkg = F.interpolate(with_bkg, size=small, mode="bilinear", align_corners=False)
        for i in range(b):
            key = torch.nonzero(lab[i])[:, 0]
            probs = with_bkg[i, key].unsqueeze(0).softmax(dim=1)
            ref = F.interpolate(par(imgs[[i]], probs), size=(h, w), mode="bilinear", align_corners=False)
            out[i] = key[ref.argmax(dim=1)][0]
    label = out_h.clone()
    label[out_h == 0] = ignore_index
    label[(out_h + out_l) == 0] = 0
    return label


def loop_multi_scale_cam(cam_fn, inputs, scales):
    """``multi_scale_cam2`` with ``cam_fn`` returning (cam, cam_aux)."""
    b, _, h, w = inputs.shape
    cams, auxs = [], []
    for s in [1.0] + [s for s in scales if s != 1.0]:
        x = (
            inputs
            if s == 1.0
            else F.interpolate(inputs, size=(int(s * h), int(s * w)), mode="bilinear", align_corners=False)
        )
        cam, aux = cam_fn(torch.cat([x, x.flip(-1)], dim=0))
        for m, acc in ((cam, cams), (aux, auxs)):
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
            acc.append(F.relu(torch.max(m[:b], m[b:].flip(-1))))
    result = []
    for acc in (cams, auxs):
        cam = torch.sum(torch.stack(acc, dim=0), dim=0)
        cam = cam + F.adaptive_max_pool2d(-cam, (1, 1))
        cam /= F.adaptive_max_pool2d(cam, (1, 1)) + 1e-5
        result.append(cam)
    return tuple(result)
