"""``python -m more train CONFIG [key=value ...] [--resume PATH] [--run-dir DIR] [--condition NAME]``."""

from __future__ import annotations

import argparse
import json

from more.config import TABLE3_CONDITIONS, ConfigError, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a YAML file (experiments/*.yaml) or a preset name: voc, coco, synthetic")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. lir.cre_weight=0.1 train.max_iters=100")
    parser.add_argument("--resume", metavar="PATH", help="checkpoint file/folder, or a run folder (newest checkpoint)")
    parser.add_argument("--run-dir", metavar="DIR", help="where the run writes its files (default: out_dir/NAME)")
    parser.add_argument(
        "--condition", choices=sorted(TABLE3_CONDITIONS), help="apply one of the paper's Table 3 rows before overrides"
    )


def run(args: argparse.Namespace) -> int:
    from more.train import TrainingDiverged, train
    from more.train.checkpoint import CheckpointError

    overrides: dict = {}
    if args.condition:
        overrides.update(TABLE3_CONDITIONS[args.condition])
    from more.config import parse_overrides

    overrides.update(parse_overrides(args.overrides))
    cfg = load_config(args.config, overrides, check_paths=True)
    run_dir = args.run_dir
    if args.resume and not run_dir:
        from more.train.checkpoint import resolve_checkpoint

        run_dir = str(resolve_checkpoint(args.resume).parent.parent.parent)  # RUN/checkpoints/iter_N/checkpoint.pt
    try:
        result = train(cfg, resume=args.resume, run_dir=run_dir)
    except TrainingDiverged as exc:
        print(f"training diverged: {exc}")
        return 3
    except CheckpointError as exc:
        print(f"checkpoint error: {exc}")
        return 2
    except ConfigError:
        raise
    shown = {k: round(v, 3) for k, v in result.items() if k.endswith("/miou") or k == "iter"}
    print(json.dumps(shown, indent=2))
    return 0
