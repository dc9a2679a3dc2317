"""Where commands write: never inside a dataset they read, never over files they did not create, and a full disk
named as such.

The rules every command that writes follows (``infer``, ``eval``, ``report``, ``search``, ``data``, ``train``):

* An output folder is *owned* by ``more`` when it holds the marker file :data:`MARK`, written when a command creates
  the folder (or finds it empty). Files inside an owned folder may be replaced or resumed; a folder that exists,
  holds files and has no marker belongs to the user and is refused unless ``--force``.
* An output folder inside (or equal to) a dataset root the command reads is refused unless ``--force``: pseudo masks
  written with ``--out`` into a dataset's mask folder would replace its ground truth.
* Everything is written to a temporary name first and renamed (:func:`atomic_write`, :func:`atomic_dir`), so an
  interrupted or failed write leaves the previous file or nothing.
* A write that fails because the disk is full becomes a :class:`DiskFullError`: one line that says so, where, how
  much is free and how much the write needs, after the half-written files are removed (:func:`on_disk_full`).

The checks (:func:`check_output_dir`) write nothing, so a command runs them in its preflight, before any work;
:func:`own_dir` then creates the folder and its marker.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

MARK = ".more-output.json"


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


FILE_MODE = 0o666 & ~_umask()  # what open() creates under the process's umask
# The errno values that mean "no room": ENOSPC (device full), EDQUOT (quota), EFBIG (file too large for the fs).
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# What torch's zip writer says when the underlying write fails (it loses the errno): "[enforce fail at
# inline_container.cc:...] unexpected pos ...", "PytorchStreamWriter failed writing file ...", "file write failed".
_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "file too large", "unexpected pos",
               "pytorchstreamwriter failed writing", "file write failed")


class OutputError(ValueError):
    """An output target that would replace files the user owns, or write inside a dataset the command reads."""


class DiskFullError(OutputError):
    """A write failed for lack of space. ``path`` is where, ``free`` the bytes left there, ``need`` an estimate of
    what the write needs (None when unknown)."""

    # defaults: Ray copies and pickles a trial's exception, rebuilding it from its message alone (then its __dict__)
    def __init__(self, message: str, *, path: Path | None = None, free: int | None = None,
                 need: int | None = None) -> None:
        super().__init__(message)
        self.path, self.free, self.need = path, free, need


# ---------------------------------------------------------------------------------------------------- sizes


def human_bytes(n: int | float | None) -> str:
    """``1536`` -> ``1.5 KB``; 1000-based as ``df -H`` and file managers show it."""
    if n is None:
        return "an unknown amount"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` or its closest ancestor that exists (where a folder would be created)."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes an unprivileged user can still write on the filesystem that holds (or would hold) ``path``."""
    stats = os.statvfs(nearest_existing(path))
    return stats.f_bavail * stats.f_frsize


def space_warning(path: str | os.PathLike, need: int, what: str) -> str | None:
    """A one-line warning when the filesystem of ``path`` has less than ``need`` bytes free, else None."""
    free = free_bytes(path)
    if free >= need:
        return None
    return (f"{nearest_existing(path)} has {human_bytes(free)} free, less than the {human_bytes(need)} that {what} "
            f"needs; the run will stop with a disk-full error when it fills up")


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/more`` (default ``~/.cache/more``): where caches of what ``more`` reads go, never beside the
    data itself (a dataset root is read-only to ``more``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "more"


# ----------------------------------------------------------------------------------------------- ownership


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when ``path`` is ``root`` or lies below it (symlinks resolved on both sides)."""
    p, r = _resolved(path), _resolved(root)
    return p == r or r in p.parents


def owned(folder: str | os.PathLike) -> bool:
    """True when ``folder`` carries the marker of a folder ``more`` created."""
    return (Path(folder) / MARK).is_file()


def _first_foreign(folder: Path, recognised: Sequence[str]) -> str | None:
    """The name of a file in ``folder`` that shows it is not ours, or None when it is empty or ours."""
    if owned(folder) or any((folder / name).exists() for name in recognised):
        return None
    for entry in sorted(os.listdir(folder)):
        return entry
    return None


def check_outside(path: str | os.PathLike, *, what: str, reads: Mapping[str, str | os.PathLike | None] | None,
                  force: bool = False) -> None:
    """Refuse an output (file or folder) that lies inside, or is, one of the dataset roots ``reads`` names.

    Raises:
        OutputError: naming the output, the root and ``--force``.
    """
    if force:
        return
    p = Path(path).expanduser().absolute()
    for name, root in (reads or {}).items():
        if root and Path(root).expanduser().exists() and is_inside(p, root):
            raise OutputError(f"{what} {p}: is inside {name} {Path(root).expanduser()}, which this command reads; "
                              f"writing there would change that dataset. Choose a folder outside it "
                              f"(or add --force to write there anyway)")


def check_output_dir(path: str | os.PathLike, *, what: str = "--out", reads: Mapping[str, str | os.PathLike] | None
                     = None, force: bool = False, recognised: Sequence[str] = ()) -> str:
    """Refuse an output folder that would touch what the user owns; write nothing. Returns a preflight line.

    Args:
        path: the folder the command will write into (it may not exist yet).
        what: how the user named it (``--out``, ``--run-dir``, ``runtime.out_dir``), for the message.
        reads: the roots the command reads, by how the user named them (``{"data.root": "/data/VOC2012"}``); the
            output may not lie inside one of them.
        force: the user's ``--force``: both rules are waived.
        recognised: names of files whose presence shows ``more`` made the folder before the marker existed
            (e.g. a run folder's ``metrics.jsonl``); such a folder counts as owned.

    Raises:
        OutputError: the output lies inside a dataset root, is a file, or holds files ``more`` did not create.
    """
    p = Path(path).expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise OutputError(f"{what} {p}: is a file, expected a folder")
    if not force:
        check_outside(p, what=what, reads=reads)
        if p.is_dir():
            foreign = _first_foreign(p, recognised)
            if foreign is not None:
                raise OutputError(f"{what} {p}: holds files more did not create (e.g. {foreign!r}) and would be "
                                  f"written over; choose a new or empty folder (or add --force to write there "
                                  f"anyway)")
    base = nearest_existing(p)
    if not base.is_dir():
        raise OutputError(f"{what} {p}: {base} is a file, so the folder cannot be created")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {p}: {base} is not writable")
    return f"{what} {p} ({'exists' if p.exists() else 'will be created'}, writable)"


def own_dir(path: str | os.PathLike, *, command: str) -> Path:
    """Create ``path`` (and parents) and mark it as made by ``more <command>``; an owned folder keeps its marker.

    Call :func:`check_output_dir` first (in the preflight): this function does not check ownership again.
    """
    p = Path(path).expanduser().absolute()
    p.mkdir(parents=True, exist_ok=True)
    if not owned(p):
        atomic_write(p / MARK, json.dumps({"created_by": f"more {command}", "pid": os.getpid(),
                                           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
    return p


def check_replace(path: str | os.PathLike, *, what: str, force: bool = False) -> None:
    """Refuse to replace an existing file that does not lie in a folder ``more`` owns (unless ``force``)."""
    p = Path(path).expanduser().absolute()
    if force or not p.exists():
        return
    if p.is_dir():
        raise OutputError(f"{what} {p}: is a folder, expected a file")
    if not owned(p.parent):
        raise OutputError(f"{what} {p}: exists and was not written by more; choose another name (or add --force "
                          f"to replace it)")


# -------------------------------------------------------------------------------------------- disk full


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an exception it was raised from) is a write that failed for lack of space."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFullError):
            return True
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if isinstance(exc, (OSError, RuntimeError)) and any(t in str(exc).lower() for t in _FULL_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(where: str | os.PathLike, *, what: str, need: int | None = None) -> DiskFullError:
    """The :class:`DiskFullError` for a failed write of ``what`` under ``where``."""
    base = nearest_existing(where)
    try:
        free: int | None = free_bytes(base)
    except OSError:
        free = None
    needs = f"; {what} needs about {human_bytes(need)}" if need else ""
    return DiskFullError(f"disk full: writing {what} to {Path(where).expanduser().absolute()} failed, "
                         f"{human_bytes(free)} free on {base}{needs}. Free some space (or point the output "
                         f"elsewhere) and run again", path=base, free=free, need=need)


@contextlib.contextmanager
def on_disk_full(where: str | os.PathLike, *, what: str, need: int | None = None,
                 cleanup: Iterable[str | os.PathLike] = ()) -> Iterator[None]:
    """Turn a disk-full failure inside the block into a :class:`DiskFullError`, after removing ``cleanup``.

    Other exceptions pass through unchanged (and ``cleanup`` is left alone: the caller's own handling applies).
    """
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, DiskFullError) or not is_disk_full(exc):
            raise
        # the failed writer's frames still hold its open file (torch.save's zip writer): close it, or the space of
        # the removed file stays taken and the error reports less free than there is
        _release_frames(exc)
        for path in cleanup:
            remove(path)
        raise disk_full_error(where, what=what, need=need) from exc


def _release_frames(exc: BaseException) -> None:
    """Clear the local variables of the finished frames of ``exc`` and the exceptions chained to it, so objects
    they hold (an open file) are released now rather than when the exception is."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__
    gc.collect()


def remove(path: str | os.PathLike) -> None:
    """Remove a file or a folder tree if it exists; never raises for a path that is already gone."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


# ------------------------------------------------------------------------------------------- atomic writes


def atomic_write(path: str | os.PathLike, data: str | bytes, *, what: str | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A failure (a full disk included, which becomes :class:`DiskFullError`) leaves ``path`` as it was and no
    temporary file behind.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with on_disk_full(p, what=what or str(p.name), need=len(payload)), os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp's files are private; the file gets what open() would give it
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return p


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, what: str | None = None, need: int | None = None) -> Iterator[Path]:
    """Build a folder under a temporary sibling name and rename it to ``final`` when the block ends without error.

    An existing ``final`` is replaced only after the new folder is complete. On any failure the temporary folder is
    removed; a full disk becomes :class:`DiskFullError`.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp_{final.name}")
    remove(tmp)
    try:
        with on_disk_full(final, what=what or final.name, need=need, cleanup=(tmp,)):
            tmp.mkdir()
            yield tmp
            old = None
            if final.exists():
                old = final.with_name(f".old_{final.name}")
                remove(old)
                os.replace(final, old)
            os.replace(tmp, final)
            if old is not None:
                remove(old)
    except BaseException:
        remove(tmp)
        raise
