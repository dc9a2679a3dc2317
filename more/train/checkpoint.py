"""Checkpoints that resume a run exactly: written atomically, loaded with ``weights_only=True``, at most k kept.

Layout: ``RUN_DIR/checkpoints/iter_000200/{checkpoint.pt, config.yaml, iteration}``. A checkpoint holds the model, the
optimizer (incl. its schedule step), the iteration, the data-order position and every RNG state.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from more.config import MoReConfig, save_config
from more.outputs import atomic_dir

CKPT_FILE = "checkpoint.pt"
_RECORD_OVERHEAD = 128  # torch.save's zip entry per tensor: header, name and alignment padding (measured ~100 bytes)
ITERATION_FILE = "iteration"
AUTHORS = "authors"  # the "format" of a payload read from the authors' checkpoint (see load_checkpoint)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def rng_state() -> dict[str, Any]:
    version, mt_state, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_tensors(np.random.get_state()),
        "python": [torch.tensor(list(mt_state), dtype=torch.int64), version, gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state_to_tensors(st: tuple) -> list:
    name, keys, pos, has_gauss, cached = st
    return [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)]


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py_keys, version, gauss = state["python"]
    random.setstate((version, tuple(int(k) for k in py_keys.tolist()), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: str | os.PathLike,
    *,
    iteration: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data_state: dict[str, int],
    cfg: MoReConfig,
    keep: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``checkpoints/iter_NNNNNN`` atomically (temporary folder, then rename) and prune to ``keep``.

    Raises:
        DiskFullError: the disk filled up; the temporary folder is removed and every earlier checkpoint is kept.
    """
    root = Path(run_dir) / "checkpoints"
    final = root / f"iter_{iteration:06d}"
    payload = {
        "iteration": iteration,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "data": dict(data_state),
        "rng": rng_state(),
        "extra": extra or {},
    }
    with atomic_dir(final, what="a checkpoint", need=payload_bytes(payload)) as tmp:  # tmp: .tmp_iter_NNNNNN
        torch.save(payload, tmp / CKPT_FILE)
        save_config(cfg, tmp / "config.yaml")
        (tmp / ITERATION_FILE).write_text(f"{iteration}\n")  # readable without loading the checkpoint (and in copies)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def payload_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint payload plus torch's per-record overhead: what it needs on disk."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size() + _RECORD_OVERHEAD
    if isinstance(obj, dict):
        return sum(payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_bytes(v) for v in obj)
    return 16


def estimate_checkpoint_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """A checkpoint's size before the first step: the model's state, AdamW's two moments per trainable parameter
    (its state is empty until the first step), a step counter each, and the RNG states."""
    size = payload_bytes(model.state_dict()) + payload_bytes(rng_state())
    if any(optimizer.state.values()):
        return size + payload_bytes(optimizer.state_dict())
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad:
                size += 2 * (p.numel() * p.element_size() + _RECORD_OVERHEAD) + 4 + _RECORD_OVERHEAD
    return size


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("iter_") and (p / CKPT_FILE).is_file())


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Accept a checkpoint file, a checkpoint folder, or a run folder (its newest checkpoint)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if (p / CKPT_FILE).is_file():
        return p / CKPT_FILE
    found = list_checkpoints(p)
    if found:
        return found[-1] / CKPT_FILE
    raise CheckpointError(f"no checkpoint at {p} (expected {CKPT_FILE}, a checkpoint folder, or a run folder)")


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu", authors: bool = False
) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); a clear error for missing or corrupt files.

    Args:
        authors: also accept a checkpoint in the authors' format (``scripts/train_voc.py``'s state dict, or
            ``train_coco.py``'s ``{"step", "model_state_dict", ...}``; see :mod:`more.model.reference_names`). It
            comes back as ``{"format": "authors", "model": <their state dict, their names>, "iteration", "path"}``:
            :func:`load_model_weights` maps the names. It holds weights only, so it cannot resume training.
    """
    from more.model.reference_names import reference_state_dict

    file = resolve_checkpoint(path)
    try:
        payload = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"cannot read checkpoint {file}: {refusal_text(exc)}") from None
    if isinstance(payload, dict) and "model" in payload:
        payload["path"] = str(file)
        return payload
    state = reference_state_dict(payload)
    if state is None:
        raise CheckpointError(f"{file} is not a MoRe checkpoint (no 'model' entry) nor one in the authors' format")
    if not authors:
        raise CheckpointError(f"{file} is a checkpoint in the authors' format (zwyang6/MoRe): it holds weights only, "
                              f"so it cannot resume training; `eval` and `infer` read it with --config")
    step = payload.get("step") if isinstance(payload, dict) else None
    match = re.search(r"iter_(\d+)", file.name)
    iteration = int(step) if isinstance(step, int) else int(match.group(1)) if match else -1
    return {"format": AUTHORS, "model": state, "iteration": iteration, "path": str(file)}


def refusal_text(exc: BaseException) -> str:
    """Torch's reason for not loading a file, without its advice to retry with ``weights_only=False``: that would
    run whatever code the file carries, and we refused the file for exactly that."""
    text = str(exc)
    if "weights_only" not in text:
        return f"{type(exc).__name__}: {' '.join(text.split())[:300]}"
    reason = next((line.strip() for line in text.splitlines() if "Unsupported" in line or "WeightsUnpickler" in line),
                  "")
    return ("it holds Python objects beyond tensors and plain containers, which are not loaded for safety"
            + (f" ({reason[:200]})" if reason else ""))


def load_model_weights(model: torch.nn.Module, payload: dict[str, Any]) -> None:
    """Restore every weight strictly; an authors'-format payload through the name map (their names in errors)."""
    state = authors_weights(model, payload) if payload.get("format") == AUTHORS else payload["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{payload.get('path', 'checkpoint')} does not fit this model: {exc}") from None


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def authors_weights(model: torch.nn.Module, payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The authors' state dict under our names, checked against ``model`` before anything is loaded.

    Raises:
        CheckpointError: naming (in the authors' names) every weight the model needs and the file lacks, every
            weight of the file the model has no place for, and every shape that differs.
    """
    from more.model.reference_names import from_reference, reference_name

    def theirs(name: str) -> str:
        try:
            return reference_name(name)
        except KeyError:
            return name

    ours, unknown = from_reference(payload["model"])
    expected = model.state_dict()
    missing = [theirs(k) for k in expected if k not in ours]
    unexpected = unknown + [theirs(k) for k in ours if k not in expected]
    shapes = [f"{theirs(k)} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in ours.items()
              if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    problems = [f"{label}: {_listing(names)}" for label, names in
                (("missing", missing), ("unexpected", unexpected), ("shape (file vs config)", shapes)) if names]
    if problems:
        raise CheckpointError(f"{payload['path']}: the authors' weights do not fit the model of this config ("
                              + "; ".join(problems) + "). Check the config given with --config and its overrides: "
                              "the dataset's classes, model.variant, model.num_registers, model.decoder_channels, "
                              "gcr.enabled")
    return ours


def checkpoint_config(payload: dict[str, Any], config: str | os.PathLike | None,
                      overrides: Sequence[str] | dict[str, Any] | None = None) -> MoReConfig | None:
    """The config given for a loaded checkpoint (a preset or experiment YAML, plus overrides), or None to use the
    run's own ``config.yaml``.

    Raises:
        CheckpointError: an authors'-format checkpoint without ``config``: it carries none.
    """
    if config is None:
        if payload.get("format") == AUTHORS:
            raise CheckpointError(f"{payload['path']} is a checkpoint in the authors' format (zwyang6/MoRe), which "
                                  f"carries no config: give the one it was trained with, e.g. --config "
                                  f"experiments/voc.yaml (plus overrides such as data.root=...)")
        return None
    from more.config import load_config

    return load_config(str(config), dict(overrides) if isinstance(overrides, dict) else list(overrides or []))
