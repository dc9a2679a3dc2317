"""``python -m more status SPEC``: where an ablation stands, also from another shell while it runs.

Every trial with its state (done / reused / running / pending / failed with its error / stopped), iteration and
last metric, elapsed time and ETA from its measured seconds per iteration, and the GPU-hours spent and remaining.
It reads the experiment folder only (:mod:`more.harness.status`): no Ray, no MLflow, never the trainer.
``--watch`` redraws every few seconds until the launch has ended (or Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
import time

from more.commands.ablate import DEFAULT_STORAGE, resolve_storage
from more.harness.spec import expand, load_spec, spec_hash


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="the ablation spec the launch runs, e.g. ablations/table3_synthetic.yaml")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"experiment storage (default: {DEFAULT_STORAGE})")
    parser.add_argument("--watch", nargs="?", type=float, const=5.0, default=None, metavar="SECONDS",
                        help="refresh every SECONDS (default 5) until the launch has ended")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from more.harness.status import experiment_status, status_text

    spec = load_spec(args.spec)  # SpecError -> "spec error: ..." and exit 2 (more.__main__)
    trials = expand(spec)
    if "://" in args.storage:
        print(f"status reads a local or mounted storage folder; {args.storage} is not one", file=sys.stderr)
        return 2
    folder = Path(resolve_storage(args.storage)) / f"{spec.name}-{spec_hash(spec, trials)}"
    if not folder.is_dir():
        print(f"no experiment of this spec at {folder} (not launched yet, or launched with another --storage)",
              file=sys.stderr)
        return 2
    while True:
        status = experiment_status(spec, trials, folder)
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
