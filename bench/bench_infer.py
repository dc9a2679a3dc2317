"""Inference throughput on the synthetic set scaled up, the size of the stored maps, and what storing them compactly
costs in accuracy.

    python bench/bench_infer.py [--images 5000] [--size 128] [--checkpoint CKPT] [--work DIR] [key=value ...]

1. Network pass (``infer --task seeds``, maps stored as uint8): in this process, and on the embedded Ray with 1 and
   2 CPU network workers (one torch thread each). Images per second over the whole split (worker start included).
2. DenseCRF alone, on the maps the network pass stored: the in-process pool (``CrfRunner``) and Ray tasks
   (``infer_fanout.crf_task``), each with 1 and 2 workers. Images per second.
3. Bytes per image of the stored files: uint8 maps (written), float16 and float32 maps (re-encoded from the same
   float32 maps), the seed and mask PNGs.
4. Accuracy of compact maps: seeds (threshold) and masks (DenseCRF) made from uint8 / float16 maps against the same
   made from the float32 maps, on the first ``--accuracy-images`` images: mIoU against the ground truth and the
   share of pixels that change.

Without ``--checkpoint`` a randomly initialised model of the synthetic recipe is used (say so when quoting).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from more.eval.infer_items import CrfJob, decode_maps, encode_maps, sparse_hist
from more.eval.metrics import scores


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="training images of the generated set")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--checkpoint", help="a checkpoint of the synthetic recipe (default: random init)")
    parser.add_argument("--work", help="folder for the data and outputs (default: a temporary folder)")
    parser.add_argument("--accuracy-images", type=int, default=500)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (comma-separated)")
    parser.add_argument("--skip-ray", action="store_true", help="only the in-process measurements")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides of the checkpoint's config")
    return parser.parse_args()


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def quiet(_text: str) -> None:
    pass


def dataset(root: Path, args: argparse.Namespace) -> None:
    from more.data import SynthOptions, generate_dataset

    if (root / "synth.json").is_file():
        return
    options = SynthOptions(classes=args.classes, train=args.images, val=max(10, args.images // 50), size=args.size,
                           seed=0)
    t0 = time.perf_counter()
    generate_dataset(root, options, progress=quiet)
    log(f"generated {args.images} images of {args.size} px in {time.perf_counter() - t0:.0f} s -> {root}")


def random_checkpoint(work: Path, root: Path, args: argparse.Namespace) -> Path:
    import torch

    from more.config import load_config
    from more.model import build_model
    from more.train.checkpoint import save_checkpoint

    cfg = load_config("synthetic", [f"data.root={root}", f"data.synth_classes={args.classes}", *args.overrides])
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False)
    return save_checkpoint(work / "random_run", iteration=0, model=model, optimizer=torch.optim.SGD(
        model.parameters(), lr=0.1), data_state={"epoch": 0, "position": 0}, cfg=cfg, keep=1)


def plan(ckpt: Path, root: Path, out: Path, task: str, overrides: list[str], *, maps: str = "uint8", workers: int = 1):
    from more.eval.infer import InferOptions
    from more.eval.infer_job import InferRequest, plan_inference

    request = InferRequest(checkpoint=str(ckpt), options=InferOptions(task=task, workers=workers, maps=maps),
                           overrides=[f"data.root={root}", "runtime.device=cpu", "runtime.num_threads=1",
                                      "data.num_workers=0", *overrides], split="train", out=str(out))
    return plan_inference(request, log=quiet)


def timed_run(the_plan, execute) -> float:
    from more.eval.infer_job import run_plan

    t0 = time.perf_counter()
    result, _, _ = run_plan(the_plan, execute=execute, log=quiet)
    seconds = time.perf_counter() - t0
    assert result.num_images == len(the_plan.dataset) and result.computed == len(the_plan.dataset)
    return seconds


def crf_jobs(the_plan, names: list[str], maps_dir: Path, task_output: str = "masks") -> list[CrfJob]:
    """CRF jobs rebuilt from the stored maps and the original images (what a CRF worker receives)."""
    from PIL import Image

    from more.data import read_mask

    jobs = []
    for name in names:
        fg, class_ids = decode_maps(maps_dir / f"{name}.npz")
        with Image.open(the_plan.dataset.files.image_path(name)) as im:
            orig = np.ascontiguousarray(np.array(im.convert("RGB"), dtype=np.uint8))
        gt = read_mask(the_plan.dataset.files.mask_path(name))
        lookup = np.concatenate([[0], class_ids]).astype(np.int64)
        jobs.append(CrfJob(name, task_output, (orig, fg, tuple(range(len(class_ids)))), gt, lookup))
    return jobs


class Sink:
    """Stands in for the store: counts what the CRF hands back."""

    def __init__(self) -> None:
        self.done = 0

    def submit_crf(self, dones: list) -> None:
        self.done += len(dones)


def crf_pool_rate(jobs: list[CrfJob], kwargs: dict, k: int, workers: int) -> float:
    from more.eval.infer import CrfRunner

    sink = Sink()
    t0 = time.perf_counter()
    runner = CrfRunner("masks", kwargs, k, sink, workers=workers)  # type: ignore[arg-type]
    for job in jobs:
        runner.add(job)
    runner.close()
    assert sink.done == len(jobs)
    return len(jobs) / (time.perf_counter() - t0)


def crf_ray_rate(jobs: list[CrfJob], kwargs: dict, k: int, slots: int) -> float:
    import ray

    from more.harness.infer_fanout import crf_task
    from more.harness.local_ray import ray_runtime

    with ray_runtime(None, num_cpus=slots, num_gpus=0):
        ray.get(crf_task.remote(jobs[0], "masks", kwargs, k))  # workers started before the clock
        t0 = time.perf_counter()
        pending, done, index = set(), 0, 0
        while done < len(jobs):
            while index < len(jobs) and len(pending) < 2 * slots:
                pending.add(crf_task.remote(jobs[index], "masks", kwargs, k))
                index += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                ray.get(ref)
                pending.discard(ref)
                done += 1
        return len(jobs) / (time.perf_counter() - t0)


def accuracy(the_plan, count: int) -> tuple[list[tuple[str, float, float, float]], dict[str, float]]:
    """Seeds and masks from compact maps against the same from the float32 maps, on the first ``count`` images.

    Returns:
        ``[(what, mIoU from float32 maps, mIoU from compact maps, % pixels changed)]`` and the mean bytes per image
        of each encoding of those maps.
    """
    from more.data import collate_eval
    from more.eval.infer import InferOptions, crf_kwargs
    from more.eval.infer_work import net_batch
    from more.pseudo.crf import crf_from_scores

    cfg, run = the_plan.cfg, the_plan.run
    k = cfg.data.synth_classes + 1
    kwargs, thre = crf_kwargs(cfg), cfg.eval.bkg_thre
    formats = ("uint8", "float16")
    base = {key: np.zeros((k, k), dtype=np.int64) for key in ("seeds", "masks")}
    compact = {(fmt, key): np.zeros((k, k), dtype=np.int64) for fmt in formats for key in ("seeds", "masks")}
    changed = dict.fromkeys(compact, 0)
    sizes = dict.fromkeys(("uint8", "float16", "float32", "npy"), 0)
    pixels = images = 0
    n = min(count, len(the_plan.dataset))
    options = InferOptions(task="masks", source=the_plan.options.source)
    for start in range(0, n, cfg.eval.batch_size):
        batch = collate_eval([the_plan.dataset[i] for i in range(start, min(start + cfg.eval.batch_size, n))])
        for work in net_batch(run, batch, options, maps="none"):
            job = work.crf
            orig, fg, channels = job.args
            ids = job.lookup  # [0, class ids of the present classes]

            def seed(maps: np.ndarray, ids: np.ndarray = ids) -> np.ndarray:  # argmax + 1, background at <= thre
                return np.where(maps.max(0) <= thre, 0, ids[1:][maps.argmax(0)]) if len(maps) else \
                    np.zeros(maps.shape[1:], dtype=np.int64)

            def mask(maps: np.ndarray, orig: np.ndarray = orig, channels: tuple = channels,
                     ids: np.ndarray = ids) -> np.ndarray:
                return ids[crf_from_scores(orig, np.ascontiguousarray(maps), channels, **kwargs)]

            reference = {"seeds": seed(fg), "masks": mask(fg)}
            for key, label in reference.items():
                base[key] += _dense(sparse_hist(label, job.gt, k), k)
            pixels += fg.shape[1] * fg.shape[2]
            images += 1
            sizes["float32"] += _float32_npz(fg, ids[1:])
            sizes["npy"] += fg.nbytes  # the reference's np.save of the present classes' float32 maps, uncompressed
            for fmt in formats:
                data = encode_maps(fg, ids[1:], fmt)
                sizes[fmt] += len(data)
                maps, _ = decode_maps(data)
                for key, label in (("seeds", seed(maps)), ("masks", mask(maps))):
                    compact[(fmt, key)] += _dense(sparse_hist(label, job.gt, k), k)
                    changed[(fmt, key)] += int((label != reference[key]).sum())
    rows = [(f"{key} from {fmt} maps", 100 * scores(base[key]).miou, 100 * scores(compact[(fmt, key)]).miou,
             100 * changed[(fmt, key)] / pixels) for fmt in formats for key in ("seeds", "masks")]
    return rows, {fmt: size / max(images, 1) for fmt, size in sizes.items()}


def _dense(sparse: np.ndarray, k: int) -> np.ndarray:
    dense = np.zeros(k * k, dtype=np.int64)
    np.add.at(dense, sparse[:, 0], sparse[:, 1])
    return dense.reshape(k, k)


def main() -> None:
    args = parse()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-infer-"))
    root = work / "data"
    dataset(root, args)
    shutil.rmtree(work / "out", ignore_errors=True)  # the bench's own outputs of an earlier run: measure afresh
    ckpt = Path(args.checkpoint) if args.checkpoint else random_checkpoint(work, root, args)
    n = args.images
    counts = [int(x) for x in args.workers.split(",")]
    load = os.getloadavg()
    print(f"# bench_infer: {n} images of {args.size} px, checkpoint {'random init' if not args.checkpoint else ckpt}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f}\n")

    from more.eval.infer import crf_kwargs
    from more.eval.infer_job import in_process

    rates = []
    seeds_plan = plan(ckpt, root, work / "out" / "seeds_inproc", "seeds", args.overrides)
    rates.append(("network pass (seeds)", "in-process, 1 thread", n / timed_run(seeds_plan, in_process(quiet))))
    if not args.skip_ray:
        from more.harness.infer_fanout import fanout_runtime, run_fanout

        for workers in counts:
            p = plan(ckpt, root, work / "out" / f"seeds_ray{workers}", "seeds", args.overrides)
            with fanout_runtime(None, net_workers=workers, crf_workers=1, device="cpu", log=quiet) as fan:
                seconds = timed_run(p, lambda pl, fan=fan: run_fanout(pl, fan, log=quiet))
            rates.append(("network pass (seeds)", f"Ray, {workers} CPU network worker(s)", n / seconds))
            same = all((work / "out" / f"seeds_ray{workers}" / "seeds" / f"{name}.png").read_bytes()
                       == (work / "out" / "seeds_inproc" / "seeds" / f"{name}.png").read_bytes()
                       for name in seeds_plan.dataset.names)
            log(f"Ray with {workers} worker(s): seeds byte-identical to in-process: {same}")

    names = list(seeds_plan.dataset.names)
    jobs = crf_jobs(seeds_plan, names, work / "out" / "seeds_inproc" / "maps")
    kwargs, k = crf_kwargs(seeds_plan.cfg), args.classes + 1
    for workers in counts:
        rates.append(("DenseCRF", f"process pool, {workers} worker(s)", crf_pool_rate(jobs, kwargs, k, workers)))
    if not args.skip_ray:
        for slots in counts:
            rates.append(("DenseCRF", f"Ray tasks, {slots} CPU(s)", crf_ray_rate(jobs, kwargs, k, slots)))
    del jobs
    print("| stage | how | images / s |\n|---|---|---|")
    for stage, how, rate in rates:
        print(f"| {stage} | {how} | {rate:.1f} |")

    maps_dir = work / "out" / "seeds_inproc" / "maps"
    rows, encoded = accuracy(seeds_plan, args.accuracy_images)
    m = min(args.accuracy_images, n)
    present = np.mean([len(decode_maps(maps_dir / f"{x}.npz")[1]) for x in names])
    print(f"\n| stored per image ({args.size} px, {present:.2f} present classes on average) | bytes |\n|---|---|")
    print(f"| maps, uint8 (as written, all {n} images) | "
          f"{np.mean([(maps_dir / f'{x}.npz').stat().st_size for x in names]):,.0f} |")
    for fmt in ("uint8", "float16", "float32"):
        print(f"| maps, {fmt}, npz compressed (first {m} images) | {encoded[fmt]:,.0f} |")
    print(f"| maps, float32, present classes uncompressed (as the reference's np.save; first {m} images) | "
          f"{encoded['npy']:,.0f} |")
    seeds_dir = work / "out" / "seeds_inproc" / "seeds"
    print(f"| seed PNG | {np.mean([(seeds_dir / f'{x}.png').stat().st_size for x in names]):,.0f} |")

    print(f"\n| accuracy of compact maps (first {m} images) | mIoU from float32 maps | mIoU from compact maps | "
          f"pixels changed |\n|---|---|---|---|")
    for what, reference, compact, changed in rows:
        print(f"| {what} | {reference:.3f} | {compact:.3f} | {changed:.4f} % |")
    print(json.dumps({"work": str(work)}))


def _float32_npz(maps: np.ndarray, classes: np.ndarray) -> int:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, scores=maps.astype(np.float32), classes=classes)
    return len(buffer.getvalue())


if __name__ == "__main__":
    main()
