"""``python -m more status SPEC``: where an ablation stands, also from another shell while it runs.

Every trial with its state (done / reused / running / pending / waiting / failed with its error / stopped),
iteration and last metric, elapsed time and ETA from its measured seconds per iteration, and the GPU-hours spent and
remaining. Argument parsing and printing around :func:`more.harness.status.ablation_status`, which reads the
experiment folder only: no Ray, no MLflow, never the trainer. ``--watch`` redraws every few seconds until the
launch has ended (or Ctrl-C).
"""

from __future__ import annotations

import argparse
import time

from more.harness.checks import DEFAULT_STORAGE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="the ablation spec the launch runs, e.g. ablations/table3_synthetic.yaml")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"experiment storage (default: {DEFAULT_STORAGE})")
    parser.add_argument("--watch", nargs="?", type=float, const=5.0, default=None, metavar="SECONDS",
                        help="refresh every SECONDS (default 5) until the launch has ended")


def run(args: argparse.Namespace) -> int:
    from more.harness.spec import load_spec
    from more.harness.status import ablation_status, status_text

    spec = load_spec(args.spec)  # SpecError -> "spec error: ..." and exit 2 (more.__main__)
    while True:
        status = ablation_status(spec, storage=args.storage)  # PreflightError -> "error: ..." and exit 2
        text = status_text(spec, status)
        if args.watch:
            print("\033[2J\033[H" + time.strftime("%H:%M:%S ") + text, end="", flush=True)
        else:
            print(text, end="")
        if not args.watch or not status.launch_alive:
            return 0
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0
