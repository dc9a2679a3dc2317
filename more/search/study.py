"""Where a search's Optuna study lives, shared by both kinds of search (``cached`` and ``training``).

The storage is checked (:func:`more.preflight.optuna_storage`) before Optuna opens it: Optuna appends to any file
given as a journal, so a wrong ``--storage`` would otherwise get records written into it; a database URL must answer.
Journal or RDB (with heartbeats, :mod:`more.search.storage`): see there. Messages show a URL without its password.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

DEFAULT_OUT = "work/search"
# A search's output folder made before output folders were marked holds its journal, or all of its result files.
SEARCH_JOURNAL, SEARCH_FILES = "study.journal", ("trials.csv", "best.json", "best.yaml")


class OpenedStudy(NamedTuple):
    """Where a search's study lives and how many trials this run adds."""

    name: str  # <spec name>-<hash>
    out: Path  # the output folder
    storage: Any
    study: Any  # the existing Optuna study, or None
    n_trials: int


def study_paths(spec: Any, args: argparse.Namespace, digest: str) -> tuple[str, Path, str]:
    """The study name, the output folder and the storage (``--storage``, else ``<out>/study.journal``)."""
    name = f"{spec.name}-{digest}"
    out = Path(args.out or Path(DEFAULT_OUT) / name).resolve()
    return name, out, str(args.storage or out / "study.journal")


def open_study(spec: Any, args: argparse.Namespace, digest: str,
               reads: dict[str, str] | None = None) -> OpenedStudy | str:
    """The study of ``spec`` with hash ``digest`` after the resume checks, or the error text that stops the run.

    ``reads`` names the dataset roots the search reads (``{"data.root": ...}``): neither the output folder nor a
    journal file may lie inside one, and the output folder may not hold files more did not create (``--force``).

    Raises:
        PreflightError: the output folder or the storage cannot be used.
        OutputError: the output folder or journal would write over the user's files or into a dataset.
    """
    from more.outputs import check_output_dir, check_outside
    from more.preflight import optuna_storage
    from more.search.cached import existing_study, finished_trials
    from more.search.storage import fail_stale, make_storage, shown

    name, out, where = study_paths(spec, args, digest)
    force = bool(getattr(args, "force", False))
    legacy = (out / SEARCH_JOURNAL).is_file() or all((out / n).is_file() for n in SEARCH_FILES)
    check_output_dir(out, what="--out" if args.out else "the output folder", reads=reads, force=force,
                     recognised=(SEARCH_JOURNAL, *SEARCH_FILES) if legacy else ())
    if "://" not in where:
        check_outside(where, what="--storage" if args.storage else "the study journal", reads=reads, force=force)
    optuna_storage(where)
    if _CREATED and "://" not in where:
        journal = Path(where).expanduser().absolute()
        new = [p for p in (journal, journal.parent, *journal.parent.parents) if not p.exists()]
        _CREATED[-1].extend(new)
    storage = make_storage(where)
    study = existing_study(storage, name)
    done = finished_trials(study) if study is not None else 0
    if study is not None and study.get_trials(deepcopy=False) and not args.resume:
        return f"study {name} already has {len(study.get_trials(deepcopy=False))} trials in {shown(where)}; pass " \
               f"--resume to continue it"
    if args.resume and study is None:
        return f"nothing to resume: no study {name} in {shown(where)}; run without --resume"
    if study is not None:
        stale = fail_stale(study)
        if stale:
            print(f"{stale} trial(s) left running by an interrupted run marked FAIL", file=sys.stderr, flush=True)
    n_trials = args.trials if args.trials is not None else spec.trials - done
    return OpenedStudy(name, out, storage, study, n_trials)


_CREATED: list[list[Path]] = []  # the journal files and folders open_study made, per active cleanup scope


@contextmanager
def created_paths() -> Iterator[list[Path]]:
    """Collect what :func:`open_study` creates inside the block (journal file, then the folders made for it)."""
    made: list[Path] = []
    _CREATED.append(made)
    try:
        yield made
    finally:
        _CREATED.remove(made)


def remove_if_empty(paths: list[Path]) -> None:
    """Remove the created journal if still empty and the created folders if still empty (innermost first)."""
    for p in paths:
        try:
            if p.is_file() and p.stat().st_size == 0:
                p.unlink()
            elif p.is_dir():
                p.rmdir()
        except OSError:
            pass
