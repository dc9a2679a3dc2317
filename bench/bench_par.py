"""Benchmark: batched PAR refinement vs the reference's per-image loop, and multi-scale CAM overhead (CPU).

VOC shapes (MORE_SPEC §3.3, §8.4): B=4 images at 448x448 (PAR runs at 224x224), C=20 classes, 10 iterations,
dilations [1, 2, 4, 8, 12, 24], one to three present classes per image (VOC has ~1.5 on average).

* reference: ``refine_cams_with_bkg_v2`` + ``PAR`` as in the reference code: per image and per background
  variant one PAR call (2·B calls), each recomputing the image affinity, dilated one-hot convolutions for the
  neighbours, only the present channels.
* batched: :func:`more.pseudo.par.refine_cams_with_bkg`, all images and both variants at once, affinity once
  per image; ``channels="all"`` (no host sync) and ``channels="present"`` (one scalar read).

Usage: ``python bench/bench_par.py [--repeats 3] [--threads N] [--size 448]``. Prints the best of ``repeats``
wall times and the speed-up, and checks that both give the same labels.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from more.pseudo.cam import multi_scale_cam
from more.pseudo.par import PAR, refine_cams_with_bkg


class ReferencePAR:
    """The reference PAR (model/PAR.py): conv-based dilated neighbours, affinity recomputed on every call."""

    def __init__(self, dilations: list[int], num_iter: int) -> None:
        self.dilations, self.num_iter = dilations, num_iter
        kernel = torch.zeros(8, 1, 3, 3)
        for i, (r, c) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]):
            kernel[i, 0, r, c] = 1
        self.kernel = kernel
        ker = torch.ones(1, 1, 8, 1, 1)
        ker[0, 0, [0, 2, 5, 7]] = np.sqrt(2)
        self.pos = torch.cat([ker * d for d in dilations], dim=2)

    def to(self, device: torch.device) -> ReferencePAR:
        self.kernel, self.pos = self.kernel.to(device), self.pos.to(device)
        return self

    def neighbours(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        out = []
        for d in self.dilations:
            xp = F.pad(x, [d] * 4, mode="replicate").reshape(b * c, -1, h + 2 * d, w + 2 * d)
            out.append(F.conv2d(xp, self.kernel, dilation=d).view(b, c, -1, h, w))
        return torch.cat(out, dim=2)

    def __call__(self, imgs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        masks = F.interpolate(masks, size=imgs.shape[-2:], mode="bilinear", align_corners=True)
        b, _, h, w = imgs.shape
        nb = self.neighbours(imgs)
        pos = self.pos.repeat(b, 1, 1, h, w)
        rep = imgs.unsqueeze(2).repeat(1, 1, nb.shape[2], 1, 1)
        aff = (-(((nb - rep).abs() / (nb.std(dim=2, keepdim=True) + 1e-8) / 0.3) ** 2)).mean(dim=1, keepdim=True)
        pos_aff = -((pos / (pos.std(dim=2, keepdim=True) + 1e-8) / 0.3) ** 2)
        aff = F.softmax(aff, dim=2) + 0.01 * F.softmax(pos_aff, dim=2)
        for _ in range(self.num_iter):
            masks = (self.neighbours(masks) * aff).sum(2)
        return masks


def reference_refine(par, images255, cams, labels, high, low, down_scale=2, ignore_index=255):
    """``refine_cams_with_bkg_v2``: a Python loop over images, two PAR calls each, a nonzero per image."""
    b, _, h, w = images255.shape
    imgs = images255.to(torch.uint8).float() / 255.0
    small = [h // down_scale, w // down_scale]
    imgs = F.interpolate(imgs, size=small, mode="bilinear", align_corners=False)
    device = cams.device
    lab = torch.cat([torch.ones(b, 1, device=device), labels], dim=1)
    bkg_h = F.interpolate(torch.cat([torch.full((b, 1, h, w), high, device=device), cams], 1), size=small,
                          mode="bilinear")
    bkg_l = F.interpolate(torch.cat([torch.full((b, 1, h, w), low, device=device), cams], 1), size=small,
                          mode="bilinear")
    out_h = torch.empty(b, h, w, dtype=torch.long, device=device)
    out_l = torch.empty(b, h, w, dtype=torch.long, device=device)
    for i in range(b):
        key = torch.nonzero(lab[i])[:, 0]
        for with_bkg, out in ((bkg_h, out_h), (bkg_l, out_l)):
            refined = par(imgs[[i]], with_bkg[i, key].unsqueeze(0).softmax(dim=1))
            refined = F.interpolate(refined, size=(h, w), mode="bilinear", align_corners=False)
            out[i] = key[refined.argmax(dim=1)][0]
    label = out_h.clone()
    label[out_h == 0] = ignore_index
    label[(out_h + out_l) == 0] = 0
    return label


def reference_multi_scale_cam(cam_fn, inputs, scales):
    """``multi_scale_cam2``: per-scale lists, ``torch.stack`` + sum, ``adaptive_max_pool2d`` normalisation."""
    b, _, h, w = inputs.shape
    cams, auxs = [], []
    for s in [1.0] + [s for s in scales if s != 1.0]:
        x = inputs if s == 1.0 else F.interpolate(inputs, size=(int(s * h), int(s * w)), mode="bilinear")
        cam, aux = cam_fn(torch.cat([x, x.flip(-1)], dim=0))
        for m, acc in ((cam, cams), (aux, auxs)):
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
            acc.append(F.relu(torch.max(m[:b], m[b:].flip(-1))))
    out = []
    for acc in (cams, auxs):
        cam = torch.sum(torch.stack(acc, dim=0), dim=0)
        cam = cam + F.adaptive_max_pool2d(-cam, (1, 1))
        cam /= F.adaptive_max_pool2d(cam, (1, 1)) + 1e-5
        out.append(cam)
    return tuple(out)


def best_time(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, float, torch.Tensor]:
    """Best wall time and best process CPU time over ``repeats`` runs, and the last result.

    On a shared machine the CPU time (with ``--threads 1``) is the fairer measure: it excludes time spent waiting
    for a core.
    """
    walls, cpus, out = [], [], None
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), out


def inputs(b: int, c: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth random images (0-255), smooth CAMs in [0, 1] and 1-3 present classes per image."""
    g = torch.Generator().manual_seed(seed)
    images = F.interpolate(torch.rand(b, 3, size // 16, size // 16, generator=g), size=(size, size), mode="bicubic")
    images = (255 * images + 8 * torch.rand(b, 3, size, size, generator=g)).clamp(0, 255)
    cams = F.interpolate(torch.rand(b, c, size // 32, size // 32, generator=g), size=(size, size), mode="bilinear")
    labels = torch.zeros(b, c)
    for i in range(b):
        labels[i, torch.randperm(c, generator=g)[: 1 + i % 3]] = 1
    return images, cams * labels[:, :, None, None], labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where every version runs")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dilations, iters = [1, 2, 4, 8, 12, 24], 10
    images, cams, labels = (t.to(device) for t in inputs(args.batch, args.classes, args.size))
    print(
        f"PAR refinement, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, B={args.batch}, "
        f"{args.size}² -> {args.size // 2}², C={args.classes}, present per image {labels.sum(1).int().tolist()}, "
        f"{iters} iterations, dilations {dilations}, best of {args.repeats}"
    )

    with torch.no_grad():
        ref_par, par = ReferencePAR(dilations, iters).to(device), PAR(dilations, iters).to(device)
        t_ref, c_ref, y_ref = best_time(
            lambda: reference_refine(ref_par, images, cams, labels, 0.7, 0.25), args.repeats
        )
        print(f"  reference loop (2·B PAR calls, affinity each time): wall {t_ref:7.3f} s   cpu {c_ref:7.3f} s")
        for channels in ("all", "present"):
            t, c, y = best_time(
                lambda ch=channels: refine_cams_with_bkg(par, images, cams, labels, high=0.7, low=0.25, channels=ch),
                args.repeats,
            )
            agree = (y == y_ref).float().mean().item()
            print(
                f"  batched, channels={channels:8s}:                    wall {t:7.3f} s   cpu {c:7.3f} s   "
                f"speed-up wall {t_ref / t:5.2f}x cpu {c_ref / c:5.2f}x   label agreement {100 * agree:.4f} %"
            )

        # multi_scale_cam overhead without a model: a fake cam_fn (16x16 average pooling + a 1x1 conv, ~free)
        head = torch.nn.Conv2d(3, 2 * args.classes, 1, bias=False).to(device)

        def cam_fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return head(F.avg_pool2d(x, 16)).chunk(2, dim=1)

        net = torch.randn(args.batch, 3, args.size, args.size, device=device)
        scales = (1.0, 0.5, 0.75, 1.5)
        t_rc, c_rc, ref_cams = best_time(lambda: reference_multi_scale_cam(cam_fn, net, scales), args.repeats)
        t_cam, c_cam, cams_ = best_time(lambda: multi_scale_cam(cam_fn, net, scales), args.repeats)
        diff = max((a - r).abs().max().item() for a, r in zip(cams_, ref_cams))
        print(
            f"multi_scale_cam without the model (4 scales + flips, fake cam_fn, B={args.batch}, C={args.classes}): "
            f"reference wall {t_rc:.3f} s cpu {c_rc:.3f} s; ours wall {t_cam:.3f} s cpu {c_cam:.3f} s "
            f"(max |diff| {diff:.1e})"
        )


if __name__ == "__main__":
    main()
