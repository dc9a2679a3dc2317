"""A dataset described by a small YAML file beside its images: your own classes, any number of them.

``ROOT/dataset.yaml`` (``python -m more data prepare folder`` writes one; the synthetic generator writes one too)::

    name: birds                      # names the dataset (the MLflow tag more.dataset)
    classes: [crow, gull, sparrow]   # foreground classes: mask value / label k is the k-th name, 0 is background
    images: images                   # folder of the images NAME<image_suffix>; relative to this file, or absolute
    image_suffix: .jpg               # optional, default .jpg
    masks: masks                     # optional: class-index PNGs NAME.png (0 background, 1..C, 255 ignore)
    labels: labels.csv               # optional: image-level labels (CSV or JSON, see more.data.labels);
                                     #   without it they are derived from the masks
    splits:                          # list files, one image name (without suffix) a line
      train: splits/train.txt
      val: splits/val.txt

Splits whose name starts with ``test`` have no masks. The config selects such a dataset with ``data.dataset=custom
data.root=ROOT``; ``more.data.classes.class_names`` and ``more.config.num_classes`` read the class list from here, so
the class tokens, the metrics, the per-class tables and the pictures follow it.

Light on purpose (yaml and pathlib only): the config reads class counts through this module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DESCRIPTION_FILE = "dataset.yaml"
IGNORE_VALUE = 255  # mask value for "ignore": classes are 1..254 at most
REQUIRED = ("name", "classes", "images", "splits")
OPTIONAL = ("image_suffix", "masks", "labels")
# A class name becomes part of MLflow metric names (val/seg/iou/<name>) and of file and table cells: letters,
# digits, underscore, dot, dash and inner spaces (what MLflow accepts on every platform, minus the slash).
_CLASS_NAME = re.compile(r"[\w.\-]([\w.\- ]*[\w.\-])?")
_DATASET_NAME = re.compile(r"[\w.\-]+")
RESERVED_NAMES = ("voc", "coco")  # the built-in datasets: a described set may not pose as one


class DatasetError(ValueError):
    """A dataset description (or a file it names) that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class DatasetDescription:
    """The contents of a ``dataset.yaml``, paths resolved against its folder.

    Attributes:
        file: the YAML file.
        name: the dataset's name.
        classes: the C foreground class names (background excluded).
        images: the image folder.
        image_suffix: the images' file suffix (``.jpg``).
        masks: the mask folder, or None (labels then come from ``labels``).
        labels: the image-level labels file, or None (derived from the masks).
        splits: split name -> list file.
    """

    file: Path
    name: str
    classes: tuple[str, ...]
    images: Path
    image_suffix: str = ".jpg"
    masks: Path | None = None
    labels: Path | None = None
    splits: Mapping[str, Path] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.file.parent

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_names(self) -> list[str]:
        """The C+1 names, background first."""
        return ["background", *self.classes]

    def list_file(self, split: str) -> Path:
        """The list file of ``split``.

        Raises:
            DatasetError: the description has no such split (the known ones are named).
        """
        if split not in self.splits:
            raise DatasetError(f"{self.file}: splits: no split {split!r} (it has {', '.join(self.splits)})")
        return self.splits[split]

    def has_masks(self, split: str) -> bool:
        return self.masks is not None and not split.startswith("test")

    def to_yaml(self) -> str:
        """The YAML text; paths inside the description's folder are written relative to it."""
        import yaml

        def rel(p: Path) -> str:
            try:
                return p.relative_to(self.root).as_posix()
            except ValueError:
                return str(p)

        def dump(data: dict[str, Any], flow: bool = False) -> str:
            return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120, default_flow_style=False
                                  if not flow else None)

        rest: dict[str, Any] = {"images": rel(self.images), "image_suffix": self.image_suffix}
        if self.masks is not None:
            rest["masks"] = rel(self.masks)
        if self.labels is not None:
            rest["labels"] = rel(self.labels)
        rest["splits"] = {k: rel(v) for k, v in self.splits.items()}
        head = ("# A dataset described for more: train with data.dataset=custom data.root=<this folder>;\n"
                "# check with python -m more data check <this folder>. Mask value / label k is the k-th class.\n")
        return head + dump({"name": self.name}) + dump({"classes": list(self.classes)}, flow=True) + dump(rest)


def description_file(root: str | os.PathLike) -> Path:
    """``ROOT/dataset.yaml``, or ``root`` itself when it names a YAML file."""
    p = Path(root).expanduser()
    return p if p.suffix in (".yaml", ".yml") and not p.is_dir() else p / DESCRIPTION_FILE


def has_description(root: str | os.PathLike) -> bool:
    return description_file(root).is_file()


def check_class_names(names: Any, where: str) -> tuple[str, ...]:
    """The class names of a description, validated.

    Raises:
        DatasetError: not a non-empty list of distinct names, a name MLflow cannot log, ``background``, or more
            than 254 classes.
    """
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{where}: classes: need a non-empty list of class names, got {names!r}")
    if len(names) > IGNORE_VALUE - 1:
        raise DatasetError(f"{where}: classes: {len(names)} classes; masks hold 1..{IGNORE_VALUE - 1} "
                           f"({IGNORE_VALUE} is ignore)")
    seen: dict[str, str] = {}
    for i, name in enumerate(names, 1):
        if not isinstance(name, str) or not _CLASS_NAME.fullmatch(name) or name in (".", ".."):
            raise DatasetError(f"{where}: classes: class {i} {name!r}: use letters, digits, '_', '.', '-' and inner "
                               f"spaces (the name becomes part of metric names such as val/seg/iou/<name>)")
        key = name.casefold()
        if key == "background":
            raise DatasetError(f"{where}: classes: class {i} {name!r}: background is class 0 already; list only the "
                               f"foreground classes")
        if key in seen:
            raise DatasetError(f"{where}: classes: class {i} {name!r} repeats {seen[key]!r}")
        seen[key] = name
    return tuple(names)


def _path(value: Any, key: str, base: Path, where: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: {key}: need a path (relative to {base} or absolute), got {value!r}")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def parse_description(data: Any, file: Path) -> DatasetDescription:
    """Validate parsed YAML ``data`` of ``file``.

    Raises:
        DatasetError: naming the file and the key.
    """
    where = str(file)
    if not isinstance(data, dict):
        raise DatasetError(f"{where}: expected a mapping with keys {', '.join(REQUIRED)}")
    unknown = [k for k in data if k not in REQUIRED + OPTIONAL]
    if unknown:
        raise DatasetError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(REQUIRED + OPTIONAL)})")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise DatasetError(f"{where}: missing key {missing[0]!r}")
    name = data["name"]
    if not isinstance(name, str) or not _DATASET_NAME.fullmatch(name):
        raise DatasetError(f"{where}: name: {name!r}: use letters, digits, '_', '.' and '-'")
    if name.casefold() in RESERVED_NAMES:
        raise DatasetError(f"{where}: name: {name!r} is a built-in dataset; use data.dataset={name} for it, or "
                           f"another name")
    base = file.parent
    suffix = data.get("image_suffix", ".jpg")
    if not isinstance(suffix, str) or not re.fullmatch(r"\.[A-Za-z0-9]+", suffix):
        raise DatasetError(f"{where}: image_suffix: {suffix!r}: expected a file suffix such as .jpg or .png")
    splits = data["splits"]
    if not isinstance(splits, dict) or not splits:
        raise DatasetError(f"{where}: splits: need a mapping of split name -> list file, e.g. {{train: train.txt}}")
    for split in splits:
        if not isinstance(split, str) or not _DATASET_NAME.fullmatch(split):
            raise DatasetError(f"{where}: splits: split name {split!r}: use letters, digits, '_', '.' and '-'")
    return DatasetDescription(
        file=file, name=name, classes=check_class_names(data["classes"], where),
        images=_path(data["images"], "images", base, where), image_suffix=suffix,
        masks=None if data.get("masks") is None else _path(data["masks"], "masks", base, where),
        labels=None if data.get("labels") is None else _path(data["labels"], "labels", base, where),
        splits={k: _path(v, f"splits: {k}", base, where) for k, v in splits.items()})


_CACHE: dict[Path, tuple[tuple[int, int], DatasetDescription]] = {}


def read_description(root: str | os.PathLike) -> DatasetDescription:
    """The description of the dataset at ``root`` (a folder holding ``dataset.yaml``, or the YAML file itself);
    re-read only when the file changes.

    Raises:
        DatasetError: the file is missing, not valid YAML, or not a valid description (file and key named).
    """
    from more.yamlio import YamlError, load_yaml

    file = description_file(root).absolute()
    try:
        st = file.stat()
    except OSError:
        raise DatasetError(f"{file}: dataset description not found (a dataset with its own classes is described "
                           f"by {DESCRIPTION_FILE} in its root; `python -m more data prepare folder` writes one)"
                           ) from None
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _CACHE.get(file)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        data = load_yaml(file.read_text(), where=str(file))
    except (YamlError, UnicodeDecodeError, OSError) as exc:
        raise DatasetError(str(exc) if isinstance(exc, YamlError) else f"{file}: cannot read: {exc}") from None
    desc = parse_description(data, file)
    _CACHE[file] = (stamp, desc)
    return desc


def write_description(desc: DatasetDescription) -> Path:
    """Write ``desc`` to ``desc.file`` atomically."""
    import yaml

    from more.outputs import atomic_write

    text = desc.to_yaml()
    parse_description(yaml.safe_load(text), desc.file)  # what is written reads back
    return atomic_write(desc.file, text)


def description_identity(root: str | os.PathLike, fingerprint: Any) -> dict[str, Any]:
    """What a described dataset holds, for trial identities: its name, classes and image suffix, the list files' and
    the labels file's contents (sha256) and ``fingerprint(folder)`` of the image and mask folders (paths are left
    out, so a moved dataset keeps its identity)."""
    import hashlib

    def sha(path: Path) -> str | None:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    desc = read_description(root)
    return {"name": desc.name, "classes": list(desc.classes), "image_suffix": desc.image_suffix,
            "lists": {k: sha(v) for k, v in desc.splits.items()},
            "labels": sha(desc.labels) if desc.labels is not None else None,
            "images": fingerprint(desc.images) if desc.images.is_dir() else None,
            "masks": fingerprint(desc.masks) if desc.masks is not None and desc.masks.is_dir() else None}
