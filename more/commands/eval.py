"""``python -m more eval CKPT [key=value ...] [--split SPLIT] [--out DIR]``: score a checkpoint (MORE_SPEC §5.1).

Runs the batched validation of :mod:`more.eval.evaluate` (CAM, aux CAM, LAM "Score Map", Fused, Seg_Pred) with
the run's saved config plus overrides, and writes ``eval.json`` and ``eval.md`` atomically into ``--out``
(default ``<checkpoint folder>/eval_<split>/``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# The reference log's column names (MORE_SPEC §6) for the table; eval.json uses the short keys.
DISPLAY = {"cam": "CAM", "aux_cam": "aux_CAM", "lam": "Score Map", "fused": "Fused", "seg": "Seg_Pred"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint",
                        help="checkpoint file or folder (RUN/checkpoints/iter_N), or a run folder (its newest)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the saved config, e.g. eval.batch_size=4")
    parser.add_argument("--split", help="split to evaluate (default: eval.split of the config)")
    parser.add_argument("--config", metavar="CONFIG",
                        help="preset or experiment YAML (+ the overrides) instead of the run's config.yaml; needed "
                             "for a checkpoint in the authors' format (zwyang6/MoRe's model_iter_N.pth)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: <checkpoint folder>/eval_<split>)")
    parser.add_argument("--force", action="store_true",
                        help="write into --out even where it holds files more did not create or lies inside data.root "
                             "(refused otherwise)")


def progress_printer(desc: str):
    """A ``progress(done, total)`` callback: a live bar on a terminal, about ten plain lines otherwise."""
    from more.train.progress import Progress

    state: dict = {}

    def progress(done: int, total: int) -> None:
        bar = state.setdefault("bar", Progress(total, desc=desc))
        bar.update(done)
        step = max(1, total // 10)
        if done >= total or done // step != state.get("last", 0) // step:
            bar.line(bar.text(done))
        state["last"] = done

    return progress


def run(args: argparse.Namespace) -> int:
    import torch

    from more.data import build_eval_dataset, class_names, collate_eval, ensure_dataset
    from more.eval.evaluate import evaluate
    from more.eval.infer import load_run, log_stderr, scores_record, write_json_atomic, write_text_atomic
    from more.eval.metrics import format_table
    from more.train.checkpoint import CheckpointError

    try:
        loaded = load_run(args.checkpoint, args.overrides, config=args.config)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = loaded.cfg
    split = args.split or cfg.eval.split
    out = Path(args.out) if args.out else loaded.checkpoint.parent / f"eval_{split}"
    from more.outputs import check_output_dir, on_disk_full, own_dir
    from more.preflight import config_paths

    # before any work: --out may be a file, a folder of the user's, or inside the dataset this reads
    # (the default folder sits in the checkpoint's own folder: one an older eval wrote there, unmarked, is ours)
    check_output_dir(out, what="--out" if args.out else "the output folder", reads={"data.root": cfg.data.root},
                     force=args.force, recognised=() if args.out else ("eval.json", "eval.md"))
    # the split list, its masks and the labels file (the checkpoint holds every weight)
    split_key = "--split" if args.split else "eval.split"
    config_paths(cfg, f"{loaded.checkpoint}: ", weights=False, splits={split_key: split})
    ensure_dataset(cfg, progress=log_stderr)
    try:
        dataset = build_eval_dataset(cfg, split)
    except (FileNotFoundError, ValueError) as exc:  # a file changed since the check: still one line
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False,
                                         num_workers=cfg.data.num_workers, collate_fn=collate_eval,
                                         pin_memory=loaded.device.type == "cuda")
    log_stderr(f"eval {loaded.checkpoint} (iteration {loaded.iteration}) on {split}: {len(dataset)} images, "
               f"device {loaded.device}, autocast {'bf16' if loaded.autocast else 'off'}")
    t0 = time.perf_counter()
    result = evaluate(loaded.model, loader, cfg=cfg, device=loaded.device, autocast=loaded.autocast,
                      progress=progress_printer(f"eval {split}"))
    seconds = time.perf_counter() - t0
    names = class_names(cfg)
    record = {
        "checkpoint": str(loaded.checkpoint), "iteration": loaded.iteration, "split": split,
        "num_images": result.num_images, "cls_f1": result.cls_f1, "seconds": seconds,
        "outputs": {name: {"label": DISPLAY.get(name, name), **scores_record(s, names)}
                    for name, s in result.scores.items()},
    }
    table = format_table({DISPLAY.get(name, name): s for name, s in result.scores.items()}, names, split=split)
    header = (f"# eval of {loaded.checkpoint}\n\niteration {loaded.iteration} | split {split} | "
              f"{result.num_images} images | classification F1 {result.cls_f1:.4f}\n\n")
    with on_disk_full(out, what="eval.json and eval.md"):  # a full disk is one line (exit 2), no temporary file left
        own_dir(out, command="eval")
        write_json_atomic(out / "eval.json", record)
        write_text_atomic(out / "eval.md", header + table + "\n")
    print(table)
    print(f"classification F1 {result.cls_f1:.4f} | {result.num_images} images | {seconds:.1f} s")
    print(f"wrote {out / 'eval.json'} and {out / 'eval.md'}")
    return 0
