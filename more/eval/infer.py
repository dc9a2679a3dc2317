"""Offline inference from a checkpoint: seeds, DenseCRF pseudo masks, segmentation and cam2seg (MORE_SPEC §5.2-5.4).

The path behind the paper's Table 1 (seeds / masks on ``train``) and Table 2 (segmentation on ``val``):

* ``seeds``: CAM or LAM with GT image labels, thresholded at ``eval.bkg_thre`` -> ``OUT/seeds/*.png``; the
  float score maps of the present classes -> ``OUT/maps/*.npz`` (see :func:`save_score_maps`).
* ``masks``: seeds, then DenseCRF of ``[1 - max_c map_c, map_c...]`` -> ``OUT/masks/*.png``.
* ``seg``: multi-scale flip-summed decoder logits -> ``OUT/seg_raw/*.png``; with CRF ``OUT/seg_crf/*.png``.
* ``cam2seg``: like seeds with *predicted* labels -> ``OUT/cam2seg/*.png``; with CRF ``OUT/cam2seg_crf/*.png``.

Forwards run batched on the device; CRF runs in chunks on CPU worker processes (:func:`more.pseudo.crf.crf_map`)
in a background thread, so the device keeps working meanwhile. One confusion matrix per output is scored when
the split has ground truth. Every file is written atomically.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from more.config import MoReConfig, apply_overrides, from_dict, num_classes
from more.config.load import read_yaml
from more.data import collate_eval, write_mask
from more.eval.metrics import ConfusionMatrix, Scores, scores
from more.eval.seeds import SOURCES, predict_labels, score_maps, seed_from_maps
from more.eval.seg_infer import fuse_seg_logits, scaled_inputs, seg_logits_per_scale
from more.pseudo.crf import crf_from_scores, crf_map, default_workers, dense_crf
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


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    _atomic_write(Path(path), lambda fh: fh.write(text.encode()))


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


def save_score_maps(path: str | os.PathLike, scores_: np.ndarray, class_ids: np.ndarray) -> None:
    """Save one image's score maps of its present classes as a compressed npz, atomically.

    Args:
        path: ``OUT/maps/NAME.npz``.
        scores_: (n, H, W) normalised maps at the label size, one per present class (stored as float16).
        class_ids: (n,) class ids 1..C (mask values) of the rows.
    """
    _atomic_write(Path(path), lambda fh: np.savez_compressed(
        fh, scores=np.asarray(scores_, dtype=np.float16), classes=np.asarray(class_ids, dtype=np.int64)))


def load_score_maps(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(scores (n, H, W) float16, class ids (n,))`` as written by :func:`save_score_maps`."""
    with np.load(path, allow_pickle=False) as data:
        return data["scores"], data["classes"]


def scores_record(s: Scores, class_names: Sequence[str]) -> dict[str, Any]:
    """JSON-ready scores in the table's units (×100 except the confusion ratio); per-class values by name."""
    p = s.as_percent()
    record: dict[str, Any] = {name: float(getattr(p, name)) for name in
                              ("miou", "miou_present", "mprecision", "mrecall", "mconfusion", "pixel_acc")}
    for name in ("iou", "precision", "recall", "confusion"):
        record[name] = {cls: float(v) for cls, v in zip(class_names, getattr(p, name))}
    return record


class _Writer:
    """Writes result files on a few threads while the device works; at most ``max_pending`` writes queued."""

    def __init__(self, threads: int = 2, max_pending: int = 64) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="more-write")
        self._pending: deque[Future] = deque()
        self._lock = threading.Lock()
        self._max = max_pending

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            while self._pending and (self._pending[0].done() or len(self._pending) >= self._max):
                self._pending.popleft().result()  # re-raises a failed write
            self._pending.append(self._pool.submit(fn, *args))

    def close(self) -> None:
        with self._lock:
            while self._pending:
                self._pending.popleft().result()
        self._pool.shutdown()


# -------------------------------------------------------------------------------------------------- CRF


@dataclass
class _CrfJob:
    name: str
    args: tuple[Any, ...]
    gt: torch.Tensor  # (H, W) ground truth for the confusion matrix
    lookup: np.ndarray | None  # CRF label index -> class id (None: the index is the class id)


class _CrfStage:
    """Collects CRF jobs and runs them chunk by chunk with ``crf_map`` in a background thread (one chunk at a time).

    Chunks are bounded by count and by the bytes of their arrays, so a split never sits in memory.
    """

    def __init__(self, fn: Callable[..., np.ndarray], *, folder: Path, hist: ConfusionMatrix, writer: _Writer,
                 workers: int, total: int, log: Log, max_bytes: int = 1 << 30) -> None:
        self.fn, self.folder, self.hist, self.writer, self.log = fn, folder, hist, writer, log
        self.workers = workers if workers > 0 else default_workers()
        self.max_jobs = max(8, 8 * self.workers)
        self.max_bytes = max_bytes
        self.total = total
        self.done = 0
        self._pending: list[_CrfJob] = []
        self._bytes = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="more-crf")
        self._future: Future | None = None

    def add(self, job: _CrfJob) -> None:
        self._pending.append(job)
        self._bytes += sum(a.nbytes for a in job.args if isinstance(a, np.ndarray))
        if len(self._pending) >= self.max_jobs or self._bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        if self._future is not None:
            self._future.result()  # at most one chunk in flight; re-raises its error
        jobs, self._pending, self._bytes = self._pending, [], 0
        self._future = self._thread.submit(self._run, jobs)

    def _run(self, jobs: list[_CrfJob]) -> None:
        results = crf_map(self.fn, [job.args for job in jobs], self.workers)
        for job, index in zip(jobs, results):
            label = index if job.lookup is None else job.lookup[index]
            self.hist.update(torch.from_numpy(np.asarray(label, dtype=np.int64)), job.gt)
            self.writer.submit(write_mask, self.folder / f"{job.name}.png", np.asarray(label, dtype=np.uint8))
        self.done += len(jobs)
        self.log(f"crf {self.folder.name}: {self.done}/{self.total}")

    def close(self, *, discard: bool = False) -> None:
        """Run what is left (or drop it when ``discard``, e.g. after an error) and wait for the chunk in flight."""
        if discard:
            self._pending = []
        try:
            self.flush()
            if self._future is not None:
                self._future.result()
        finally:
            self._thread.shutdown()


def crf_kwargs(cfg: MoReConfig) -> dict[str, float]:
    """The DenseCRF settings of ``cfg.eval`` (reference ``utils/dcrf.py::DenseCRF``, MORE_SPEC §5.2)."""
    e = cfg.eval
    return {"iters": e.crf_iters, "gauss_sxy": e.crf_gauss_sxy, "gauss_compat": e.crf_gauss_compat,
            "bi_sxy": e.crf_bi_sxy, "bi_srgb": e.crf_bi_srgb, "bi_compat": e.crf_bi_compat}


# ---------------------------------------------------------------------------------------------- driver


@dataclass
class InferOptions:
    """What ``python -m more infer`` computes."""

    task: str  # seeds | masks | seg | cam2seg
    source: str = "cam"  # cam | lam (seeds, masks, cam2seg)
    multiscale: bool = False  # eval.infer_multiscale instead of eval.infer_cam_scales (seeds, masks, cam2seg)
    crf: bool = False  # masks always; seg / cam2seg with --crf; seeds with --crf = masks
    workers: int = 0  # CRF processes; 0 = eval.crf_workers (0 there = 60 % of the cores)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}: must be one of {', '.join(TASKS)}")
        if self.source not in SOURCES:
            raise ValueError(f"source={self.source!r}: must be one of {', '.join(SOURCES)}")
        if self.task == "masks":
            self.crf = True

    @property
    def outputs(self) -> tuple[str, ...]:
        """Output names = PNG folders under OUT (the first one is always written)."""
        names = _OUTPUTS[self.task]
        return names if self.crf else names[:1]

    def default_dir_name(self, split: str) -> str:
        parts = ["infer", "masks" if self.task == "seeds" and self.crf else self.task]
        if self.task != "seg":
            parts.append(self.source)
        parts.append(split)
        if self.multiscale and self.task != "seg":
            parts.append("ms")
        if self.crf and self.task in ("seg", "cam2seg"):
            parts.append("crf")
        return "_".join(parts)


@dataclass
class InferResult:
    """What one inference run produced: scores per output (empty without ground truth) and counts."""

    out_dir: Path
    num_images: int
    scores: dict[str, Scores]
    hists: dict[str, torch.Tensor] = field(default_factory=dict)
    decoder_label_images: int = 0  # cam2seg: images whose labels came from the decoder fallback


def run_inference(run: LoadedRun, dataset: torch.utils.data.Dataset, options: InferOptions, out_dir: str | os.PathLike,
                  *, log: Log = log_stderr) -> InferResult:
    """Run ``options.task`` over ``dataset`` (an eval dataset: resized images, masks, labels, originals).

    Args:
        run: the restored model and config (:func:`load_run`).
        dataset: items as :class:`more.data.EvalDataset` gives them.
        options: the task and its switches.
        out_dir: where the PNG folders (and ``maps/``) are written.
        log: progress lines.

    Returns:
        :class:`InferResult`; scores are filled for outputs whose confusion matrix received pixels.
    """
    cfg, device = run.cfg, run.device
    out = Path(out_dir)
    k = num_classes(cfg) + 1
    first = options.outputs[0]
    hists = {first: ConfusionMatrix(k, device=device)}
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False,
                                         num_workers=cfg.data.num_workers, collate_fn=collate_eval,
                                         pin_memory=device.type == "cuda")
    total = len(dataset)
    writer = _Writer()
    crf = None
    if options.crf:
        second = options.outputs[1]
        hists[second] = ConfusionMatrix(k, device="cpu")
        fn = functools.partial(dense_crf if options.task == "seg" else crf_from_scores, **crf_kwargs(cfg))
        crf = _CrfStage(fn, folder=out / second, hist=hists[second], writer=writer,
                        workers=options.workers or cfg.eval.crf_workers, total=total, log=log)
    decoder_labels = torch.zeros((), dtype=torch.long, device=device)
    progress = Progress(total, desc=f"infer {options.task}")
    every = max(1, math.ceil(len(loader) / 10))
    done, finished = 0, False
    log(f"infer {options.task}: {total} images -> {out}" + (f" (CRF on {crf.workers} processes)" if crf else ""))
    try:
        for step, batch in enumerate(loader, start=1):
            images = batch["image"].to(device, non_blocking=True)
            if options.task == "seg":
                _seg_batch(run, batch, images, out, hists[first], writer, crf)
            else:
                decoder_labels += _seed_batch(run, batch, images, options, out, hists[first], writer, crf)
            done += images.shape[0]
            progress.update(done)
            if step % every == 0 or done == total:
                progress.line(progress.text(done))
        finished = True
    finally:
        if crf is not None:
            crf.close(discard=not finished)
        writer.close()
    return InferResult(
        out_dir=out, num_images=done,
        scores={name: scores(h.hist) for name, h in hists.items() if int(h.hist.sum()) > 0},
        hists={name: h.hist.cpu() for name, h in hists.items()},
        decoder_label_images=int(decoder_labels),
    )


def _autocast(run: LoadedRun) -> torch.autocast:
    return torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.autocast)


@torch.no_grad()
def _seed_batch(run: LoadedRun, batch: dict[str, Any], images: torch.Tensor, options: InferOptions, out: Path,
                hist: ConfusionMatrix, writer: _Writer, crf: _CrfStage | None) -> torch.Tensor:
    """Seeds (GT labels) or cam2seg (predicted labels) of one batch; returns the number of decoder-labelled images."""
    cfg, model, device = run.cfg, run.model, run.device
    scales = cfg.eval.infer_multiscale if options.multiscale else cfg.eval.infer_cam_scales
    with _autocast(run):
        if options.task == "cam2seg":
            output = model(images)
            predicted = predict_labels(output.cls_logits.float(), output.seg_logits.float(),
                                       min_pixels=cfg.eval.cam2seg_min_pixels)
            labels, from_decoder = predicted.labels, predicted.from_decoder.sum()
        else:
            labels, from_decoder = batch["labels"].to(device), torch.zeros((), dtype=torch.long, device=device)
        maps = score_maps(model, images, source=options.source, scales=scales, lam_mode=cfg.model.lam)
    labels_host = labels.cpu()  # the present classes name the stored maps and the CRF channels
    folder = out / options.outputs[0]
    for i, name in enumerate(batch["name"]):
        gt = batch["mask"][i]
        seed = seed_from_maps(maps[i].float(), labels[i], size=tuple(gt.shape), bkg_thre=cfg.eval.bkg_thre)
        hist.update(seed.label, gt.to(device, non_blocking=True))
        present = torch.nonzero(labels_host[i]).flatten()  # (n,) 0-based classes, on the host
        fg = seed.scores[present.to(device)].cpu().numpy()  # (n, H, W) float32
        class_ids = (present + 1).numpy()
        writer.submit(write_mask, folder / f"{name}.png", seed.label.cpu().numpy().astype(np.uint8))
        writer.submit(save_score_maps, out / "maps" / f"{name}.npz", fg, class_ids)
        if crf is not None:
            orig = np.ascontiguousarray(batch["orig"][i].numpy())  # (H, W, 3) uint8
            lookup = np.concatenate([[0], class_ids]).astype(np.int64)  # CRF channel -> class id
            crf.add(_CrfJob(name, (orig, fg, tuple(range(len(class_ids)))), gt, lookup))
    return from_decoder


@torch.no_grad()
def _seg_batch(run: LoadedRun, batch: dict[str, Any], images: torch.Tensor, out: Path, hist: ConfusionMatrix,
               writer: _Writer, crf: _CrfStage | None) -> None:
    """Multi-scale segmentation of one batch: raw argmax PNGs, and CRF jobs on the softmax of the fused logits."""
    cfg = run.cfg
    inputs = scaled_inputs(images, batch["orig"], cfg.eval.seg_scales, mean=cfg.data.mean, std=cfg.data.std)
    with _autocast(run):
        per_scale = seg_logits_per_scale(run.model, inputs)
    for i, name in enumerate(batch["name"]):
        gt = batch["mask"][i]
        fused = fuse_seg_logits(per_scale, i, size=tuple(gt.shape))  # (C+1, H, W)
        pred = fused.argmax(dim=0)
        hist.update(pred, gt.to(run.device, non_blocking=True))
        writer.submit(write_mask, out / "seg_raw" / f"{name}.png", pred.cpu().numpy().astype(np.uint8))
        if crf is not None:
            probs = torch.softmax(fused, dim=0).cpu().numpy()  # (C+1, H, W)
            orig = np.ascontiguousarray(batch["orig"][i].numpy())
            crf.add(_CrfJob(name, (orig, probs), gt, None))
