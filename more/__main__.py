"""``python -m more SUBCOMMAND ...``: the command-line entry point.

Each subcommand lives in ``more/commands/<name>.py`` with ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their subcommand runs, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import traceback

COMMANDS: dict[str, str] = {
    "train": "Train MoRe from a config (YAML file or preset) with dotted overrides.",
    "eval": "Evaluate a checkpoint: CAM, aux CAM, LAM, Fused and Seg columns (mIoU, precision, recall, confusion).",
    "infer": "Seeds, DenseCRF pseudo masks, segmentation PNGs and label-free cam2seg (paper Tables 1-2).",
    "data": "Build a dataset from downloaded archives or your own images (`data prepare voc|coco|folder`), generate "
            "the synthetic set (`data synth`), check a tree (`data check`).",
    "config": "Show the resolved config of a YAML file or preset with overrides (`config show`).",
    "ablate": "Run a declarative ablation spec as Ray Tune trials (local Ray or --address of a cluster).",
    "status": "Where an ablation stands: each trial's state, iteration, metric, ETA and GPU-hours (no Ray needed).",
    "search": "Optuna searches: thresholds over cached maps, or training hyperparameters through Ray Tune.",
    "report": "Regenerate the paper's tables (ablation, per-class, sensitivity) from tracked runs.",
    "ui": "Start the MLflow UI on 127.0.0.1 over the embedded tracking store.",
    "import-log": "The authors' training log (zwyang6/MoRe format) as an MLflow run beside ours.",
}


def module_name(command: str) -> str:
    """``import-log`` -> ``more.commands.import_log``."""
    return f"more.commands.{command.replace('-', '_')}"


def available() -> dict[str, str]:
    """Subcommands whose module is installed (a missing one is never listed, never a traceback)."""
    return {name: text for name, text in COMMANDS.items() if importlib.util.find_spec(module_name(name))}


def _top_parser() -> argparse.ArgumentParser:
    commands = available()
    parser = argparse.ArgumentParser(
        prog="python -m more",
        description="MoRe weakly supervised segmentation: training, evaluation, ablations, searches and reports.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="subcommands:\n"
        + "\n".join(f"  {name:<10} {text}" for name, text in commands.items())
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
    module = importlib.import_module(module_name(name))
    parser = argparse.ArgumentParser(prog=f"python -m more {name}", description=COMMANDS[name])
    module.add_arguments(parser)
    try:  # lets dotted overrides follow options (`infer CKPT --task seeds eval.bkg_thre=0.4`)
        args = parser.parse_intermixed_args(argv[1:])
    except TypeError:  # argparse cannot intermix with subparsers (`data synth|check`)
        args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except Exception as exc:  # noqa: BLE001 -- the one place that turns errors into exit codes
        line = user_error_line(exc)
        if line is None:
            traceback.print_exc()
            print(f"error: this is a bug in more ({type(exc).__name__}), not a problem with your input; please "
                  f"report it with the traceback above and the command line", file=sys.stderr)
            return 1
        print(line, file=sys.stderr)
        return 2


# The project's own error types for bad input: (module, class, what the line starts with). They are looked up in
# sys.modules, so the handler imports nothing (a module that is not loaded cannot have raised).
USER_ERRORS: tuple[tuple[str, str, str], ...] = (
    ("more.config.load", "ConfigError", "config error"),
    ("more.harness.spec", "SpecError", "spec error"),
    ("more.search.space", "SpaceError", "spec error"),
    ("more.yamlio", "YamlError", "error"),
    ("more.preflight", "PreflightError", "error"),
    ("more.train.checkpoint", "CheckpointError", "checkpoint error"),
    ("more.tracking.store", "TrackingError", "tracking error"),
    ("more.outputs", "OutputError", "error"),  # DiskFullError too: "error: disk full: ..."
    ("more.data.description", "DatasetError", "error"),
    ("more.data.prepare.common", "PrepareError", "error"),
    ("more.data.prepare.sources", "SourceError", "error"),
    ("more.tracking.authors_log", "LogFormatError", "error"),
    ("more.harness.infer_fanout", "WorkersLost", "error"),
)


def user_error_line(exc: BaseException) -> str | None:
    """The one ``... error: message`` line for a user error, or None for an unexpected exception (a bug)."""
    for module_name, class_name, prefix in USER_ERRORS:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if cls is not None and isinstance(exc, cls):
            return f"{prefix}: {' '.join(str(exc).split())}"
    if isinstance(exc, OSError) and exc.filename is not None:  # a path the user named: missing, a folder, denied
        return f"error: {exc.filename}: {exc.strerror or exc}"
    import yaml

    if isinstance(exc, (yaml.YAMLError, UnicodeDecodeError)):
        return f"error: cannot parse input: {' '.join(str(exc).split())}"
    return None


if __name__ == "__main__":
    sys.exit(main())
