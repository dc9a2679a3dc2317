"""Validation-pass benchmark: the batched evaluator against one image at a time (the reference's structure).

The reference validates VOC val (1449 images) with batch 1: multi-scale x flip CAM, single-scale LAM and seg per
image, and per-image host copies; it needs about 375 s per pass on its GPU (MORE_SPEC §8.9). ``more.eval.evaluate``
batches the resized images and accumulates every confusion matrix on the device. This script times the same
evaluator on the same in-memory set at each ``--batch`` size, so the ratio isolates batching.

The set is random (images, one rectangle of a present class per mask at VOC-like original sizes): the time of a
pass does not depend on the pixels. The model has random weights for the same reason.

    .venv/bin/python bench/bench_validation.py --threads 1                       # synthetic recipe, CPU
    .venv/bin/python bench/bench_validation.py --preset voc --device cuda --images 1449 --batch 1,16
"""

from __future__ import annotations

import argparse
import time

import torch

from more.config import load_config, num_classes
from more.data import collate_eval
from more.eval.evaluate import evaluate
from more.model import build_model
from more.train.trainer import use_autocast


def fake_val_set(n: int, *, classes: int, resize: int, sizes: list[tuple[int, int]], seed: int = 0) -> list[dict]:
    """``n`` eval items shaped like the loader's: resized image, labels, mask at the original size, orig, name."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        cls = int(torch.randint(classes, (1,), generator=g))
        labels = torch.zeros(classes)
        labels[cls] = 1.0
        mask = torch.zeros(h, w, dtype=torch.long)
        mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = cls + 1
        mask[:2] = 255
        items.append({"image": torch.randn(3, resize, resize, generator=g), "labels": labels, "mask": mask,
                      "orig": torch.zeros(h, w, 3, dtype=torch.uint8), "name": f"img{i:05d}"})
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="synthetic", help="voc | coco | synthetic or a YAML file")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=0, help="images per pass (0: the preset's val size: 60 / 1449)")
    ap.add_argument("--batch", default="1,8", help="comma-separated eval batch sizes to time (first = baseline)")
    ap.add_argument("--repeat", type=int, default=1, help="timed passes per batch size (the best is reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0 = default)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch.split(",")]
    if not batches or min(batches) < 1:
        ap.error(f"--batch: positive integers expected, got {args.batch!r}")
    cfg = load_config(args.preset, [*args.overrides, f"runtime.device={args.device}"])
    device = torch.device(args.device)
    autocast = use_autocast(cfg, device)
    synthetic = cfg.data.dataset == "synthetic"
    n = args.images or (cfg.data.synth_val if synthetic else 1449)
    side = cfg.data.synth_image_size
    sizes = [(side, side)] if synthetic else [(375, 500), (500, 375), (333, 500)]
    items = fake_val_set(n, classes=num_classes(cfg), resize=cfg.eval.resize, sizes=sizes)
    model = build_model(cfg).to(device)

    print(f"preset {cfg.name} | {cfg.model.variant} | {n} images resized to {cfg.eval.resize} | CAM scales "
          f"{cfg.pseudo.cam_scales} x flip | device {device} | autocast {'bf16' if autocast else 'off'} | "
          f"threads {torch.get_num_threads()}")
    results = []
    for b in batches:
        loader = torch.utils.data.DataLoader(items, batch_size=b, shuffle=False, collate_fn=collate_eval)
        warm = torch.utils.data.DataLoader(items[: b], batch_size=b, collate_fn=collate_eval)
        evaluate(model, warm, cfg=cfg, device=device, autocast=autocast)  # kernels, allocator, autotuning
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        best = float("inf")
        for _ in range(args.repeat):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            evaluate(model, loader, cfg=cfg, device=device, autocast=autocast)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        results.append((b, best, peak))
        print(f"batch {b}: {best:.2f} s per pass, {n / best:.1f} images/s", flush=True)

    base = results[0][1]
    print(f"\n| eval batch | s per pass | images/s | 1449 images (extrap.) | vs batch {results[0][0]} | peak GiB |")
    print("|---|---|---|---|---|---|")
    for b, t, peak in results:
        print(f"| {b} | {t:.2f} | {n / t:.1f} | {1449 * t / n:.1f} s | {base / t:.2f}x | "
              f"{'-' if peak != peak else f'{peak:.2f}'} |")


if __name__ == "__main__":
    main()
