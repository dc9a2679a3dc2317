"""How far the permutohedral lattice (the reference's energy filter) is from the exact Gaussian sum (MORE_SPEC §2.7.1).

Runs the reference's ``DenseEnergyLoss`` pipeline as MoRe calls it (448 crop, softmax at 448, x0.5 to the 224 grid:
image nearest, S bilinear, Y_ref nearest; ROI all ones; sigma_rgb 15, sigma_xy 100 * 0.5; gate G; -sum(S G AS) / B)
once with ``filter=lattice`` and once with ``filter=exact``, and prints per image the ratio lattice / exact of

* the loss value,
* the gradient w.r.t. the downscaled S (``-2 G AS / B``, so per element the ratio of the filtered maps where G > 0):
  mean, std, min and max over the elements that carry gradient (G > 0, exact AS above 1e-3 of its maximum),
* and the cosine between the two gradient fields and the relative residual after the best single scale factor.

Maps (``--maps``): ``seg`` (smooth, region-peaked softmax from the dataset mask when one exists, else from a
k-means of colour and position), ``smooth`` (low-frequency random logits), ``random`` (i.i.d. logits per pixel).
With ``--rloss DIR`` (a folder holding rloss's built ``bilateralfilter`` module, see bench/RESULTS.md) each lattice
output is also compared with the extension's.

Usage: python bench/bench_energy_ratio.py IMAGE_OR_DIR ... [--masks DIR] [--maps seg,smooth,random] [--rloss DIR]
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from more.losses.energy import energy_inputs, gated_filter

CROP = 448
CLASSES = 21
SUFFIXES = (".jpg", ".jpeg", ".png")


def load_crop(path: Path, mode: str) -> np.ndarray:
    """Resize the shorter side to 448 and take the centre 448 x 448 (``mode`` "RGB" bilinear, "L" nearest).

    A mask ("L") keeps its stored values: palette PNGs (VOC layout) hold class indices, not grey levels.
    """
    img = Image.open(path)
    img = img.convert("RGB") if mode == "RGB" else img
    scale = CROP / min(img.size)
    size = (max(CROP, round(img.size[0] * scale)), max(CROP, round(img.size[1] * scale)))
    img = img.resize(size, Image.BILINEAR if mode == "RGB" else Image.NEAREST)
    left, top = (size[0] - CROP) // 2, (size[1] - CROP) // 2
    return np.asarray(img.crop((left, top, left + CROP, top + CROP)))


def kmeans_regions(image: torch.Tensor, regions: int, generator: torch.Generator) -> torch.Tensor:
    """Region labels (H, W) from 10 Lloyd steps on (RGB / 20, xy / 40) of a 4x-subsampled image."""
    h, w = image.shape[1:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    feats = torch.cat([image / 20.0, torch.stack([xs, ys]) / 40.0]).flatten(1).T  # (HW, 5)
    sample = feats[::16]
    centres = sample[torch.randperm(sample.shape[0], generator=generator)[:regions]]
    for _ in range(10):
        assign = torch.cdist(sample, centres).argmin(1)
        centres = torch.stack(
            [sample[assign == r].mean(0) if (assign == r).any() else centres[r] for r in range(regions)]
        )
    return torch.cdist(feats, centres).argmin(1).view(h, w)


def segmentation_like(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Logits (1, 21, H, W): blurred one-hot of ``labels`` (peaked inside regions, soft at edges) plus smooth noise."""
    onehot = F.one_hot(labels.long(), CLASSES).permute(2, 0, 1)[None].float() * 8.0
    blurred = F.avg_pool2d(F.avg_pool2d(onehot, 31, 1, 15, count_include_pad=False), 31, 1, 15, count_include_pad=False)
    noise = torch.randn(1, CLASSES, 14, 14, generator=generator) * 1.5
    return blurred + F.interpolate(noise, size=labels.shape, mode="bilinear", align_corners=False)


def make_maps(kind: str, image: torch.Tensor, mask: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """Seg-decoder-like logits (1, 21, 448, 448) of the given ``kind``."""
    if kind == "random":
        return torch.randn(1, CLASSES, CROP, CROP, generator=generator) * 2.0
    if kind == "smooth":
        small = torch.randn(1, CLASSES, 14, 14, generator=generator) * 4.0
        return F.interpolate(small, size=(CROP, CROP), mode="bilinear", align_corners=False)
    if mask is None:
        regions = kmeans_regions(image, 4, generator)
        classes = torch.cat(
            [torch.zeros(1, dtype=torch.long), torch.randperm(CLASSES - 1, generator=generator)[:3] + 1]
        )
        mask = classes[regions]
    return segmentation_like(mask.clamp(max=CLASSES - 1) * (mask != 255), generator)


def target_from(logits: torch.Tensor) -> torch.Tensor:
    """Y_ref like the reference's: the argmax, ignored (255) where the top probability is under 0.6."""
    probs = logits.softmax(1)
    top, label = probs.max(1)
    return torch.where(top < 0.6, 255, label)


def summary(x: torch.Tensor) -> str:
    std = x.std().item() if x.numel() > 1 else 0.0
    return f"{x.mean():.4f} +- {std:.4f} [{x.min():.4f}, {x.max():.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files or folders of them")
    parser.add_argument("--masks", type=Path, help="folder of class masks named like the images (seg maps from them)")
    parser.add_argument("--maps", default="seg,smooth,random", help="comma list of seg, smooth, random")
    parser.add_argument("--rloss", type=Path, help="folder with rloss's built bilateralfilter module (cross-check)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    kinds = args.maps.split(",")
    if unknown := set(kinds) - {"seg", "smooth", "random"}:
        parser.error(f"--maps: unknown kind(s) {sorted(unknown)}")
    files = sorted(
        p for a in args.images for p in ([a] if a.is_file() else a.iterdir()) if p.suffix.lower() in SUFFIXES
    )
    if not files:
        parser.error("no .jpg/.png images in the given paths")
    rloss = None
    if args.rloss is not None:
        sys.path.insert(0, str(args.rloss))
        rloss = importlib.import_module("bilateralfilter")  # torch is already imported (OpenMP symbols)
    generator = torch.Generator().manual_seed(args.seed)
    loss_ratios: dict[str, list[float]] = {k: [] for k in kinds}
    print(
        f"{'image':<22}{'maps':<8}{'loss ratio':>11}{'grad ratio per element: mean +- std [min, max]':>50}"
        f"{'cos':>8}{'resid':>8}{'vs rloss':>10}"
    )
    for path in files:
        image = torch.from_numpy(load_crop(path, "RGB").copy()).permute(2, 0, 1).float()  # (3, 448, 448)
        mask_path = args.masks / f"{path.stem}.png" if args.masks else None
        mask = torch.from_numpy(load_crop(mask_path, "L").copy()).long() if mask_path and mask_path.exists() else None
        for kind in kinds:
            logits = make_maps(kind, image, mask, generator)
            probs, small_image, gate = energy_inputs(
                seg_logits=logits, image=image[None], target=target_from(logits), scale_factor=0.5
            )
            common = dict(probs=probs, small_image=small_image, gate=gate, sigma_rgb=15.0, sigma_xy=50.0)
            lattice = gated_filter(**common, filter="lattice")
            exact = gated_filter(**common, filter="exact")
            loss_ratio = float((probs * lattice).sum() / (probs * exact).sum())
            loss_ratios[kind].append(loss_ratio)
            carries = (gate[:, None] > 0) & (exact > 1e-3 * exact.max())
            per_element = (lattice / exact)[carries]
            cos = F.cosine_similarity(lattice.flatten(), exact.flatten(), dim=0).item()
            scale = float((lattice * exact).sum() / (exact * exact).sum())
            resid = float((lattice - scale * exact).norm() / lattice.norm())
            check = "-"
            if rloss is not None:
                out = np.zeros(probs.numel(), dtype=np.float32)
                rloss.bilateralfilter_batch(
                    small_image.numpy().flatten(),
                    probs.detach().numpy().flatten(),
                    out,
                    1,
                    CLASSES,
                    224,
                    224,
                    15.0,
                    50.0,
                )
                theirs = torch.from_numpy(out).view_as(probs) * gate[:, None]
                check = f"{(theirs - lattice).abs().max().item() / theirs.abs().max().item():.1e}"
            print(
                f"{path.stem[:21]:<22}{kind:<8}{loss_ratio:>11.4f}{summary(per_element):>50}{cos:>8.4f}{resid:>8.4f}"
                f"{check:>10}"
            )
    print("\nloss ratio lattice / exact over images:")
    for kind, values in loss_ratios.items():
        v = torch.tensor(values)
        spread = float(v.std() / v.mean()) if len(values) > 1 else math.nan
        print(f"  {kind:<8} {summary(v)}  relative spread {spread:.1%}  ({len(values)} images)")


if __name__ == "__main__":
    main()
