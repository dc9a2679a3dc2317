"""CPU (or CUDA) cost of the energy loss's bilateral filter: permutohedral lattice vs exact Gaussian sum (§2.7, §8.1).

The reference's shapes: batch 4, K = 21 maps on the 224 x 224 grid (448 crop x 0.5), sigma_rgb 15, sigma_xy 50.
For each filter and thread count a fresh process times the filter alone (best of ``--repeat`` calls) and the whole
``energy_loss`` forward + backward once, and reports the memory the call adds (peak RSS minus RSS before it, on the
CPU; peak allocated on CUDA). ``--rloss DIR`` adds rloss's own extension (built by the user, see bench/RESULTS.md)
for the filter row; it parallelises over images with OpenMP, at most one thread per image.

Usage: python bench/bench_energy.py [--threads 1,2] [--repeat 3] [--batch 4] [--rloss DIR] [--device cuda]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench_losses import timed  # the bench scripts' one timer (best of n calls, CUDA-synchronised)

from more.losses.energy import bilateral_features, bilateral_filter, energy_loss
from more.losses.lattice import permutohedral_filter

GRID, CROP, CLASSES = 224, 448, 21


def rss_bytes() -> int:
    """Resident set size now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def inputs(batch: int, device: str) -> dict[str, torch.Tensor]:
    """Smooth random images with edges and softmax maps peaked by region, at 448 and on the 224 grid."""
    g = torch.Generator().manual_seed(0)
    image = F.interpolate(torch.rand(batch, 3, 8, 8, generator=g) * 255, size=(CROP, CROP), mode="bilinear")
    image = image + torch.randn(batch, 3, CROP, CROP, generator=g) * 4
    logits = F.interpolate(torch.randn(batch, CLASSES, 7, 7, generator=g) * 4, size=(28, 28), mode="bilinear")
    small_image = F.interpolate(image, size=(GRID, GRID), mode="nearest")
    maps = F.interpolate(logits, size=(GRID, GRID), mode="bilinear").softmax(1)
    target = torch.randint(0, CLASSES, (batch, CROP, CROP), generator=g)
    tensors = dict(image=image, logits=logits, small_image=small_image, maps=maps, target=target)
    return {k: v.to(device) for k, v in tensors.items()}


def one(variant: str, threads: int, repeat: int, batch: int, device: str, rloss_dir: str | None) -> dict:
    """Time one variant in this process; returns seconds and added memory."""
    torch.set_num_threads(threads)
    x = inputs(batch, device)
    features = bilateral_features(x["small_image"], sigma_rgb=15.0, sigma_xy=50.0)
    if variant == "rloss":
        os.environ["OMP_NUM_THREADS"] = str(threads)
        sys.path.insert(0, rloss_dir)
        ext = importlib.import_module("bilateralfilter")
        img = x["small_image"].numpy().flatten()
        maps = x["maps"].numpy().flatten()

        def run_filter() -> None:
            out = np.zeros_like(maps)
            ext.bilateralfilter_batch(img, maps, out, batch, CLASSES, GRID, GRID, 15.0, 50.0)
    else:
        filt = permutohedral_filter if variant == "lattice" else bilateral_filter

        def run_filter() -> None:
            filt(features=features, maps=x["maps"])

    def run_loss() -> None:
        logits = x["logits"].clone().requires_grad_(True)
        energy_loss(seg_logits=logits, image=x["image"], target=x["target"], filter=variant).backward()

    before = rss_bytes()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    result = {"filter_s": timed(run_filter, repeat, warmup=False)}
    if variant != "rloss":
        result["loss_s"] = timed(run_loss, 1, warmup=False)
    if device == "cuda":
        result["added_mb"] = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:  # ru_maxrss is in KiB on Linux
        result["added_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before) / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma list of thread counts")
    parser.add_argument("--repeat", type=int, default=3, help="filter calls per variant (best is kept)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--variants", default="lattice,exact", help="comma list of lattice, exact")
    parser.add_argument("--rloss", type=Path, help="folder with rloss's built bilateralfilter module")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant and print JSON
    args = parser.parse_args()
    if args.one:
        variant, threads = args.one.split(":")
        rloss_dir = str(args.rloss) if args.rloss else None
        print(json.dumps(one(variant, int(threads), args.repeat, args.batch, args.device, rloss_dir)))
        return
    variants = args.variants.split(",") + (["rloss"] if args.rloss else [])
    if unknown := set(variants) - {"lattice", "exact", "rloss"}:
        parser.error(f"--variants: unknown {sorted(unknown)}")
    if args.rloss and args.device != "cpu":
        parser.error("--rloss: the extension runs on the CPU only; drop it with --device cuda")
    print(f"torch {torch.__version__}, device {args.device}, batch {args.batch}, K {CLASSES}, grid {GRID}x{GRID}")
    print(f"{'filter':<9}{'threads':>8}{'filter [s]':>12}{'loss fwd+bwd [s]':>18}{'added memory [MB]':>19}")
    for threads in [int(t) for t in args.threads.split(",")]:
        for variant in variants:
            command = [sys.executable, __file__, "--one", f"{variant}:{threads}", "--repeat", str(args.repeat)]
            command += ["--batch", str(args.batch), "--device", args.device]
            command += ["--rloss", str(args.rloss)] if args.rloss else []
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{variant} with {threads} thread(s) failed:\n{done.stderr}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            loss = f"{r['loss_s']:.2f}" if "loss_s" in r else "-"
            print(f"{variant:<9}{threads:>8}{r['filter_s']:>12.3f}{loss:>18}{r['added_mb']:>19.0f}", flush=True)


if __name__ == "__main__":
    main()
