"""Read-only access to a downloaded release: an extracted folder or the archive itself (``.tar``, ``.tgz`` /
``.tar.gz``, ``.zip``). Nothing is ever extracted next to the source: members are read into memory one at a time.

A release is found by an *anchor*, a path every copy of it holds (``ImageSets/Segmentation/train.txt`` for VOC
2012): the folder above the anchor is the release's base, wherever the user's folder or the archive puts it
(``VOCdevkit/VOC2012/`` inside the VOC tarball, ``benchmark_RELEASE/dataset/`` inside SBD's).
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

ARCHIVE_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".zip")


class SourceError(ValueError):
    """A source that is missing, unreadable or not the release it should be; the message names it."""


def is_archive(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


class Source:
    """Files of one release, addressed by paths relative to its base (found from ``anchor``).

    Args:
        path: the folder or archive the user named.
        what: how the user named it (``--voc``), for messages.
        anchor: a relative file path the release holds; the folder above it is the base ("": the base is
            ``path`` itself, or the archive's top).
        beside: other paths relative to the base that must exist for a hit to count (``cls/`` for a folder).
        depth: how many folder levels below ``path`` the anchor may lie (folders only; archives are searched fully).
    """

    def __init__(self, path: str | os.PathLike, what: str, anchor: str, *, beside: tuple[str, ...] = (),
                 depth: int = 3) -> None:
        self.path = Path(path).expanduser().absolute()
        self.what = what
        self.anchor = anchor
        self.beside = beside
        if not self.path.exists():
            raise SourceError(f"{what} {self.path}: does not exist")
        self.archive = self.path.is_file()
        if self.archive and not is_archive(self.path):
            raise SourceError(f"{what} {self.path}: a file, but not an archive ({', '.join(ARCHIVE_SUFFIXES)}); give "
                              f"the extracted folder or the downloaded archive")
        self._tar: tarfile.TarFile | None = None
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, object] = {}
        if self.archive:
            self.base = self._open_archive()
        elif not self.path.is_dir():
            raise SourceError(f"{what} {self.path}: not a folder")
        else:
            self.base = self._find_folder_base(depth) if anchor else ""

    # ------------------------------------------------------------------------------------------------ opening

    def _accept(self, base: str) -> bool:
        """Whether everything ``beside`` the anchor exists under ``base``."""
        for rel in self.beside:
            key = f"{base}/{rel}" if base else rel
            if self.archive:
                found = any(k.startswith(key) for k in self._members) if rel.endswith("/") else key in self._members
            else:
                found = (self.path / key).is_dir() if rel.endswith("/") else (self.path / key).is_file()
            if not found:
                return False
        return True

    def _missing(self) -> SourceError:
        extra = f" (with {', '.join(self.beside)} beside it)" if self.beside else ""
        where = "the archive holds" if self.archive else "it holds"
        return SourceError(f"{self.what} {self.path}: {where} no {self.anchor}{extra}; is it the right "
                           f"{'download' if self.archive else 'folder'}?")

    def _find_folder_base(self, depth: int) -> str:
        for level in range(depth + 1):
            for hit in sorted(self.path.glob("/".join(["*"] * level + [self.anchor]))):
                rel = hit.parents[len(Path(self.anchor).parts) - 1].relative_to(self.path).as_posix()
                base = "" if rel == "." else rel
                if self._accept(base):
                    return base
        raise self._missing()

    def _open_archive(self) -> str:
        try:
            if self.path.name.lower().endswith(".zip"):
                self._zip = zipfile.ZipFile(self.path)
                self._members = {i.filename: i for i in self._zip.infolist() if not i.is_dir()}
            else:
                self._tar = tarfile.open(self.path)  # noqa: SIM115 -- kept open while the source is read
                self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
        except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
            raise SourceError(f"{self.what} {self.path}: cannot read the archive: {exc}") from None
        if not self.anchor:
            return ""
        suffix = "/" + self.anchor
        for hit in sorted((n for n in self._members if n == self.anchor or n.endswith(suffix)), key=len):
            base = hit[: -len(self.anchor)].rstrip("/")
            if self._accept(base):
                return base
        raise self._missing()

    def close(self) -> None:
        for handle in (self._tar, self._zip):
            if handle is not None:
                handle.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ reading

    def _key(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.base else rel

    def describe(self, rel: str = "") -> str:
        """How a file of the source is named in messages (``VOCtrainval.tar:VOCdevkit/VOC2012/x``)."""
        if self.archive:
            return f"{self.path}:{self._key(rel)}"
        return str(self.path / self._key(rel)) if rel or self.base else str(self.path)

    def exists(self, rel: str) -> bool:
        return self._key(rel) in self._members if self.archive else (self.path / self._key(rel)).is_file()

    def listdir(self, rel: str, suffix: str = "") -> list[str]:
        """Names of the files directly in folder ``rel`` ending with ``suffix``, sorted."""
        prefix = self._key(rel).rstrip("/") + "/"
        if self.archive:
            names = [k[len(prefix):] for k in self._members if k.startswith(prefix) and "/" not in k[len(prefix):]]
        else:
            folder = self.path / prefix
            names = [e.name for e in os.scandir(folder) if e.is_file()] if folder.is_dir() else []
        return sorted(n for n in names if n.endswith(suffix))

    def read(self, rel: str) -> bytes:
        """The bytes of one file.

        Raises:
            SourceError: the file is missing or unreadable (named).
        """
        key = self._key(rel)
        try:
            if self._zip is not None:
                return self._zip.read(self._members[key])  # type: ignore[arg-type]
            if self._tar is not None:
                handle = self._tar.extractfile(self._members[key])  # type: ignore[arg-type]
                assert handle is not None
                return handle.read()
            return (self.path / key).read_bytes()
        except KeyError:
            raise SourceError(f"{self.describe(rel)}: missing") from None
        except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
            raise SourceError(f"{self.describe(rel)}: cannot read: {exc}") from None

    def read_text(self, rel: str) -> str:
        return self.read(rel).decode("utf-8", errors="replace")

    def read_many(self, rels: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """``(rel, bytes)`` for each of ``rels``; a tar archive's members come in archive order, so a compressed
        tarball is decompressed once, not once per member."""
        wanted = list(rels)
        if self._tar is not None:
            wanted.sort(key=lambda r: self._members[self._key(r)].offset_data if self._key(r) in self._members else -1)
        for rel in wanted:
            yield rel, self.read(rel)

    def local_path(self, rel: str) -> Path | None:
        """The file on disk (for a link to it), or None inside an archive."""
        return None if self.archive else self.path / self._key(rel)

    def size(self, rel: str) -> int:
        key = self._key(rel)
        if self._zip is not None:
            return self._members[key].file_size  # type: ignore[attr-defined]
        if self._tar is not None:
            return self._members[key].size  # type: ignore[attr-defined]
        return (self.path / key).stat().st_size
