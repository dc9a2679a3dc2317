"""Offline inference from a checkpoint: seeds, DenseCRF pseudo masks, segmentation and cam2seg (MORE_SPEC §5.2-5.4).

The path behind the paper's Table 1 (seeds / masks on ``train``) and Table 2 (segmentation on ``val``):

* ``seeds``: CAM or LAM with GT image labels, thresholded at ``eval.bkg_thre`` -> ``OUT/seeds/*.png``; the
  score maps of the present classes, quantised -> ``OUT/maps/*.npz`` (:mod:`more.eval.infer_items`).
* ``masks``: seeds, then DenseCRF of ``[1 - max_c map_c, map_c...]`` -> ``OUT/masks/*.png``.
* ``seg``: multi-scale flip-summed decoder logits -> ``OUT/seg_raw/*.png``; with CRF ``OUT/seg_crf/*.png``.
* ``cam2seg``: like seeds with *predicted* labels -> ``OUT/cam2seg/*.png``; with CRF ``OUT/cam2seg_crf/*.png``.

:func:`run_inference` is the in-process driver: forwards run batched on the device (:func:`more.eval.infer_work
.net_batch`), CRF jobs run on a pool of CPU processes meanwhile, and one writer thread writes the files and the
per-image completion record (:class:`more.eval.infer_store.InferStore`), so an interrupted run resumes from the
finished images. ``more.harness.infer_fanout`` drives the same pieces over Ray.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from more.config import MoReConfig, apply_overrides, from_dict, num_classes
from more.config.load import read_yaml
from more.data import collate_eval
from more.eval.infer_items import MAP_FORMATS, CrfDone, CrfJob, decode_maps, run_crf
from more.eval.infer_store import InferStore, batch_grid
from more.eval.infer_work import net_batch
from more.eval.metrics import Scores, scores
from more.eval.seeds import SOURCES
from more.outputs import atomic_write
from more.pseudo.crf import crf_pool, default_workers
from more.train.checkpoint import CheckpointError, load_checkpoint, load_model_weights
from more.train.progress import Progress

TASKS = ("seeds", "masks", "seg", "cam2seg")
_OUTPUTS = {"seeds": ("seeds", "masks"), "masks": ("seeds", "masks"), "seg": ("seg_raw", "seg_crf"),
            "cam2seg": ("cam2seg", "cam2seg_crf")}  # task -> (output without CRF, output after CRF)
Log = Callable[[str], None]


def log_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ checkpoints


@dataclass
class LoadedRun:
    """A model restored from a checkpoint, with the run's config (plus overrides) and where it runs."""

    cfg: MoReConfig
    model: torch.nn.Module
    checkpoint: Path  # the checkpoint.pt file
    iteration: int
    device: torch.device
    autocast: bool  # bf16 autocast for the forwards (train.amp: auto = on CUDA only)


def run_config_path(checkpoint_file: Path) -> Path:
    """The resolved ``config.yaml`` of a checkpoint: in its folder, else in its run folder."""
    candidates = (checkpoint_file.parent / "config.yaml", checkpoint_file.parent.parent.parent / "config.yaml")
    for path in candidates:
        if path.is_file():
            return path
    raise CheckpointError(f"no config.yaml for checkpoint {checkpoint_file} (looked for {candidates[0]})")


def load_run(checkpoint: str | os.PathLike, overrides: Sequence[str] | dict[str, Any] | None = None, *,
             config: str | os.PathLike | None = None) -> LoadedRun:
    """Load a checkpoint and its run's config, apply dotted overrides, build the model and restore its weights.

    Args:
        checkpoint: a checkpoint file, a checkpoint folder (``RUN/checkpoints/iter_N``) or a run folder (newest);
            also a checkpoint in the authors' format (zwyang6/MoRe's ``model_iter_N.pth``), which needs ``config``.
        overrides: dotted ``key=value`` overrides on top of the saved config (e.g. ``eval.batch_size=4``).
        config: a preset or experiment YAML to use instead of the run's saved config (the authors' checkpoints
            carry none).

    Raises:
        CheckpointError: the checkpoint or its config is missing, unreadable or does not fit the model.
        ConfigError: a bad override.
    """
    from more.model import build_model
    from more.train.checkpoint import checkpoint_config
    from more.train.trainer import resolve_device, use_autocast

    payload = load_checkpoint(checkpoint, map_location="cpu", authors=True)  # ours, or the authors' state dict
    file = Path(payload["path"])
    cfg = checkpoint_config(payload, config, overrides)  # --config, or None: the run's own config.yaml
    if cfg is None:
        config_path = run_config_path(file)
        cfg = from_dict(read_yaml(config_path), where=f"{config_path}: ")
        if overrides:
            cfg = apply_overrides(cfg, overrides)
    if cfg.runtime.num_threads:
        torch.set_num_threads(cfg.runtime.num_threads)
    device = resolve_device(cfg.runtime.device)
    model = build_model(cfg, load_weights=False)  # the checkpoint overwrites every weight
    load_model_weights(model, payload)
    model.to(device).eval()
    return LoadedRun(cfg=cfg, model=model, checkpoint=file, iteration=int(payload.get("iteration", -1)),
                     device=device, autocast=use_autocast(cfg, device))


# ------------------------------------------------------------------------------------------------ files


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, text)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Strict JSON (NaN and infinities become null), written atomically."""
    text = json.dumps(_finite_or_none(data), indent=2, allow_nan=False)
    write_text_atomic(path, text + "\n")


def load_score_maps(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(scores (n, H, W) float32 in [0, 1], class ids (n,))`` of ``OUT/maps/NAME.npz`` as ``infer`` wrote it."""
    return decode_maps(path)


def scores_record(s: Scores, class_names: Sequence[str]) -> dict[str, Any]:
    """JSON-ready scores in the table's units (×100 except the confusion ratio); per-class values by name."""
    p = s.as_percent()
    record: dict[str, Any] = {name: float(getattr(p, name)) for name in
                              ("miou", "miou_present", "mprecision", "mrecall", "mconfusion", "pixel_acc")}
    for name in ("iou", "precision", "recall", "confusion"):
        record[name] = {cls: float(v) for cls, v in zip(class_names, getattr(p, name))}
    return record


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (a checkpoint's identity, whatever its path)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -------------------------------------------------------------------------------------------------- CRF


def crf_kwargs(cfg: MoReConfig) -> dict[str, float]:
    """The DenseCRF settings of ``cfg.eval`` (reference ``utils/dcrf.py::DenseCRF``, MORE_SPEC §5.2)."""
    e = cfg.eval
    return {"iters": e.crf_iters, "gauss_sxy": e.crf_gauss_sxy, "gauss_compat": e.crf_gauss_compat,
            "bi_sxy": e.crf_bi_sxy, "bi_srgb": e.crf_bi_srgb, "bi_compat": e.crf_bi_compat}


# ---------------------------------------------------------------------------------------------- options


@dataclass
class InferOptions:
    """What ``python -m more infer`` computes."""

    task: str  # seeds | masks | seg | cam2seg
    source: str = "cam"  # cam | lam (seeds, masks, cam2seg)
    multiscale: bool = False  # eval.infer_multiscale instead of eval.infer_cam_scales (seeds, masks, cam2seg)
    crf: bool = False  # masks always; seg / cam2seg with --crf; seeds with --crf = masks
    workers: int = 0  # CRF processes; 0 = eval.crf_workers (0 there = 60 % of the cores)
    maps: str = "uint8"  # how score maps are stored: uint8 | float16 | none (seg stores none)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}: must be one of {', '.join(TASKS)}")
        if self.source not in SOURCES:
            raise ValueError(f"source={self.source!r}: must be one of {', '.join(SOURCES)}")
        if self.maps not in MAP_FORMATS:
            raise ValueError(f"maps={self.maps!r}: must be one of {', '.join(MAP_FORMATS)}")
        if self.task == "masks" or (self.task == "seeds" and self.crf):  # seeds + CRF is the masks task
            self.task, self.crf = "masks", True
        if self.task == "seg":
            self.maps = "none"

    @property
    def outputs(self) -> tuple[str, ...]:
        """Output names = PNG folders under OUT (the first one is always written)."""
        names = _OUTPUTS[self.task]
        return names if self.crf else names[:1]

    @property
    def uses_source(self) -> bool:
        """Seeds, masks and cam2seg come from CAM / LAM maps; seg from the decoder."""
        return self.task != "seg"

    def scales(self, cfg: MoReConfig) -> list[float]:
        """The inference scales this task uses."""
        if not self.uses_source:
            return list(cfg.eval.seg_scales)
        return list(cfg.eval.infer_multiscale if self.multiscale else cfg.eval.infer_cam_scales)

    def default_dir_name(self, split: str) -> str:
        parts = ["infer", self.task]
        if self.uses_source:
            parts.append(self.source)
        parts.append(split)
        if self.multiscale and self.uses_source:
            parts.append("ms")
        if self.crf and self.task in ("seg", "cam2seg"):
            parts.append("crf")
        return "_".join(parts)


def infer_settings(cfg: MoReConfig, options: InferOptions, *, split: str, names: Sequence[str], checkpoint_sha256: str,
                   device_type: str) -> dict[str, Any]:
    """Everything that decides the bytes of an inference's outputs (``settings.json``; a resume must match it).

    Args:
        cfg: the run's config with the overrides applied.
        options: the task and its switches.
        split: the split's name.
        names: the images, in order.
        checkpoint_sha256: the checkpoint file's digest (:func:`file_sha256`).
        device_type: where the network runs (``cpu``/``cuda``): it decides bf16 autocast (``train.amp``).
    """
    from more.train.trainer import use_autocast

    e = cfg.eval
    config: dict[str, Any] = {"data.dataset": cfg.data.dataset, "data.mean": list(cfg.data.mean),
                              "data.std": list(cfg.data.std), "eval.resize": e.resize, "eval.batch_size": e.batch_size,
                              "autocast": use_autocast(cfg, torch.device(device_type))}
    if options.uses_source:
        config["eval.bkg_thre"] = e.bkg_thre
        config["model.lam"] = cfg.model.lam if options.source == "lam" else None
    if options.task == "cam2seg":
        config["eval.cam2seg_min_pixels"] = e.cam2seg_min_pixels
    if options.crf:
        config.update({f"eval.crf_{k}": v for k, v in crf_kwargs(cfg).items()})
    return {
        "checkpoint_sha256": checkpoint_sha256, "task": options.task,
        "source": options.source if options.uses_source else None, "split": split, "multiscale": options.multiscale,
        "crf": options.crf, "scales": options.scales(cfg), "maps": options.maps,
        "images": {"count": len(names), "names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()},
        "config": config,
    }


def infer_key(settings: dict[str, Any]) -> str:
    """The identity of an inference's measurement (the MLflow resume key ``more.infer.key``): a digest of its
    settings without those that change files but not values (the maps' storage, the batch size)."""
    kept = {k: v for k, v in settings.items() if k != "maps"}
    kept["config"] = {k: v for k, v in settings.get("config", {}).items() if k != "eval.batch_size"}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- driver


@dataclass
class InferResult:
    """What an inference produced over every recorded image (this run and the ones it resumed): scores per output
    (empty without ground truth) and counts."""

    out_dir: Path
    num_images: int  # images with every output
    scores: dict[str, Scores]
    hists: dict[str, np.ndarray] = field(default_factory=dict)
    decoder_label_images: int = 0  # cam2seg: images whose labels came from the decoder fallback
    computed: int = 0  # images finished by this run (the others were finished before it)


def result_of(store: InferStore, names: Sequence[str], finished_before: int) -> InferResult:
    """The :class:`InferResult` of a closed store."""
    hists = store.hists()
    done = store.finished(names)
    return InferResult(out_dir=store.out, num_images=done,
                       scores={o: scores(h) for o, h in hists.items() if int(h.sum()) > 0}, hists=hists,
                       decoder_label_images=len(store.decoder_labels.intersection(names)),
                       computed=done - finished_before)


class InferProgress:
    """A bar with ETA on a terminal and a line at every tenth of the images (called from the writer thread)."""

    def __init__(self, store_counts: Callable[[], tuple[int, ...]], total: int, *, desc: str, outputs: Sequence[str],
                 log: Log) -> None:
        self.counts, self.total, self.outputs, self.log = store_counts, total, tuple(outputs), log
        done = store_counts()[0]
        self.progress = Progress(total, desc=desc, start=done)
        self._step = done * 10 // max(total, 1)
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            done, *per_output = self.counts()
            info = " ".join(f"{o} {n}/{self.total}" for o, n in zip(self.outputs, per_output)) \
                if len(self.outputs) > 1 else ""
            self.progress.update(done, info)
            step = done * 10 // max(self.total, 1)
            if step > self._step or done == self.total:
                self._step = step
                text = self.progress.text(done, info)
                self.progress.line(text) if self.progress.tty else self.log(text)


class CrfRunner:
    """Runs CRF jobs on a pool of CPU processes (one thread when ``workers`` is 1) and hands results to the store in
    submission order; at most ``max_jobs`` jobs or ``max_bytes`` of their arrays are in flight."""

    def __init__(self, task: str, kwargs: dict[str, float], k: int, store: InferStore, *, workers: int,
                 max_bytes: int = 1 << 30) -> None:
        self.task, self.kwargs, self.k, self.store = task, kwargs, k, store
        self.workers = workers if workers > 0 else default_workers()
        self.max_jobs, self.max_bytes = max(8, 4 * self.workers), max_bytes
        self._executor: Executor = ThreadPoolExecutor(1, thread_name_prefix="more-crf") if self.workers == 1 \
            else crf_pool(self.workers)
        self._pending: deque[tuple[Future, int]] = deque()
        self._bytes = 0

    def add(self, job: CrfJob) -> None:
        self._harvest(room=job.nbytes)
        self._pending.append((self._executor.submit(run_crf, job, self.task, self.kwargs, self.k), job.nbytes))
        self._bytes += job.nbytes

    def _harvest(self, *, room: int = 0, drain: bool = False) -> None:
        def full() -> bool:
            return len(self._pending) >= self.max_jobs or (self._bytes + room > self.max_bytes and self._pending)

        while self._pending and (drain or self._pending[0][0].done() or full()):
            future, size = self._pending.popleft()
            self._bytes -= size
            done: CrfDone = future.result()
            self.store.submit_crf([done])

    def close(self, *, discard: bool = False) -> None:
        """Hand every result to the store (or drop what is left when ``discard``) and stop the workers."""
        try:
            if not discard:
                self._harvest(drain=True)
        finally:
            self._executor.shutdown(wait=True, cancel_futures=True)


def run_inference(run: LoadedRun, dataset: Any, options: InferOptions, out_dir: str | os.PathLike, *,
                  log: Log = log_stderr) -> InferResult:
    """Run ``options.task`` over ``dataset`` in this process, resuming from the images ``out_dir`` already records.

    Args:
        run: the restored model and config (:func:`load_run`).
        dataset: an :class:`more.data.EvalDataset` (resized images, masks, labels, originals; ``names``).
        options: the task and its switches.
        out_dir: where the PNG folders, ``maps/`` and ``done.jsonl`` are written.
        log: progress lines.

    Returns:
        :class:`InferResult` over every recorded image; scores for outputs whose confusion matrix received pixels.
    """
    cfg, device = run.cfg, run.device
    names = list(dataset.names)
    k = num_classes(cfg) + 1
    grid = batch_grid(len(names), cfg.eval.batch_size)
    store = InferStore(out_dir, options.outputs, k)
    finished_before = store.finished(names)
    todo = store.pending(grid, names)
    store.on_record = InferProgress(store.counts, len(names), desc=f"infer {options.task}", outputs=options.outputs,
                                    log=log)
    crf = CrfRunner(options.task, crf_kwargs(cfg), k, store, workers=options.workers or cfg.eval.crf_workers) \
        if options.crf else None
    resumed = f", {finished_before} finished before" if finished_before else ""
    log(f"infer {options.task}: {len(names)} images{resumed} -> {out_dir}"
        + (f" (CRF on {crf.workers} processes)" if crf else ""))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=todo, num_workers=cfg.data.num_workers,
                                         collate_fn=collate_eval, pin_memory=device.type == "cuda")
    finished = False
    try:
        for batch in loader:
            first, second = store.missing(batch["name"])
            works = net_batch(run, batch, options, maps=options.maps, write=first, crf=second)
            store.submit_net(works)
            for work in works:
                if crf is not None and work.crf is not None:
                    crf.add(work.crf)
        if crf is not None:
            crf.close()
        finished = True
    finally:
        if crf is not None and not finished:
            crf.close(discard=True)
        store.close(discard=not finished)
    return result_of(store, names, finished_before)
