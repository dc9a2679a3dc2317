"""``python -m more data synth|check``: generate the synthetic dataset, or check a dataset tree."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from more.config import load_config

MIN_SYNTH_SIZE = 48  # measured: at 32 px and below, some training images come out without a visible object
MAX_SYNTH_CLASSES = 8  # the generator's class designs (data.synth_classes is checked against the same number)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = load_config("synthetic").data  # defaults of the synthetic preset
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    synth = sub.add_parser("synth", help="generate the synthetic dataset (VOC layout)",
                           description="Generate the synthetic weakly supervised segmentation dataset.")
    synth.add_argument("--out", required=True, help="dataset root to create (must not exist or be empty)")
    synth.add_argument("--classes", type=int, default=d.synth_classes, help=f"classes (default {d.synth_classes})")
    synth.add_argument("--train", type=int, default=d.synth_train, help=f"train images (default {d.synth_train})")
    synth.add_argument("--val", type=int, default=d.synth_val, help=f"val images (default {d.synth_val})")
    synth.add_argument("--test", type=int, default=-1, help="unlabeled test images (default max(2, val // 10))")
    synth.add_argument("--size", type=int, default=d.synth_image_size,
                       help=f"image side in pixels (default {d.synth_image_size})")
    synth.add_argument("--seed", type=int, default=d.synth_seed, help=f"random seed (default {d.synth_seed})")
    synth.add_argument("--force", action="store_true", help="replace a non-empty --out")
    check = sub.add_parser("check", help="report every problem of a dataset tree (exit 1 if any)",
                           description="Decode every listed image and mask and report every problem found.")
    check.add_argument("root", help="dataset root")
    check.add_argument("--dataset", choices=["voc", "coco", "synthetic"], default="voc", help="layout (default voc)")
    check.add_argument("--splits", nargs="+", help="splits to check (default: the standard ones present)")
    check.add_argument("--classes", type=int, help="number of foreground classes C (default: 20 voc, 80 coco, "
                                                   "or synth.json of a generated set)")


def _synth(args: argparse.Namespace) -> int:
    from more.data.synth import SynthOptions, generate_dataset
    from more.preflight import PreflightError, output_dir

    for key, low in (("classes", 1), ("train", 1), ("val", 1), ("size", MIN_SYNTH_SIZE), ("seed", 0), ("test", -1)):
        if getattr(args, key) < low:
            why = " (smaller images lose their objects, and `data check` rejects a training image without one)" \
                if key == "size" else ""
            raise PreflightError(f"--{key} {getattr(args, key)}: must be >= {low}{why}")
    if args.classes > MAX_SYNTH_CLASSES:
        raise PreflightError(f"--classes {args.classes}: the synthetic generator has {MAX_SYNTH_CLASSES} class "
                             f"designs; use 1..{MAX_SYNTH_CLASSES}")
    output_dir(args.out, "--out")
    options = SynthOptions(classes=args.classes, train=args.train, val=args.val, size=args.size, seed=args.seed,
                           test=args.test)
    try:
        summary = generate_dataset(Path(args.out), options, force=args.force, progress=print)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from more.outputs import own_dir

    own_dir(args.out, command="data synth")  # i18: a folder a command made carries more's marker (contract 4)
    print(summary.format())
    return 0


def _check(args: argparse.Namespace) -> int:
    from more.data.check import inspect_dataset
    from more.preflight import PreflightError, input_dir

    input_dir(args.root, "dataset root")
    if args.classes is not None and args.classes < 1:
        raise PreflightError(f"--classes {args.classes}: need the number of foreground classes, >= 1")

    report = inspect_dataset(args.root, args.dataset, args.splits, args.classes)
    for problem in report.problems:
        print(problem)
    if report.problems:
        print(f"{len(report.problems)} problem(s) in {report.root}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{split} {n}" for split, n in report.counts.items())
    print(f"ok: {report.root} ({args.dataset}, {report.num_classes} classes): {counts}")
    return 0


def run(args: argparse.Namespace) -> int:
    return _synth(args) if args.action == "synth" else _check(args)
