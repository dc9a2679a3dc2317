"""``python -m more train CONFIG [key=value ...] [--resume PATH] [--run-dir DIR] [--condition NAME]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from more.config import TABLE3_CONDITIONS, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a YAML file (experiments/*.yaml) or a preset name: voc, coco, synthetic")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. lir.cre_weight=0.1 train.max_iters=100")
    parser.add_argument("--resume", metavar="PATH", help="checkpoint file/folder, or a run folder (newest checkpoint)")
    parser.add_argument("--run-dir", metavar="DIR", help="where the run writes its files (default: out_dir/NAME)")
    parser.add_argument("--force", action="store_true",
                        help="write the run folder even where it holds files more did not create or lies inside "
                             "data.root (refused otherwise)")
    parser.add_argument(
        "--condition", choices=sorted(TABLE3_CONDITIONS), help="apply one of the paper's Table 3 rows before overrides"
    )


def resume_run_dir(resume: str, run_dir: str | None) -> str | None:
    """Check ``--resume`` before anything is written: the checkpoint loads (``weights_only``), and without
    ``--run-dir`` it sits where a run keeps it (``RUN/checkpoints/iter_N/checkpoint.pt``), so RUN is that run and
    not some folder three levels above a stray file."""
    from more.preflight import PreflightError
    from more.train.checkpoint import load_checkpoint, resolve_checkpoint

    file = resolve_checkpoint(resume)
    load_checkpoint(file)  # CheckpointError for a missing, foreign or refused file
    if run_dir:
        return run_dir
    if not (file.parent.name.startswith("iter_") and file.parent.parent.name == "checkpoints"):
        raise PreflightError(f"--resume {resume}: {file} is not in a run's checkpoints/iter_N/ folder, so its run "
                             f"folder is unknown; pass --run-dir DIR")
    return str(file.parent.parent.parent)


def run(args: argparse.Namespace) -> int:
    from more.config import parse_overrides
    from more.input_checks import check_device
    from more.outputs import check_output_dir, check_outside
    from more.preflight import config_paths

    overrides: dict = {}
    if args.condition:
        overrides.update(TABLE3_CONDITIONS[args.condition])
    overrides.update(parse_overrides(args.overrides))
    cfg = load_config(args.config, overrides, check_paths=True)
    config_paths(cfg)  # data root, split lists, labels file, one batch of training images, weights
    check_device(cfg.runtime.device)
    run_dir = resume_run_dir(args.resume, args.run_dir) if args.resume else args.run_dir
    from more.train.trainer import RUN_FILES, default_run_dir

    reads = {"data.root": cfg.data.root}
    if args.resume and not args.run_dir:  # the run folder that holds the checkpoint: the run's own, so it continues
        check_outside(run_dir, what="the resumed run folder", reads=reads, force=args.force)
    else:  # marked as more's, or holding all the files every run writes first (made before the marker existed)
        target = Path(run_dir or default_run_dir(cfg))
        legacy = all((target / name).is_file() for name in RUN_FILES)
        check_output_dir(target, what="--run-dir" if run_dir else "the run folder (runtime.out_dir)", reads=reads,
                         force=args.force, recognised=RUN_FILES if legacy else ())

    from more.train import TrainingDiverged, train

    try:
        result = train(cfg, resume=args.resume, run_dir=run_dir)
    except TrainingDiverged as exc:
        print(f"training diverged: {exc}")
        return 3
    shown = {k: round(v, 3) for k, v in result.items() if k.endswith("/miou") or k == "iter"}
    print(json.dumps(shown, indent=2))
    return 0
