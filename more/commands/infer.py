"""``python -m more infer CKPT --task {seeds,masks,seg,cam2seg} [options] [key=value ...]`` (MORE_SPEC §5.2-5.4).

The path behind the paper's Table 1 (seeds and CRF masks on ``train``) and Table 2 (segmentation on ``val``).
PNGs go to ``OUT/<output>/NAME.png`` (VOC palette), score maps to ``OUT/maps/NAME.npz``; with ground truth the
scores of every output go to ``OUT/metrics.json`` and ``OUT/metrics.md`` and are printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

TASKS = ("seeds", "masks", "seg", "cam2seg")  # more.eval.infer.TASKS (not imported: it pulls in torch)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint",
                        help="checkpoint file or folder (RUN/checkpoints/iter_N), or a run folder (its newest)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the saved config, e.g. eval.bkg_thre=0.45")
    parser.add_argument("--task", required=True, choices=TASKS,
                        help="seeds: CAM/LAM seeds (+ score maps); masks: seeds + DenseCRF; seg: multi-scale decoder "
                             "segmentation; cam2seg: seeds from predicted labels (label-free)")
    parser.add_argument("--source", choices=("cam", "lam"), default="cam", help="score map for seeds/masks/cam2seg")
    parser.add_argument("--split", help="split (default: train for seeds/masks, eval.split for seg/cam2seg)")
    parser.add_argument("--config", metavar="CONFIG",
                        help="preset or experiment YAML (+ the overrides) instead of the run's config.yaml; needed "
                             "for a checkpoint in the authors' format (zwyang6/MoRe's model_iter_N.pth)")
    parser.add_argument("--multiscale", action="store_true",
                        help="scales eval.infer_multiscale instead of eval.infer_cam_scales (seeds/masks/cam2seg)")
    parser.add_argument("--crf", action="store_true", help="also DenseCRF (seg, cam2seg; seeds --crf = masks)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: <checkpoint folder>/infer_<task>_...)")
    parser.add_argument("--workers", type=int, default=0,
                        help="CRF processes (default: eval.crf_workers; 0 there = 60%% of the cores)")


def run(args: argparse.Namespace) -> int:
    from more.data import build_eval_dataset, class_names, ensure_dataset
    from more.eval import infer
    from more.eval.metrics import format_table
    from more.train.checkpoint import CheckpointError

    if args.workers < 0:
        print("error: --workers must be >= 0", file=sys.stderr)
        return 2
    options = infer.InferOptions(task=args.task, source=args.source, multiscale=args.multiscale, crf=args.crf,
                           workers=args.workers)
    try:
        loaded = infer.load_run(args.checkpoint, args.overrides, config=args.config)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = loaded.cfg
    split = args.split or ("train" if options.task in ("seeds", "masks") else cfg.eval.split)
    out = Path(args.out) if args.out else loaded.checkpoint.parent / options.default_dir_name(split)
    from more.preflight import config_paths, output_dir

    output_dir(out, "--out" if args.out else "the output folder")  # before any work: --out may be a file
    config_paths(cfg, f"{loaded.checkpoint}: ", weights=False)  # the checkpoint holds every weight
    ensure_dataset(cfg, progress=infer.log_stderr)
    try:
        dataset = build_eval_dataset(cfg, split)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if options.task in ("seeds", "masks") and not dataset.labels.any():
        infer.log_stderr(f"warning: split {split} has no image-level labels; seeds use ground-truth labels "
                   "(use --task cam2seg for a label-free prediction)")
    t0 = time.perf_counter()
    result = infer.run_inference(loaded, dataset, options, out)
    seconds = time.perf_counter() - t0

    names = class_names(cfg)
    uses_scales = options.task != "seg"
    scales = (cfg.eval.infer_multiscale if options.multiscale else cfg.eval.infer_cam_scales) if uses_scales \
        else cfg.eval.seg_scales
    record = {
        "checkpoint": str(loaded.checkpoint), "iteration": loaded.iteration, "task": options.task,
        "source": options.source if uses_scales else None, "split": split, "scales": list(scales),
        "crf": options.crf, "bkg_thre": cfg.eval.bkg_thre if uses_scales else None,
        "num_images": result.num_images, "seconds": seconds, "ground_truth": bool(result.scores),
        "outputs": {name: infer.scores_record(s, names) for name, s in result.scores.items()},
    }
    if options.task == "cam2seg":
        record["decoder_label_images"] = result.decoder_label_images
    infer.write_json_atomic(out / "metrics.json", record)
    summary = f"{result.num_images} images in {seconds:.1f} s -> {out}"
    if result.scores:
        table = format_table(result.scores, names)
        infer.write_text_atomic(out / "metrics.md", f"# infer {options.task} of {loaded.checkpoint}\n\niteration "
                          f"{loaded.iteration} | split {split} | {summary}\n\n{table}\n")
        print(table)
    else:
        print(f"split {split} has no ground truth: no metrics")
    if options.task == "cam2seg":
        print(f"labels from the decoder fallback for {result.decoder_label_images} image(s)")
    print(summary)
    return 0
