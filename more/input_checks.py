"""Checks of what a config's dataset and weights hold, run before any work: the inputs ``train`` otherwise meets only
once it builds the dataset or the model (and then as a traceback).

* every split a command will read (``data.train_split``, ``data.val_split``, ``eval.split``, ``--split``) has its
  list file, the list is not empty, and a split that is scored has ground-truth masks;
* ``data.labels_file`` parses and names every image of those splits;
* the training split holds at least one batch (``train.batch_size``);
* ``model.pretrained``, when it is a file, loads into the config's backbone (built on the ``meta`` device: shapes
  only, no memory);
* ``runtime.device`` is one this machine (or a trial's Ray reservation) has.

A synthetic set that is generated on first use is judged by what the generator will write. Each check raises
:class:`DataInputError` (a :class:`~more.preflight.PreflightError`: one ``error:`` line, exit 2) naming the key and
the value at fault.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from more.config.batch import global_batch
from more.preflight import PreflightError


class DataInputError(PreflightError):
    """A split, labels file, weights file or device named by the config that cannot be used."""


def training_splits(cfg: Any) -> dict[str, str]:
    """The splits ``train`` reads, by config key."""
    return {"data.train_split": cfg.data.train_split, "data.val_split": cfg.data.val_split}


def _generated_later(cfg: Any) -> bool:
    root = Path(cfg.data.root)
    return cfg.data.dataset == "synthetic" and cfg.data.synth_generate and not (root.is_dir() and any(root.iterdir()))


def _synth_split_sizes(cfg: Any) -> dict[str, int]:
    """The splits and sizes the synthetic generator will write for ``cfg`` (its options, not a rendering)."""
    from more.data.synth import SynthOptions

    options = SynthOptions.from_config(cfg)
    return {"train": options.train, "train_aug": options.train, "val": options.val, "test": options.num_test}


def _available(list_dir: Path) -> str:
    names = sorted(p.stem for p in list_dir.glob("*.txt")) if list_dir.is_dir() else []
    return f"splits here: {', '.join(names)}" if names else f"no split lists in {list_dir}"


def split_names(cfg: Any, key: str, split: str, where: str = "") -> list[str] | int:
    """The image names of ``split`` (``key`` is how the user named it), or only their number for a synthetic set
    that is not generated yet.

    Raises:
        DataInputError: no list file for the split, or an empty one.
    """
    from more.data import read_split, split_files

    if _generated_later(cfg):
        sizes = _synth_split_sizes(cfg)
        if split not in sizes:
            raise DataInputError(f"{where}{key}={split!r}: the synthetic set generated at data.root has the splits "
                                 f"{', '.join(sizes)}")
        return sizes[split]
    from more.data.description import DatasetError

    try:
        files = split_files(cfg.data.root, cfg.data.dataset, split)
    except DatasetError as exc:  # a described set (dataset.yaml) that does not list the split, or a broken description
        raise DataInputError(f"{where}{key}={split!r}: {' '.join(str(exc).split())}") from None
    if not files.list_file.is_file():
        raise DataInputError(f"{where}{key}={split!r}: no split list {files.list_file} "
                             f"({_available(files.list_file.parent)})")
    names = read_split(files.list_file)
    if not names:
        raise DataInputError(f"{where}{key}={split!r}: the split list {files.list_file} names no image")
    return names


@functools.lru_cache(maxsize=8)
def _labels_table(path: str, num_classes: int, _stamp: tuple[int, int]) -> dict[str, list[int]]:
    from more.data import read_labels_file

    return read_labels_file(path, num_classes)


def labels_table(cfg: Any, where: str = "") -> dict[str, list[int]] | None:
    """``data.labels_file`` parsed (None when the config derives labels from the masks).

    Raises:
        DataInputError: the file is missing, unreadable or does not parse.
    """
    from more.config import num_classes

    value = cfg.data.labels_file
    if not value:
        return None
    path = Path(value).expanduser()
    try:
        stat = path.stat()
        return _labels_table(str(path), num_classes(cfg), (stat.st_size, stat.st_mtime_ns))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        text = re.sub(rf"^{re.escape(str(path))}:(\d+):", r"line \1:", str(exc)).removeprefix(f"{path}: ")
        raise DataInputError(f"{where}data.labels_file={value!r}: {' '.join(text.split()) or type(exc).__name__}") \
            from None


def check_splits(cfg: Any, splits: Mapping[str, str], *, where: str = "", scored: tuple[str, ...] = (),
                 train_key: str | None = None) -> list[str]:
    """Every split in ``splits`` (config key or flag -> split name) can be read.

    Args:
        cfg: the config whose dataset is read.
        splits: the splits the command reads, by how the user named them.
        where: starts each message (e.g. a trial name).
        scored: keys whose split is scored against ground truth, so it needs masks (no ``test*`` split).
        train_key: the key of the training split, which must hold one batch of labelled images.

    Returns:
        One line per split with its image count.

    Raises:
        DataInputError: naming the key, the split and the file.
    """
    from more.data import split_files

    table = labels_table(cfg, where)
    lines = []
    for key, split in splits.items():
        names = split_names(cfg, key, split, where)
        if key != train_key and cfg.eval.max_images > 0:  # evaluations read the first eval.max_images only
            names = min(names, cfg.eval.max_images) if isinstance(names, int) else names[: cfg.eval.max_images]
        count = names if isinstance(names, int) else len(names)
        has_masks = split_files(cfg.data.root, cfg.data.dataset, split).mask_dir is not None
        if key in scored and not has_masks:
            raise DataInputError(f"{where}{key}={split!r}: this split has no ground-truth masks, so it cannot be "
                                 f"scored; name a labelled split (e.g. val)")
        if table is not None and not isinstance(names, int):
            absent = [n for n in names if n not in table]
            if absent and (has_masks or key == train_key):
                raise DataInputError(f"{where}data.labels_file={cfg.data.labels_file!r}: no labels for "
                                     f"{len(absent)} image(s) of {key}={split!r}, e.g. {absent[:3]}")
            if key == train_key:
                count = sum(1 for n in names if table.get(n))  # images without a class are skipped in training
        elif key == train_key and not has_masks:
            raise DataInputError(f"{where}{key}={split!r}: this split has no masks to derive image labels from; "
                                 f"set data.labels_file")
        if key == train_key and count < global_batch(cfg):
            steps = f" x train.accum_steps={cfg.train.accum_steps}" if cfg.train.accum_steps > 1 else ""
            raise DataInputError(f"{where}{key}={split!r}: {count} training image(s), fewer than one batch "
                                 f"(train.batch_size={cfg.train.batch_size}{steps}); lower train.batch_size or use a "
                                 f"larger split")
        lines.append(f"{key} {split} ({count} images)")
    return lines


_WEIGHTS_CHECKED: dict[tuple[Any, ...], str] = {}  # (variant, sizes, file, size, mtime) -> '' or the problem


def _weights_problem(cfg: Any, source: str) -> str:
    """'' when ``source`` loads into the backbone of ``cfg``, else WeightsError's text (cached per file version)."""
    from more.config import num_classes
    from more.model.build import build_backbone
    from more.model.weights import WeightsError, load_pretrained

    stat = Path(source).stat()
    key = (cfg.model.variant, num_classes(cfg), cfg.model.num_registers, cfg.model.aux_layer, source, stat.st_size,
           stat.st_mtime_ns)
    if key not in _WEIGHTS_CHECKED:
        backbone = build_backbone(cfg, device="meta")  # shapes only: mapping and shape checks run, nothing is copied
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "copying ... to a meta parameter is a no-op": the point here
                load_pretrained(backbone, source)
            _WEIGHTS_CHECKED[key] = ""
        except WeightsError as exc:
            _WEIGHTS_CHECKED[key] = _without_unsafe_advice(str(exc).removeprefix(f"pretrained weights '{source}': "))
    return _WEIGHTS_CHECKED[key]


def _without_unsafe_advice(text: str) -> str:
    """Torch's refusal of a file under ``weights_only=True`` advises retrying without it, which would run whatever
    code the file holds; keep only its reason."""
    if "weights_only" not in text:
        return text
    reason = next((line.strip() for line in text.splitlines() if line.strip().startswith("Unsupported")), "")
    head = text.split(":", 1)[0] if text.startswith(("UnpicklingError", "RuntimeError")) else "the file"
    return (f"{head}: not a file of tensors that torch loads safely (weights_only=True)"
            + (f" ({reason})" if reason else ""))


def check_weights(cfg: Any, where: str = "") -> str:
    """``model.pretrained``, when it names a file, loads into the config's backbone ('' when there is none).

    A timm tag is resolved by the model builder (it needs a reachable hub) and is not checked here.

    Raises:
        DataInputError: the file does not load (not a state dict, another architecture, a shape mismatch).
    """
    source = cfg.model.pretrained
    if source == "timm":  # the variant's timm tag (more.model.build.pretrained_source), checked without torch
        from more.model.variants import TIMM_NAMES

        if cfg.model.variant not in TIMM_NAMES:
            raise DataInputError(f"{where}model.pretrained='timm': no timm weights are known for variant "
                                 f"{cfg.model.variant}")
        return ""
    if not source or source.startswith("timm:"):
        return ""  # torch and timm are imported below only when a file is named (dry runs of random-init specs)
    from more.model.weights import is_weights_file

    if not is_weights_file(source):
        return ""
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataInputError(f"{where}model.pretrained={cfg.model.pretrained!r}: file does not exist")
    problem = _weights_problem(cfg, str(path))
    if problem:
        raise DataInputError(f"{where}model.pretrained={cfg.model.pretrained!r}: does not load into "
                             f"{cfg.model.variant}: {' '.join(problem.split())[:400]}")
    return f"weights {source} (load into {cfg.model.variant})"


def check_device(device: str, *, gpus: float | None = None, where: str = "") -> str:
    """``runtime.device`` must exist where the run executes.

    Args:
        device: the config's ``runtime.device``.
        gpus: the GPUs a Ray trial reserves (``resources.gpus``), for trials; None checks this machine.

    Raises:
        DataInputError: a CUDA device on a machine without it, or in a trial that reserves no GPU.
    """
    from more.preflight import device_available

    if not device.startswith("cuda"):
        return f"runtime.device {device}"
    if gpus is not None:
        if gpus <= 0:
            raise DataInputError(f"{where}runtime.device={device!r}: the trial reserves no GPU (resources.gpus="
                                 f"{gpus:g}), so Ray hides every CUDA device from it; set resources.gpus or use "
                                 f"runtime.device=auto")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= math.ceil(gpus):
            raise DataInputError(f"{where}runtime.device={device!r}: a trial sees only the {math.ceil(gpus)} GPU(s) "
                                 f"it reserves (resources.gpus={gpus:g}), numbered from cuda:0; use runtime.device="
                                 f"cuda or auto")
        return f"runtime.device {device} (a trial reserves {gpus:g} GPU)"
    try:
        return device_available(device)
    except PreflightError as exc:
        raise DataInputError(str(exc)) from None


def dataset_inputs(cfg: Any, *, splits: Mapping[str, str] | None = None, scored: tuple[str, ...] | None = None,
                   weights: bool = True, where: str = "") -> list[str]:
    """The split, labels and weights checks for a command (default: what ``train`` reads).

    Args:
        splits: the splits read, by key (default :func:`training_splits`, with the training split's batch check).
        scored: keys of splits that are scored (default: the validation split, or every split given).
        weights: check ``model.pretrained`` (False where a checkpoint provides every weight).
    """
    train_key = "data.train_split" if splits is None else None
    splits = training_splits(cfg) if splits is None else splits
    scored = (("data.val_split",) if train_key else tuple(splits)) if scored is None else scored
    lines = check_splits(cfg, splits, where=where, scored=scored, train_key=train_key)
    if weights:
        line = check_weights(cfg, where)
        if line:
            lines.append(line)
    return lines



def trial_device(cfg: Any, resources: Any, where: str = "") -> str:
    """``runtime.device`` of a Ray trial against what it reserves (:class:`more.harness.spec.Resources`; under DDP
    each worker process sees its own share)."""
    return check_device(cfg.runtime.device, gpus=resources.gpus_per_worker, where=where)
