"""``python -m more infer CKPT --task {seeds,masks,seg,cam2seg} [options] [key=value ...]`` (MORE_SPEC §5.2-5.4).

The path behind the paper's Table 1 (seeds and CRF masks on ``train``) and Table 2 (segmentation on ``val``).
PNGs go to ``OUT/<output>/NAME.png`` (VOC palette), score maps to ``OUT/maps/NAME.npz``; with ground truth the
scores of every output go to ``OUT/metrics.json`` and ``OUT/metrics.md`` and are printed. A rerun of the same
command resumes from the images ``OUT/done.jsonl`` records. Each invocation is an MLflow run (``--no-tracking``).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from more.eval.infer import InferResult
    from more.eval.infer_job import InferPlan

TASKS = ("seeds", "masks", "seg", "cam2seg")  # more.eval.infer.TASKS (not imported: it pulls in torch)
MAP_FORMATS = ("uint8", "float16", "none")  # more.eval.infer_items.MAP_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?",
                        help="checkpoint file or folder (RUN/checkpoints/iter_N), or a run folder (its newest); "
                             "or --spec instead")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the saved config, e.g. eval.bkg_thre=0.45")
    parser.add_argument("--task", required=True, choices=TASKS,
                        help="seeds: CAM/LAM seeds (+ score maps); masks: seeds + DenseCRF; seg: multi-scale decoder "
                             "segmentation; cam2seg: seeds from predicted labels (label-free)")
    parser.add_argument("--source", choices=("cam", "lam"), default="cam", help="score map for seeds/masks/cam2seg")
    parser.add_argument("--spec", metavar="SPEC",
                        help="every finished trial of this ablation spec (its newest checkpoint, outputs beside it), "
                             "one after the other: the infer runs `report SPEC` reads for Tables 1 and 2")
    parser.add_argument("--storage", default="work/ray_results", help="with --spec: the experiment storage of its "
                        "launch (default: work/ray_results)")
    parser.add_argument("--trials", metavar="NAME[,NAME...]", help="with --spec: only these trials")
    parser.add_argument("--split", help="split (default: train for seeds/masks, eval.split for seg/cam2seg)")
    parser.add_argument("--config", metavar="CONFIG",
                        help="preset or experiment YAML (+ the overrides) instead of the run's config.yaml; needed "
                             "for a checkpoint in the authors' format (zwyang6/MoRe's model_iter_N.pth)")
    parser.add_argument("--multiscale", action="store_true",
                        help="scales eval.infer_multiscale instead of eval.infer_cam_scales (seeds/masks/cam2seg)")
    parser.add_argument("--crf", action="store_true", help="also DenseCRF (seg, cam2seg; seeds --crf = masks)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: <checkpoint folder>/infer_<task>_...); "
                        "an interrupted run resumes when the same command is run again")
    parser.add_argument("--force", action="store_true",
                        help="write into --out even inside data.root or a folder holding files more did not create")
    parser.add_argument("--maps", choices=MAP_FORMATS, default="uint8",
                        help="score maps of the present classes: uint8 (1/255 steps, default), float16, or none")
    parser.add_argument("--archive", action="store_true",
                        help="--task seg: also OUT/voc2012_comp6_test_cls.tar.gz for the PASCAL VOC evaluation server")
    parser.add_argument("--workers", type=int, default=0,
                        help="CRF processes (default: eval.crf_workers; 0 there = 60%% of the cores); with Ray: CRF "
                             "tasks at once (default: every free CPU of the cluster)")
    parser.add_argument("--net-workers", type=int, default=0,
                        help="network workers (default: one per GPU, 1 without GPUs); more than one runs on Ray")
    parser.add_argument("--address", metavar="HOST:PORT",
                        help="run on this Ray cluster: the network on its GPUs, DenseCRF on all its CPUs")
    parser.add_argument("--ray", action="store_true",
                        help="use a local Ray (loopback) even with one network worker")
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else work/mlflow)")
    parser.add_argument("--no-tracking", action="store_true", help="do not log an MLflow run")


def run(args: argparse.Namespace) -> int:
    for name in ("workers", "net_workers"):
        if getattr(args, name) < 0:
            print(f"error: --{name.replace('_', '-')} must be >= 0", file=sys.stderr)
            return 2
    tracker = None
    if not args.no_tracking:
        from more.tracking.infer_runs import InferRunTracker
        from more.tracking.store import resolve_tracking_uri

        tracker = InferRunTracker(resolve_tracking_uri(args.tracking_uri))
    if args.address:
        from more.preflight import ray_address

        ray_address(args.address)

    from more.eval.infer import InferOptions
    from more.eval.infer_job import InferRequest, plan_inference, run_plan

    options = InferOptions(task=args.task, source=args.source, multiscale=args.multiscale, crf=args.crf,
                           workers=args.workers, maps=args.maps)
    checkpoints = _checkpoints(args)
    requests = [InferRequest(checkpoint=ckpt, options=options, overrides=list(args.overrides), split=args.split,
                             out=args.out, force=args.force, archive=args.archive, config=args.config)
                for ckpt in checkpoints]
    try:
        plan = plan_inference(requests[0])
        if len(requests) > 1:  # every trial checked before the first one runs (plans hold a model: made again)
            for i, request in enumerate(requests[1:], 2):
                print(f"checking trial {i}/{len(requests)}: {request.checkpoint}", file=sys.stderr, flush=True)
                plan_inference(request)
    except FileNotFoundError as exc:  # a split list or an image of the dataset
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for i, request in enumerate(requests):
        if len(requests) > 1:
            print(f"== trial {i + 1}/{len(requests)}: {checkpoints[request.checkpoint]}", flush=True)
        plan = plan if i == 0 else plan_inference(request)
        if use_ray(args, plan.cfg.runtime.device):
            from more.eval.infer_job import replan
            from more.harness.infer_fanout import fanout_runtime, run_fanout

            with fanout_runtime(args.address, net_workers=args.net_workers, crf_workers=args.workers,
                                device=plan.cfg.runtime.device) as fan:
                plan = replan(plan, fan.device_type)
                result, record, _ = run_plan(plan, execute=lambda p: run_fanout(p, fan), tracker=tracker)
        else:
            result, record, _ = run_plan(plan, tracker=tracker)
        _print(plan, result, record)
    return 0


def _checkpoints(args: argparse.Namespace) -> dict[str, str]:
    """``{checkpoint: what it is}``: the one given, or the run folder of every finished trial of ``--spec``."""
    from more.preflight import PreflightError

    if args.spec is None:
        if args.checkpoint is None:
            raise PreflightError("infer needs a checkpoint (a file, a checkpoint folder or a run folder) or --spec")
        for flag in ("storage", "trials"):
            if flag == "trials" and args.trials or flag == "storage" and args.storage != "work/ray_results":
                raise PreflightError(f"--{flag} goes with --spec")
        return {args.checkpoint: args.checkpoint}
    if args.checkpoint is not None:
        if "=" not in args.checkpoint:
            raise PreflightError(f"give a checkpoint ({args.checkpoint}) or --spec {args.spec}, not both")
        args.overrides.insert(0, args.checkpoint)  # `infer --spec S --task seg eval.bkg_thre=0.4`
    for flag in ("out", "config"):
        if getattr(args, flag):
            raise PreflightError(f"--{flag} names one {'output folder' if flag == 'out' else 'config'}; with --spec "
                                 f"each trial's outputs go beside its checkpoint, read with its own config")
    from more.harness.spec_runs import finished_runs

    trials = [t.strip() for t in args.trials.split(",") if t.strip()] if args.trials else None
    runs, notes = finished_runs(args.spec, storage=args.storage, trials=trials)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return {str(r.run_dir): f"{r.trial} (condition {r.condition}, seed {r.seed}) {r.run_dir}" for r in runs}


def use_ray(args: argparse.Namespace, device: str) -> bool:
    """Ray for a cluster (``--address``), ``--ray``, several network workers, or a machine with several GPUs the
    network may use (one worker each); else this process: Ray's start (seconds, ~1 GB) buys nothing for one network
    worker, and the CRF already runs on a pool of this machine's cores."""
    if args.address or args.ray or args.net_workers > 1:
        return True
    if args.net_workers == 1 or device not in ("auto", "cuda"):
        return False
    from more.preflight import local_gpus

    return local_gpus() > 1


def _print(plan: InferPlan, result: InferResult, record: dict[str, Any]) -> None:
    from more.data import class_names
    from more.eval.metrics import format_table

    if result.scores:
        print(format_table(result.scores, class_names(plan.cfg)))
    else:
        print(f"split {record['split']} has no ground truth: no metrics")
    if record["task"] == "cam2seg":
        print(f"labels from the decoder fallback for {record['decoder_label_images']} image(s)")
    print(f"{record['num_images']} images ({record['computed']} this run) in {record['seconds']:.1f} s -> {plan.out}")
