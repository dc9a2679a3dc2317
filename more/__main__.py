"""``python -m more SUBCOMMAND ...``: the command-line entry point.

Each subcommand lives in ``more/commands/<name>.py`` with ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their subcommand runs, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

COMMANDS: dict[str, str] = {
    "train": "Train MoRe from a config (YAML file or preset) with dotted overrides.",
    "eval": "Evaluate a checkpoint: CAM, aux CAM, LAM, Fused and Seg columns (mIoU, precision, recall, confusion).",
    "infer": "Seeds, DenseCRF pseudo masks, segmentation PNGs and label-free cam2seg (paper Tables 1-2).",
    "data": "Generate the synthetic dataset (`data synth`) or check a dataset tree (`data check`).",
    "config": "Show the resolved config of a YAML file or preset with overrides (`config show`).",
    "ablate": "Run a declarative ablation spec as Ray Tune trials (local Ray or --address of a cluster).",
    "status": "Where an ablation stands: each trial's state, iteration, metric, ETA and GPU-hours (no Ray needed).",
    "search": "Optuna searches: thresholds over cached maps, or training hyperparameters through Ray Tune.",
    "report": "Regenerate the paper's tables (ablation, per-class, sensitivity) from tracked runs.",
    "ui": "Start the MLflow UI on 127.0.0.1 over the embedded tracking store.",
}


def available() -> dict[str, str]:
    """Subcommands whose module is installed (a missing one is never listed, never a traceback)."""
    return {name: text for name, text in COMMANDS.items() if importlib.util.find_spec(f"more.commands.{name}")}


def _top_parser() -> argparse.ArgumentParser:
    commands = available()
    parser = argparse.ArgumentParser(
        prog="python -m more",
        description="MoRe weakly supervised segmentation: training, evaluation, ablations, searches and reports.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="subcommands:\n"
        + "\n".join(f"  {name:<8} {text}" for name, text in commands.items())
        + "\n\nRun `python -m more SUBCOMMAND --help` for the options of one subcommand.",
    )
    parser.add_argument("command", choices=list(commands), metavar="SUBCOMMAND", help="one of: " + ", ".join(commands))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    name = argv[0]
    if name not in available():
        top.parse_args(argv[:1])  # prints the choices and exits 2
    module = importlib.import_module(f"more.commands.{name}")
    parser = argparse.ArgumentParser(prog=f"python -m more {name}", description=COMMANDS[name])
    module.add_arguments(parser)
    try:  # lets dotted overrides follow options (`infer CKPT --task seeds eval.bkg_thre=0.4`)
        args = parser.parse_intermixed_args(argv[1:])
    except TypeError:  # argparse cannot intermix with subparsers (`data synth|check`)
        args = parser.parse_args(argv[1:])
    from more.config import ConfigError

    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
