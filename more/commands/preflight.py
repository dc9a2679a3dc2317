"""The preflight of ``python -m more search``: every input it will use, checked before Ray starts, a study is
opened or a file is written (see :mod:`more.preflight` for the single checks; an ablation's are
:func:`more.harness.checks.launch_checks`).

:func:`search_checks` returns the :class:`~more.preflight.Checked` lines or raises
:class:`~more.preflight.PreflightError`.
"""

from __future__ import annotations

import argparse
from typing import Any

from more.harness.checks import Findings, launch_target, tracking_check
from more.input_checks import trial_device
from more.preflight import Checked, PreflightError, config_paths, input_file, optuna_storage, output_dir


def search_checks(spec: Any, args: argparse.Namespace) -> Checked:
    """Everything a search will touch that its flags name: the checkpoint (cached) or the base config's data and
    the Ray target (training), ``--out``, ``--storage`` and the tracking store. The default output folder and
    journal depend on the spec hash; :func:`more.search.study.open_study` checks them before opening the study."""
    checked = Checked()
    if args.trials is not None and args.trials < 1:
        raise PreflightError(f"--trials {args.trials}: must be >= 1")
    if spec.kind == "cached":
        if not args.checkpoint:
            raise PreflightError("a cached search needs --checkpoint CKPT (a checkpoint file or folder, or a run "
                                 "folder)")
        from more.train.checkpoint import resolve_checkpoint

        checked.add(input_file(resolve_checkpoint(args.checkpoint), "--checkpoint"))
    else:
        if args.checkpoint:
            raise PreflightError("--checkpoint is for cached searches; a training search trains every trial")
        from more.config import load_config

        checked.add(config_paths(load_config(spec.config, spec.overrides)))
        trial_device(load_config(spec.config, spec.overrides), spec.resources)  # i18: cuda without a GPU
        cpus = None if args.address else max(1, int(round(spec.max_concurrent * spec.resources.cpus)))
        target = Findings()
        launch_target(args.address, spec.resources, target, dry_run=False, cpus=cpus)
        target.raise_first()
        for line in target.ok:
            checked.add(line)
    if args.out:
        checked.add(output_dir(args.out, "--out"))
    if args.storage:
        checked.add(optuna_storage(args.storage))
    found = Findings()
    tracking_check(args.tracking_uri, not args.no_tracking, found)
    found.raise_first()
    for line in found.ok:
        checked.add(line)
    return checked
