"""The MoRe training loop: one explicit loop, no framework (MORE_SPEC §3, §4).

``train(cfg, report=...)`` never imports ray or mlflow: the harness passes a ``report(metrics, checkpoint_dir)``
callable. Losses stay on the device and are read every ``train.log_every`` steps (no per-step host sync); a
non-finite loss is caught at the next read, before any checkpoint is written, and raises
:class:`TrainingDiverged` naming the first bad step and term.

Under ``torch.distributed`` with several processes (see :mod:`more.train.distributed`) the same loop trains with
DistributedDataParallel: each process takes its own shard of every global batch (``train.batch_size`` per
process), only rank 0 evaluates, writes the run folder and calls ``report``, every process resumes from the same
checkpoint, and a non-finite loss on any process stops all of them at the same read point.

With ``train.accum_steps`` > 1 every optimizer step runs that many micro-steps of ``train.batch_size`` images, each
loss divided by ``accum_steps`` (under DDP only the last one's backward synchronises the processes): the update of the
global batch ``processes x train.batch_size x train.accum_steps``, bit for bit DDP's on the same shards
(``more.train.data_order``; ``tests/train/test_accumulation.py``).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from more.config import MoReConfig, dump_yaml
from more.config.batch import global_batch, global_batch_text
from more.data import build_eval_dataset, build_train_dataset, collate_eval, ensure_dataset
from more.eval.evaluate import evaluate
from more.model import build_model
from more.outputs import DiskFullError, on_disk_full, own_dir, space_warning
from more.provenance import git_sha
from more.pseudo.par import PAR
from more.train.checkpoint import (
    CheckpointError,
    estimate_checkpoint_bytes,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
    set_rng_state,
)
from more.train.data_order import _mix, iterate_batches
from more.train.distributed import barrier, dist_info, first_bad_across, mean_across, process_device, wrap_ddp
from more.train.optim import PolyWarmupAdamW
from more.train.progress import Progress
from more.train.run_files import (
    append_jsonl,
    checkpoint_disk_full,
    keep_records_until,
    space_needed,
    write_json,
    write_text,
)
from more.train.step import TERMS, training_step
from more.train.validation import eval_metrics, full_validation, training_val_split

Report = Callable[[dict[str, float], "str | None"], None]


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite; the message names the first bad step and term."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        from more.input_checks import check_device

        check_device(name)  # one line naming runtime.device (exit 2), not torch's error at the first .to(device)
    return torch.device(name)


def use_autocast(cfg: MoReConfig, device: torch.device) -> bool:
    return cfg.train.amp == "bf16" or (cfg.train.amp == "auto" and device.type == "cuda")


def seed_everything(seed: int, *, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


# Files every run folder holds from its start: a folder with all of them was made by ``train`` (also before run
# folders carried the marker of more.outputs), so a run may write there again.
RUN_FILES = ("config.yaml", "git.txt", "metrics.jsonl")


def default_run_dir(cfg: MoReConfig) -> Path:
    name = cfg.runtime.run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.runtime.out_dir) / name


def _datasets(cfg: MoReConfig, *, val_split: str, main: bool, world_size: int) -> tuple[Dataset, Dataset | None]:
    """The training split and (on the main process) the split validated during training (``val_split``).

    The commands check both before any work (:mod:`more.input_checks`); what only the build can find (images without
    a class skipped, a global batch larger than the split, a harness trial on a node that lacks the files) is one line
    naming the split, not a traceback."""
    from more.input_checks import DataInputError

    try:
        train_set = build_train_dataset(cfg)
        val_set = build_eval_dataset(cfg, val_split) if main else None
    except (FileNotFoundError, ValueError) as exc:  # read_split, image_labels and read_labels_file name the file
        raise DataInputError(" ".join(str(exc).split())) from exc
    if len(train_set) < global_batch(cfg, world_size):
        raise DataInputError(f"data.train_split={cfg.data.train_split!r}: {len(train_set)} training image(s) with a "
                             f"class, fewer than one global batch of {global_batch_text(cfg, world_size)}")
    return train_set, val_set


def train(
    cfg: MoReConfig,
    *,
    report: Report | None = None,
    resume: str | None = None,
    run_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Train MoRe and return the last evaluation's metrics (plus ``iter``).

    Args:
        cfg: a validated config.
        report: called as ``report(metrics, checkpoint_dir)`` after every evaluation.
        resume: a checkpoint file/folder, or a run folder (its newest checkpoint), to continue from exactly.
        run_dir: where to write config.yaml, git.txt, metrics.jsonl, evals and checkpoints.
        log: where plain progress lines go (default: the progress display).

    Under ``torch.distributed`` every process calls ``train`` with the same arguments; ``report`` and ``log`` are
    used on rank 0 only, and the other processes return their own last training losses.
    """
    from more.data import class_names as dataset_class_names
    from more.eval.metrics import absent_note, format_table

    ddp = dist_info()
    device = resolve_device(cfg.runtime.device)
    if ddp.enabled:
        device = process_device(device)
    if cfg.runtime.num_threads:
        torch.set_num_threads(cfg.runtime.num_threads)
    seed_everything(cfg.train.seed, deterministic=cfg.train.deterministic)
    autocast = use_autocast(cfg, device)

    run_path = Path(run_dir) if run_dir else default_run_dir(cfg)
    metrics_file = run_path / "metrics.jsonl"
    if ddp.is_main:
        ensure_dataset(cfg)
    if ddp.enabled:
        barrier()  # rank 0 generates a missing synthetic set; the others then only check it
        if not ddp.is_main:
            ensure_dataset(cfg)
    val_split, val_note = training_val_split(cfg)
    train_set, val_set = _datasets(cfg, val_split=val_split, main=ddp.is_main, world_size=ddp.world_size)
    val_loader = torch.utils.data.DataLoader(
        val_set,
        batch_size=cfg.eval.batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_eval,
    ) if val_set is not None else None
    names = dataset_class_names(cfg)

    model = build_model(cfg).to(device)
    model.train()
    par = PAR(dilations=cfg.pseudo.par_dilations, num_iter=cfg.pseudo.par_iters).to(device)
    groups = model.param_groups(
        lr=cfg.optim.lr, head_lr_mult=cfg.optim.head_lr_mult, weight_decay=cfg.optim.weight_decay
    )
    optimizer = PolyWarmupAdamW(groups, cfg=cfg.optim, max_iters=cfg.train.max_iters)

    start, epoch, position = 0, 0, 0
    if resume:
        payload = load_checkpoint(resume, map_location=device)
        load_model_weights(model, payload)
        try:
            optimizer.load_state_dict(payload["optimizer"])
            start = int(payload["iteration"])
            epoch, position = int(payload["data"]["epoch"]), int(payload["data"]["position"])
            set_rng_state(payload["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{payload['path']} does not fit this run (optimizer, data order or random "
                                  f"state): {type(exc).__name__}: {exc}") from None
    ckpt_bytes = estimate_checkpoint_bytes(model, optimizer)
    if ddp.is_main:  # only now: data, labels, weights, optimizer and the resumed checkpoint all fit
        with on_disk_full(run_path, what="the run folder's first files"):
            own_dir(run_path, command="train")
        write_text(run_path / "config.yaml", dump_yaml(cfg))
        write_text(run_path / "git.txt", git_sha() + "\n")
        if resume:
            keep_records_until(metrics_file, start)
    # wrapped after loading, so every process starts from the same weights (DDP also broadcasts rank 0's)
    train_model = wrap_ddp(model, device) if ddp.enabled else model
    step_model = torch.compile(train_model) if cfg.train.compile else train_model

    total_iters = cfg.train.max_iters
    progress = Progress(total_iters, desc=cfg.name, start=start)
    say = (log or progress.line) if ddp.is_main else (lambda _: None)
    need, needed_for = space_needed(cfg, checkpoint_bytes=ckpt_bytes, start=start, num_classes=len(names) - 1,
                                    existing=len(list_checkpoints(run_path)))
    warning = space_warning(run_path, need, needed_for) if ddp.is_main else None
    if warning:
        say(f"warning: {warning}")
    say(
        f"run dir {run_path} | device {device} | autocast {'bf16' if autocast else 'off'} | "
        f"{len(train_set)} train / {len(val_set) if val_set is not None else 0} val images, validating on "
        f"{val_note} | "
        f"iterations {start}->{total_iters}"
        + (f" | {ddp.world_size} DDP processes x {cfg.train.batch_size} images" if ddp.enabled else "")
        + f" | global batch {global_batch_text(cfg, ddp.world_size)}"
    )

    accum = cfg.train.accum_steps
    batches = iterate_batches(
        train_set,
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
        num_workers=cfg.data.num_workers,
        start_epoch=epoch,
        start_position=position,
        pin_memory=device.type == "cuda",
        rank=ddp.rank,
        world_size=ddp.world_size,
        accum_steps=accum,
    )
    images_per_step = global_batch(cfg, ddp.world_size)
    sums = torch.zeros(len(TERMS) + 1, device=device)  # running sums of unweighted terms + total
    first_bad = torch.full((len(TERMS) + 1,), -1, dtype=torch.long, device=device)
    window_steps, window_t0 = 0, time.perf_counter()
    last: dict[str, float] = {"iter": float(start)}
    sec_per_iter = float("nan")

    def check_finite(n_done: int) -> None:
        # every process reaches the same read points, so a NaN on any one of them stops all of them here
        bad = (first_bad_across(first_bad) if ddp.enabled else first_bad).tolist()
        if any(b >= 0 for b in bad):
            labels = [*TERMS, "total"]
            step, term = min((b, labels[i]) for i, b in enumerate(bad) if b >= 0)
            raise TrainingDiverged(
                f"loss term '{term}' became non-finite at step {step} (0-based iteration); stopped at {n_done}. "
                f"The last good checkpoint in {run_path / 'checkpoints'} is intact."
            )

    for n in range(start, total_iters):
        optimizer.zero_grad(set_to_none=True)
        for k in range(accum):
            # L_ure's draws: every shard draws the step's whole global batch from the same seed and keeps its rows
            gen = torch.Generator(device=device).manual_seed(_mix(cfg.train.seed, n, 0x0E5E))
            epoch, position, batch = next(batches)
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            shard = (k * ddp.world_size + ddp.rank) * cfg.train.batch_size
            out = training_step(step_model, par, images, labels, cfg=cfg, n=n, generator=gen, autocast=autocast,
                                share=(shard, images_per_step))
            # DDP averages gradients over processes and 1/accum averages over micro-steps: the gradient of the
            # mean of the shards' losses. Only the last micro-step's backward synchronises the processes.
            with train_model.no_sync() if ddp.enabled and k < accum - 1 else contextlib.nullcontext():
                (out.total / accum if accum > 1 else out.total).backward()
            values = torch.stack([out.unweighted[t].float() for t in TERMS] + [out.total.detach().float()])
            finite = torch.isfinite(values)
            first_bad = torch.where(~finite & (first_bad < 0), torch.full_like(first_bad, n), first_bad)
            sums += torch.where(finite, values, torch.zeros_like(values)) / accum
        optimizer.step()
        window_steps += 1
        done = n + 1
        progress.update(done, f"loss {last.get('train/loss', float('nan')):.4f}")

        is_last = done == total_iters
        if done % cfg.train.log_every == 0 or is_last:
            check_finite(done)
            elapsed = time.perf_counter() - window_t0
            sec_per_iter = elapsed / max(window_steps, 1)
            means = ((mean_across(sums) if ddp.enabled else sums) / max(window_steps, 1)).tolist()
            rec = {
                "iter": done,
                "train/loss": means[-1],
                **{f"train/{t}": v for t, v in zip(TERMS, means)},
                "train/lr": optimizer.param_groups[0]["lr"],
                "time/sec_per_iter": sec_per_iter,
                "time/images_per_sec": images_per_step / max(sec_per_iter, 1e-12),
            }
            if ddp.is_main:
                append_jsonl(metrics_file, rec)
            last.update(rec)
            say(
                progress.text(
                    done,
                    " ".join(
                        f"{k.split('/')[-1]} {v:.4f}"
                        for k, v in rec.items()
                        if k.startswith("train/") and k != "train/lr"
                    ),
                )
            )
            sums.zero_()
            window_steps, window_t0 = 0, time.perf_counter()

        do_eval = done % cfg.train.eval_every == 0 or is_last
        do_ckpt = do_eval or done % cfg.train.ckpt_every == 0
        if do_ckpt:
            check_finite(done)
        metrics: dict[str, float] = {}
        if do_eval and ddp.is_main:
            t0 = time.perf_counter()
            result = evaluate(model, val_loader, cfg=cfg, device=device, autocast=autocast)
            metrics = {"iter": float(done), **eval_metrics(result, names), "time/eval_sec": time.perf_counter() - t0}
            if not np.isnan(sec_per_iter):
                metrics["time/sec_per_iter"] = sec_per_iter
            if device.type == "cuda":  # this process's own GPU (rank 0's under DDP, where the reporter has none)
                metrics["sys/peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            for k in ("train/loss", *[f"train/{t}" for t in TERMS]):
                if k in last:
                    metrics[k] = last[k]
            write_text(run_path / "eval" / f"iter_{done:06d}.md", format_table(result.scores, names, split=val_split))
            # a class in neither the GT nor a prediction of a small val split makes that m-IoU NaN: say which
            note = absent_note(result.scores, names, split=val_split)
            say(
                f"eval @ {done} on {val_split}: "
                + " ".join(f"{o} {metrics[f'val/{o}/miou']:.2f}" for o in result.scores)
                + f" | cls F1 {result.cls_f1:.3f}"
                + (f" | {note}" if note else "")
            )
            if is_last and cfg.train.final_full_val:
                full, full_result = full_validation(model, cfg, validated=val_split, last=metrics, class_names=names,
                                                    device=device, autocast=autocast, log=say)
                metrics.update(full)
                if full_result is not None:
                    write_text(run_path / "eval" / f"full_iter_{done:06d}.md",
                               format_table(full_result.scores, names, split=cfg.data.val_split))
                say(f"full validation @ {done} on {cfg.data.val_split}: "
                    + " ".join(f"{o} {metrics[f'val_full/{o}/miou']:.2f}" for o in result.scores))
            append_jsonl(
                metrics_file, {k: v for k, v in metrics.items() if "/iou/" not in k and "/confusion/" not in k}
            )
            write_json(run_path / "metrics.json", metrics)
            last.update(metrics)
            window_t0 += time.perf_counter() - t0  # evaluation time is not training time
        ckpt_dir = None
        if do_ckpt and ddp.is_main:
            try:
                ckpt_dir = save_checkpoint(
                    run_path,
                    iteration=done,
                    model=model,
                    optimizer=optimizer,
                    data_state={"epoch": epoch, "position": position},
                    cfg=cfg,
                    keep=cfg.train.keep_ckpts,
                )
            except DiskFullError as exc:
                done_before = list_checkpoints(run_path)
                raise checkpoint_disk_full(exc, run_path, done_before[-1] if done_before else None) from exc
        if do_eval and report is not None and ddp.is_main:
            report(metrics, str(ckpt_dir) if ckpt_dir else None)
    if ddp.enabled:
        barrier()  # no process leaves before rank 0 has written and reported the last evaluation
    return {k: v for k, v in last.items()}
