"""One ``infer`` invocation from request to files: checks before any work, the run, metrics, the archive, tracking.

:func:`plan_inference` does everything that can refuse (checkpoint, config, dataset, where the output goes, a resume
with other settings) and writes nothing; :func:`run_plan` then owns the output folder, runs the inference through an
injected ``execute`` (in this process by default; ``more.harness.infer_fanout`` over Ray) and reports to an injected
tracker (``more.tracking.infer_runs``), so this module imports neither Ray nor MLflow.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from more.eval.infer import (
    InferOptions,
    InferResult,
    LoadedRun,
    Log,
    file_sha256,
    infer_key,
    infer_settings,
    load_run,
    log_stderr,
    run_inference,
    scores_record,
    write_json_atomic,
    write_text_atomic,
)
from more.eval.infer_store import JOURNAL_FILE, RECOGNISED, check_settings, write_settings
from more.outputs import DiskFullError, check_output_dir, own_dir, space_warning


@dataclass
class InferRequest:
    """What the user asked for (the command line, or a notebook)."""

    checkpoint: str
    options: InferOptions
    overrides: list[str] = field(default_factory=list)
    split: str | None = None  # default: train for seeds/masks, eval.split for seg/cam2seg
    out: str | None = None  # default: <checkpoint folder>/<options.default_dir_name(split)>
    force: bool = False  # write into a dataset root or a folder with foreign files anyway
    archive: bool = False  # seg only: also the PASCAL VOC evaluation server's archive
    config: str | None = None  # a preset or experiment YAML instead of the run's config.yaml (authors' checkpoints)
    device_type: str | None = None  # where the network runs when not this process's device (Ray GPU workers)


@dataclass
class InferPlan:
    """A checked request: the restored run, the dataset, the output folder and the settings a resume must match."""

    request: InferRequest
    run: LoadedRun
    split: str
    out: Path
    dataset: Any  # more.data.EvalDataset
    settings: dict[str, Any]
    key: str  # infer_key(settings): the MLflow resume key
    resuming: bool  # ``out`` holds an earlier inference with the same settings

    @property
    def options(self) -> InferOptions:
        return self.request.options

    @property
    def cfg(self) -> Any:
        return self.run.cfg


class Tracker(Protocol):
    """Where an inference is reported (an MLflow run); every method must only warn on failure."""

    def start(self, plan: InferPlan) -> None: ...

    def finish(self, plan: InferPlan, result: InferResult, record: dict[str, Any]) -> None: ...

    def fail(self, plan: InferPlan, error: BaseException) -> None: ...


Execute = Callable[[InferPlan], InferResult]


def plan_inference(request: InferRequest, *, log: Log = log_stderr) -> InferPlan:
    """Restore the checkpoint and check everything the inference needs; writes nothing but a generated synthetic set.

    Raises:
        CheckpointError, ConfigError, PreflightError, OutputError (a refused output folder or a resume with other
        settings), FileNotFoundError (a split list or an image that does not exist).
    """
    from more.data import build_eval_dataset, ensure_dataset
    from more.preflight import PreflightError, config_paths

    options = request.options
    if request.archive and options.task != "seg":
        raise PreflightError(f"--archive packs segmentation for the PASCAL VOC evaluation server: it needs --task "
                             f"seg, not --task {options.task}")
    run = load_run(request.checkpoint, request.overrides, config=request.config)
    cfg = run.cfg
    split = request.split or ("train" if options.task in ("seeds", "masks") else cfg.eval.split)
    what = "--out" if request.out else "the output folder"
    out = Path(request.out).expanduser().absolute() if request.out else \
        run.checkpoint.parent / options.default_dir_name(split)
    config_paths(cfg, f"{run.checkpoint}: ", weights=False)  # the checkpoint holds every weight
    ensure_dataset(cfg, progress=log)
    check_output_dir(out, what=what, reads={"data.root": cfg.data.root}, force=request.force, recognised=RECOGNISED)
    dataset = build_eval_dataset(cfg, split)
    if options.task in ("seeds", "masks") and not dataset.labels.any():
        log(f"warning: split {split} has no image-level labels; seeds use ground-truth labels "
            f"(use --task cam2seg for a label-free prediction)")
    if request.archive and (cfg.data.dataset != "voc" or dataset.files.mask_dir is not None):
        log(f"warning: the PASCAL VOC evaluation server scores VOC2012's test split; this archive holds "
            f"{cfg.data.dataset} {split}")
    settings = infer_settings(cfg, options, split=split, names=dataset.names,
                              checkpoint_sha256=file_sha256(run.checkpoint),
                              device_type=request.device_type or run.device.type)
    resuming = check_settings(out, settings, what=what)
    return InferPlan(request=request, run=run, split=split, out=out, dataset=dataset, settings=settings,
                     key=infer_key(settings), resuming=resuming)


def replan(plan: InferPlan, device_type: str) -> InferPlan:
    """The plan for a network that runs on ``device_type`` (Ray's GPU workers): its settings and key follow
    (bf16 autocast depends on the device), and a resume is checked against them again."""
    settings = infer_settings(plan.cfg, plan.options, split=plan.split, names=plan.dataset.names,
                              checkpoint_sha256=plan.settings["checkpoint_sha256"], device_type=device_type)
    what = "--out" if plan.request.out else "the output folder"
    return dataclasses.replace(plan, settings=settings, key=infer_key(settings),
                               resuming=check_settings(plan.out, settings, what=what))


def in_process(log: Log = log_stderr) -> Execute:
    """Run a plan in this process (:func:`more.eval.infer.run_inference`)."""
    return lambda plan: run_inference(plan.run, plan.dataset, plan.options, plan.out, log=log)


def estimated_bytes(plan: InferPlan, sample: int = 16) -> int:
    """A rough size of the outputs: PNGs at ~0.1 byte per pixel, uint8 maps at ~0.5 byte per pixel and class
    (compressed), scaled from the first images' sizes."""
    from PIL import Image

    names = plan.dataset.names
    pixels = []
    for name in names[:sample]:
        with Image.open(plan.dataset.files.image_path(name)) as im:
            pixels.append(im.width * im.height)
    per_image = (sum(pixels) / max(len(pixels), 1)) * (0.1 * len(plan.options.outputs)
                                                       + (0.0 if plan.options.maps == "none" else 1.0))
    return int(per_image * len(names))


def image_sizes(dataset: Any) -> dict[str, tuple[int, int]]:
    """``{name: (W, H)}`` of a dataset's original images (headers only)."""
    from PIL import Image

    sizes = {}
    for name in dataset.names:
        with Image.open(dataset.files.image_path(name)) as im:
            sizes[name] = im.size
    return sizes


def run_plan(plan: InferPlan, *, execute: Execute | None = None, tracker: Tracker | None = None,
             log: Log = log_stderr) -> tuple[InferResult, dict[str, Any], Path | None]:
    """Own the output folder, run the inference, write ``metrics.json`` / ``metrics.md`` and the archive, report.

    Returns:
        ``(result, the metrics record, the archive's path or None)``.

    Raises:
        DiskFullError: the output's filesystem filled up (what was recorded stays; a rerun resumes).
    """
    from more.data import class_names
    from more.eval.metrics import format_table

    cfg, options = plan.cfg, plan.options
    own_dir(plan.out, command="infer")
    if not plan.resuming:
        write_settings(plan.out, plan.settings)
    warning = space_warning(plan.out, estimated_bytes(plan), f"this inference ({len(plan.dataset)} images)")
    if warning:
        log(f"warning: {warning}")
    if tracker is not None:
        tracker.start(plan)
    t0 = time.perf_counter()
    try:
        result = (execute or in_process(log))(plan)
    except DiskFullError as exc:
        if tracker is not None:
            tracker.fail(plan, exc)
        raise DiskFullError(f"{exc}; the same command resumes from the images {JOURNAL_FILE} records", path=exc.path,
                            free=exc.free, need=exc.need) from exc
    except BaseException as exc:
        if tracker is not None:
            tracker.fail(plan, exc)
        raise
    seconds = time.perf_counter() - t0
    names = class_names(cfg)
    record = {
        "checkpoint": str(plan.run.checkpoint), "iteration": plan.run.iteration, "key": plan.key,
        "task": options.task, "source": options.source if options.uses_source else None, "split": plan.split,
        "scales": options.scales(cfg), "multiscale": options.multiscale, "crf": options.crf,
        "bkg_thre": cfg.eval.bkg_thre if options.uses_source else None, "maps": options.maps,
        "num_images": result.num_images, "computed": result.computed, "seconds": seconds,
        "ground_truth": bool(result.scores),
        "outputs": {name: scores_record(s, names) for name, s in result.scores.items()},
    }
    if options.task == "cam2seg":
        record["decoder_label_images"] = result.decoder_label_images
    write_json_atomic(plan.out / "metrics.json", record)
    if result.scores:
        summary = f"{result.num_images} images ({result.computed} this run, {seconds:.1f} s) -> {plan.out}"
        write_text_atomic(plan.out / "metrics.md", f"# infer {options.task} of {plan.run.checkpoint}\n\niteration "
                          f"{plan.run.iteration} | split {plan.split} | {summary}\n\n"
                          f"{format_table(result.scores, names)}\n")
    archive = None
    if plan.request.archive:
        from more.eval.infer_archive import write_voc_archive

        archive = write_voc_archive(plan.out, options.outputs[-1], plan.dataset.names, num_classes=len(names) - 1,
                                    sizes=image_sizes(plan.dataset))
        log(f"PASCAL VOC server archive: {archive}")
    if tracker is not None:
        tracker.finish(plan, result, record)
    return result, record, archive
