"""The preflight of the commands that launch many runs (``ablate``, ``search``): every input they will use, checked
before Ray starts, a study is opened or a file is written (see :mod:`more.preflight` for the single checks).

Each function returns the :class:`~more.preflight.Checked` lines that ``--dry-run`` prints, or raises
:class:`~more.preflight.PreflightError`.
"""

from __future__ import annotations

import argparse
from typing import Any

from more.input_checks import trial_device
from more.preflight import (
    Checked,
    PreflightError,
    config_paths,
    input_file,
    local_resources,
    optuna_storage,
    output_dir,
    ray_address,
    tracking_uri,
)


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise PreflightError(f"{flag} {value}: must be >= 1")


def _launch_target(args: argparse.Namespace, resources: Any, checked: Checked, *, dry_run: bool,
                   cpus: int | None = None) -> None:
    """The Ray to run on: a cluster that answers, or a local machine that can hold one trial."""
    checked.add(ray_address(args.address))
    if args.address is not None:
        return  # the cluster's own resources are checked right after connecting, before any trial is submitted
    try:
        checked.add(local_resources(resources, cpus=cpus))
    except PreflightError as exc:
        if not dry_run:
            raise
        checked.add(f"note: {exc} (a dry run only notes this: pass --address to launch on a cluster)")


def _tracking(args: argparse.Namespace, checked: Checked) -> None:
    if args.no_tracking:
        checked.add("tracking: off (--no-tracking)")
    else:
        checked.add(tracking_uri(args.tracking_uri)[1])


def ablate_checks(spec: Any, trials: list[Any], args: argparse.Namespace) -> Checked:
    """Everything an ablation launch will touch: each trial's data root and weights, the experiment storage, the
    tracking store, the Ray address or the local machine's resources."""
    from more.harness.spec import trial_config

    checked = Checked()
    _positive(args.max_concurrent, "--max-concurrent")
    seen: set[str] = set()
    for trial in trials:
        line = config_paths(trial_config(spec, trial), f"trial '{trial.name}': ")
        trial_device(trial_config(spec, trial), spec.resources, f"trial '{trial.name}': ")  # i18: cuda without a GPU
        if line not in seen:
            seen.add(line)
            checked.add(f"{line} (trial {trial.name}{' and others' if len(trials) > 1 else ''})")
    checked.add(f"{len(trials)} trial configs valid")
    if "://" in args.storage:
        checked.add(f"--storage {args.storage} (a URI: checked by Ray when the experiment starts)")
    else:
        from more.commands.ablate import resolve_storage

        checked.add(output_dir(resolve_storage(args.storage), "--storage"))
    _tracking(args, checked)
    _launch_target(args, spec.resources, checked, dry_run=args.dry_run)
    return checked


def search_checks(spec: Any, args: argparse.Namespace) -> Checked:
    """Everything a search will touch that its flags name: the checkpoint (cached) or the base config's data and
    the Ray target (training), ``--out``, ``--storage`` and the tracking store. The default output folder and
    journal depend on the spec hash; :func:`more.search.study.open_study` checks them before opening the study."""
    checked = Checked()
    _positive(args.trials, "--trials")
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
        _launch_target(args, spec.resources, checked, dry_run=False, cpus=cpus)
    if args.out:
        checked.add(output_dir(args.out, "--out"))
    if args.storage:
        checked.add(optuna_storage(args.storage))
    _tracking(args, checked)
    return checked
