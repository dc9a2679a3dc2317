"""Write ``tests/golden/energy_lattice.pt``: small inputs and what rloss's ``bilateralfilter_batch`` returns for them.

rloss (meng-tang/rloss, ``pytorch/wrapper/bilateralfilter``) must be built by the user (bench/RESULTS.md, "Energy
filter"); this script only imports it from ``--rloss``. The fixture keeps the inputs and rloss's outputs, nothing of
its code, so that tests/losses/test_losses_energy_lattice.py runs without it.

Usage: python tests/golden/energy_make_lattice.py --rloss DIR [--out tests/golden/energy_lattice.pt]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# (name, batch, channels, height, width, sigma_rgb, sigma_xy): tiny random, a medium one, and a smooth image with
# edges at the reference's bandwidths (sigma_rgb 15, sigma_xy 50 on the 224 grid)
CASES = [
    ("tiny", 2, 3, 7, 9, 15.0, 3.0),
    ("medium", 2, 4, 20, 17, 15.0, 5.0),
    ("reference_sigmas", 1, 21, 32, 32, 15.0, 50.0),
]


def case_inputs(b: int, k: int, h: int, w: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """An image on the 0-255 scale (smooth colours plus a sharp square) and softmax maps peaked by region."""
    image = F.interpolate(torch.rand(b, 3, 4, 4, generator=generator) * 255, size=(h, w), mode="bilinear")
    image[:, :, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = torch.rand(b, 3, 1, 1, generator=generator) * 255
    image = image + torch.randn(b, 3, h, w, generator=generator) * 3.0  # sensor noise, a little below 0 and above 255
    logits = F.interpolate(torch.randn(b, k, 3, 3, generator=generator) * 4, size=(h, w), mode="bilinear")
    return image.float(), logits.softmax(1).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rloss", type=Path, required=True, help="folder with the built bilateralfilter module")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("energy_lattice.pt"))
    args = parser.parse_args()
    sys.path.insert(0, str(args.rloss))
    rloss = importlib.import_module("bilateralfilter")  # after torch, which brings the OpenMP runtime
    generator = torch.Generator().manual_seed(0)
    fixture = {}
    for name, b, k, h, w, sigma_rgb, sigma_xy in CASES:
        image, maps = case_inputs(b, k, h, w, generator)
        out = np.zeros(maps.numel(), dtype=np.float32)
        rloss.bilateralfilter_batch(
            image.numpy().flatten(), maps.numpy().flatten(), out, b, k, h, w, sigma_rgb, sigma_xy
        )
        fixture[name] = {
            "image": image,
            "maps": maps,
            "sigma_rgb": torch.tensor(sigma_rgb),
            "sigma_xy": torch.tensor(sigma_xy),
            "rloss": torch.from_numpy(out).view(b, k, h, w),
        }
    tmp = args.out.with_name(args.out.name + ".tmp")
    torch.save(fixture, tmp)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
