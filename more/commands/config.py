"""``python -m more config show CONFIG [key=value ...]``: print the resolved config as YAML."""

from __future__ import annotations

import argparse

from more.config import dump_yaml, load_config
from more.config.batch import global_batch_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show", "check"], help="show: print the resolved YAML; check: validate only")
    parser.add_argument("config", help="a YAML file in experiments/ or a preset name (voc, coco, synthetic)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. lir.cre_weight=0.1")
    parser.add_argument("--check-paths", action="store_true", help="also require the dataset root and weights to exist")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides, check_paths=args.check_paths)
    if args.action == "show":
        print(dump_yaml(cfg), end="")
        print(f"# global batch: {global_batch_text(cfg)} (an ablation spec's resources.workers sets the processes)")
    else:
        print(f"ok: {args.config} ({cfg.name}, fidelity={cfg.fidelity})")
    return 0
