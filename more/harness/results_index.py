"""An index of the finished trials of a storage folder by config key, so that reuse reads only its candidates.

``<storage>/.results/<config key>/<experiment>--<trial>`` holds the path of the trial's run folder. The driver adds
an entry when it records a trial's outcome (:func:`add`); a launch looks up the config keys of its spec's trials
(:func:`run_dirs`) and reads only those run folders, instead of listing and reading every run folder of every
experiment in the storage. A storage written before the index existed is indexed once by a full scan, then marked
complete (:data:`COMPLETE`). An entry whose run folder is gone is skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

INDEX_DIR = ".results"
COMPLETE = ".complete"  # the index covers every run folder that held an outcome when it was built


def _entry(root: Path, config_key: str, run_dir: Path) -> Path:
    return root / INDEX_DIR / config_key / f"{run_dir.parent.parent.name}--{run_dir.parent.name}"


def add(storage: str | os.PathLike, config_key: str, run_dir: str | os.PathLike) -> None:
    """Index one run folder under its config key (atomic; an unwritable storage only costs a scan later)."""
    run_dir = Path(run_dir)
    path = _entry(Path(storage), config_key, run_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(str(run_dir) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass


def _scan(root: Path, identity_file: str, outcome_file: str) -> dict[str, list[Path]]:
    """Every run folder with an outcome by config key (the storage's first indexed launch): indexed, then the
    index is marked complete. Returned as well, so an unwritable storage still gets its candidates."""
    found: dict[str, list[Path]] = {}
    for ident_file in sorted(root.glob(f"*/*/run/{identity_file}")):
        if not (ident_file.parent / outcome_file).is_file():
            continue
        try:
            config_key = json.loads(ident_file.read_text()).get("config_key", "")
        except (OSError, ValueError):
            continue
        if config_key:
            found.setdefault(config_key, []).append(ident_file.parent)
            add(root, config_key, ident_file.parent)
    try:
        (root / INDEX_DIR).mkdir(exist_ok=True)
        (root / INDEX_DIR / COMPLETE).write_text("")
    except OSError:
        pass
    return found


def run_dirs(storage: str | os.PathLike, config_keys: Iterable[str], *, identity_file: str,
             outcome_file: str) -> list[Path]:
    """The run folders indexed under any of ``config_keys`` (building the index first when the storage has none)."""
    root = Path(storage)
    if not (root / INDEX_DIR / COMPLETE).is_file():
        scanned = _scan(root, identity_file, outcome_file)
        return [d for key in dict.fromkeys(config_keys) for d in scanned.get(key, [])]
    out = []
    for key in dict.fromkeys(config_keys):
        folder = root / INDEX_DIR / key
        try:
            entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        except OSError:
            continue
        for entry in entries:
            try:
                run_dir = Path(entry.read_text().strip())
            except OSError:
                continue
            if (run_dir / outcome_file).is_file():
                out.append(run_dir)
    return out
