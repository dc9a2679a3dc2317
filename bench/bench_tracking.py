"""Benchmark: the share of a short synthetic trial's time spent in MLflow tracking (target: at most 3 %).

Runs the real trainer on one tiny synthetic config, alternately without tracking and with a
:class:`more.tracking.TrialTracker` (under a :class:`~more.tracking.LaunchTracker`) on a fresh sqlite store, as the
harness opens it (a background sender, not ``strict``), and prints the wall times and the seconds the training thread
spent in tracking (``TrialTracker.overhead_s``: opening the run, per evaluation the outbox line, the per-class tables
and the picture grid, and the end of the run, which waits for the sender), next to the seconds the background sender
spent sending (``TrialTracker.sender_s``: params, one ``log_batch`` and the uploads per evaluation). One-off costs
outside any trial (importing mlflow, creating the sqlite database) are printed separately. The fastest run of each
kind is reported: the test machines are shared and their timings noisy.

``--dead-server`` tracks into ``http://127.0.0.1:<port>`` where nothing listens (the client keeps its default
retries): the training thread's time per evaluation when the store is gone.

Usage: ``python bench/bench_tracking.py [--iters 150] [--eval-every 50] [--variant vit_tiny] [--threads 2]
[--repeats 2] [--dead-server]``. A denser ``--eval-every`` shows the picture budget at work (pictures skipped, final
one kept)."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from more.config import load_config
from more.tracking.runs import PICTURE_BUDGET


def tiny_overrides(args: argparse.Namespace, root: Path) -> list[str]:
    return [
        f"data.root={root}", "data.synth_classes=4", "data.synth_train=64", "data.synth_val=16",
        "data.synth_image_size=96", "data.crop_size=96", "eval.resize=96", f"model.variant={args.variant}",
        "train.batch_size=4", f"train.max_iters={args.iters}", f"train.eval_every={args.eval_every}",
        f"train.ckpt_every={args.eval_every}", "train.log_every=5", "train.keep_ckpts=2", "optim.warmup_iters=5",
        "loss.seg_start=5", f"pseudo.mask_switch_iter={args.iters // 2}", "pseudo.cam_scales=[1.0, 0.5]",
        "lir.ure_kernel=2", "data.num_workers=0", f"runtime.num_threads={args.threads}", "eval.num_vis=4",
    ]


def tracked_run(cfg, uri: str, parent: str, run_dir: Path, name: str, *, finish_wait_s: float | None = None
                ) -> dict[str, float]:
    """One tracked training run; returns its wall time and the tracking seconds by phase."""
    from more.tracking import TrialTracker, trial_key
    from more.train import train

    t0 = time.perf_counter()
    trial = TrialTracker.open(uri, parent, trial_key("000000000000", name), {"more.kind": "trial"}, cfg,
                              run_dir=run_dir, finish_wait_s=finish_wait_s)
    opened = trial.overhead_s
    per_eval: list[float] = []

    def after(_metrics: dict, _ckpt: str | None) -> None:
        per_eval.append(trial.overhead_s - opened - sum(per_eval))

    train(cfg, report=trial.report_callback(after), log=trial.log_callback(), run_dir=run_dir)
    before_finish = trial.overhead_s
    trial.finish("FINISHED")
    return {"wall": time.perf_counter() - t0, "tracking": trial.overhead_s, "open": opened,
            "skipped": trial.pictures_skipped, "sender": trial.sender_s, "logged_through": trial.logged_through,
            "per_eval": per_eval, "finish": trial.overhead_s - before_finish, "checkpoint": trial.last_checkpoint}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--variant", default="vit_tiny")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternate untracked/tracked runs; the best is kept")
    parser.add_argument("--dead-server", action="store_true",
                        help="track into a server address where nothing listens (the store is gone)")
    args = parser.parse_args()

    from more.data import ensure_dataset
    from more.train import train

    work = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    try:
        cfg = load_config("synthetic", tiny_overrides(args, work / "data"))
        ensure_dataset(cfg, progress=lambda *_: None)
        train(cfg, run_dir=work / "warmup", log=lambda _: None)  # warm-up: page cache, torch kernels

        t0 = time.perf_counter()
        import mlflow  # noqa: F401 -- timed on its own: once per worker process, not per trial

        t_import = time.perf_counter() - t0
        from more.tracking import LaunchTracker
        from more.tracking.store import make_client

        uri = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
        t0 = time.perf_counter()
        make_client(uri).search_experiments()  # creates and migrates the database: once per store
        t_db = time.perf_counter() - t0
        launch = LaunchTracker.start(uri, "bench", "000000000000", "name: bench\n", "bench", strict=True)
        parent, finish_wait = launch.run_id, None
        if args.dead_server:
            from more.tracking.store import free_port

            uri, parent, finish_wait = f"http://127.0.0.1:{free_port()}", "f" * 32, 0.0

        plain: list[float] = []
        tracked: list[dict] = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            train(cfg, run_dir=work / f"plain{i}", log=lambda _: None)
            plain.append(time.perf_counter() - t0)
            tracked.append(tracked_run(cfg, uri, parent, work / f"tracked{i}", f"bench-s{i}",
                                       finish_wait_s=finish_wait))
            print(f"repeat {i}: untracked {plain[-1]:.2f} s, tracked {tracked[-1]['wall']:.2f} s of which tracking "
                  f"{tracked[-1]['tracking']:.2f} s", flush=True)

        from more.tracking.pictures import PictureMaker

        pictures = PictureMaker(cfg)
        pictures.png(tracked[-1]["checkpoint"])  # the first call builds the model and reads the images
        t0 = time.perf_counter()
        pictures.png(tracked[-1]["checkpoint"])
        t_picture = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = min(tracked, key=lambda r: r["wall"])
    base = min(plain)
    least = min(r["tracking"] for r in tracked)
    print(f"\nshort synthetic trial: {args.iters} iterations of {args.variant}, evaluation every {args.eval_every} "
          f"({len(best['per_eval'])} evaluations), {args.threads} threads, best of {args.repeats}"
          + (f"; tracking into {uri}, where nothing listens" if args.dead_server else "; tracking into sqlite"))
    print(f"  untracked trial             {base:8.2f} s")
    print(f"  tracked trial               {best['wall']:8.2f} s  (wall difference {best['wall'] - base:+.2f} s, "
          f"{100 * (best['wall'] - base) / base:+.1f} %; noisy on a shared machine)")
    print(f"  inside tracking calls       {best['tracking']:8.2f} s  = {100 * best['tracking'] / best['wall']:.2f} % "
          f"of that tracked trial (least over repeats: {least:.2f} s = {100 * least / best['wall']:.2f} %)")
    print(f"    open run + params         {best['open']:8.3f} s")
    print("    per evaluation            " + ", ".join(f"{s:.3f}" for s in best["per_eval"]) + " s")
    print(f"      of which picture grid   {t_picture:8.3f} s (weights reloaded, {cfg.eval.num_vis} images)")
    print(f"    finish (log, status)      {best['finish']:8.3f} s (waits for the sender to catch up)")
    print(f"  background sender           {best['sender']:8.2f} s  (off the training thread; run holds iteration "
          f"{best['logged_through']})")
    print(f"  pictures skipped by the {100 * PICTURE_BUDGET:g} % budget: {best['skipped']} of {len(best['per_eval'])}")
    per_iter = min(base, best["wall"]) / args.iters  # the least contended run
    mean_eval = sum(best["per_eval"]) / max(len(best["per_eval"]), 1)
    print(f"  at the synthetic preset's cadence (evaluation every 200 iterations of ~{per_iter:.3f} s here): "
          f"~{100 * mean_eval / (200 * per_iter):.2f} % per evaluation interval")
    print(f"  one-off, outside the trial: import mlflow {t_import:.2f} s (per process), "
          f"create the sqlite store {t_db:.2f} s (per store)")


if __name__ == "__main__":
    main()
