"""Training-step benchmark: seconds per iteration, images per second and the breakdown by phase.

Three measurements in one run, on the same model, optimizer and batch:

1. **eager**: plain steps, seconds per iteration and peak device memory;
2. **breakdown** (eager, each phase synchronised on CUDA so the times add up; the syncs cost a little): multi-scale
   CAM pass, training forward, PAR refinement, token masks, every loss term, backward, optimizer step;
3. with ``--compile``: the model's forward through ``torch.compile`` (the first iterations, which compile, are
   timed apart), seconds per iteration, peak memory and the speed-up over eager.

    .venv/bin/python bench/bench_train_step.py                       # synthetic recipe on the CPU
    .venv/bin/python bench/bench_train_step.py --preset voc --device cuda --compile   # the reference VOC step

The VOC preset uses ViT-B/16 at 448x448, batch 4, 4 CAM scales, PAR and every loss including the energy term:
the GPU target is <= 0.12 s/iteration and <= 12 GB peak on one H100 (reference: 0.935 s, 12.1 GB on an RTX 3090).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

import more.train.step as step_mod
from more.config import load_config, num_classes
from more.model import build_model
from more.pseudo.par import PAR
from more.train.optim import PolyWarmupAdamW

LOSS_FNS = ("classification_loss", "mct_loss", "cre_loss", "ure_loss", "ptc_loss", "seg_loss", "energy_loss")
PHASE_FNS = {"multi_scale_cam": "cam pass", "token_masks": "token masks", "refine_cams_with_bkg": "PAR refinement"}


class Timer:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, float] = defaultdict(float)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def phase(self, name: str):
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        self.times[name] += time.perf_counter() - t0

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            with self.phase(name):
                return fn(*args, **kwargs)

        return timed


def run_steps(step_model, par, opt, images, labels, *, cfg, n: int, autocast: bool, iters: int, warmup: int,
              timer: Timer) -> tuple[float, float, float]:
    """(seconds per timed iteration, seconds of the warm-up iterations, peak device GiB of the timed ones)."""
    device = images.device
    total = warm = 0.0
    for i in range(warmup + iters):
        if i == warmup:
            timer.times.clear()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
        timer.sync()
        t0 = time.perf_counter()
        out = step_mod.training_step(step_model, par, images, labels, cfg=cfg, n=n, autocast=autocast)
        with timer.phase("backward"):
            opt.zero_grad(set_to_none=True)
            out.total.backward()
        with timer.phase("optimizer step"):
            opt.step()
        timer.sync()
        if i < warmup:
            warm += time.perf_counter() - t0
        else:
            total += time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return total / iters, warm, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="synthetic", help="voc | coco | synthetic or a YAML file")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0 = default)")
    ap.add_argument("--compile", action="store_true", help="also time the model compiled with torch.compile")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.preset, [*args.overrides, f"runtime.device={args.device}"])
    device = torch.device(args.device)
    autocast = cfg.train.amp == "bf16" or (cfg.train.amp == "auto" and device.type == "cuda")
    b, size, c = cfg.train.batch_size, cfg.data.crop_size, num_classes(cfg)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(b, 3, size, size, generator=g).to(device)
    labels = (torch.rand(b, c, generator=g) < 2.0 / c).float()
    labels[:, 0] = 1.0
    labels = labels.to(device)

    model = build_model(cfg).to(device).train()
    par = PAR(dilations=cfg.pseudo.par_dilations, num_iter=cfg.pseudo.par_iters).to(device)
    opt = PolyWarmupAdamW(model.param_groups(cfg.optim.lr, cfg.optim.head_lr_mult, cfg.optim.weight_decay),
                          cfg=cfg.optim, max_iters=cfg.train.max_iters)
    n_seg_on = cfg.loss.seg_start + 1  # time a step with every term on
    steps = dict(cfg=cfg, n=n_seg_on, autocast=autocast, iters=args.iters, warmup=args.warmup)
    print(f"preset {cfg.name} | {cfg.model.variant} | batch {b} | crop {size} | device {device} | "
          f"autocast {'bf16' if autocast else 'off'} | threads {torch.get_num_threads()}", flush=True)

    plain = Timer(device)
    eager, _, eager_peak = run_steps(model, par, opt, images, labels, timer=plain, **steps)
    summary = [("eager", eager, eager_peak, float("nan"))]
    print(f"eager: {eager:.4f} s/iter", flush=True)

    timer = Timer(device)
    originals = {name: getattr(step_mod, name) for name in (*LOSS_FNS, *PHASE_FNS)}
    for name in LOSS_FNS:
        setattr(step_mod, name, timer.wrap(f"loss: {name.removesuffix('_loss')}", originals[name]))
    for name, label in PHASE_FNS.items():
        setattr(step_mod, name, timer.wrap(label, originals[name]))
    model.forward = timer.wrap("training forward", model.forward)  # the CAM pass calls model.cams, not forward
    try:
        timed_step, _, _ = run_steps(model, par, opt, images, labels, timer=timer, **steps)
    finally:
        for name, fn in originals.items():
            setattr(step_mod, name, fn)
        del model.forward
    breakdown = dict(timer.times)

    if args.compile:
        compiled, warm, peak = run_steps(torch.compile(model), par, opt, images, labels, timer=plain, **steps)
        summary.append(("torch.compile", compiled, peak, warm))
        print(f"torch.compile: {compiled:.4f} s/iter (warm-up incl. compilation {warm:.1f} s)", flush=True)

    print(f"\n| mode | s/iter | images/s | vs eager | peak GiB | warm-up ({args.warmup} it.) |")
    print("|---|---|---|---|---|---|")
    for mode, t, peak, warm in summary:
        print(f"| {mode} | {t:.4f} | {b / t:.2f} | {eager / t:.2f}x | {'-' if peak != peak else f'{peak:.2f}'} | "
              f"{'-' if warm != warm else f'{warm:.1f} s'} |")
    print(f"\nBreakdown (eager, {timed_step:.4f} s/iter with a sync around each phase):")
    print("| phase | s/iter | share |\n|---|---|---|")
    total = timed_step * args.iters
    for name, t in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {t / args.iters:.4f} | {100 * t / total:.1f}% |")
    rest = total - sum(breakdown.values())
    print(f"| other (stacking, masks, total) | {rest / args.iters:.4f} | {100 * rest / total:.1f}% |")


if __name__ == "__main__":
    main()
