"""Test helper: training logs in the format of the authors' scripts (zwyang6/MoRe ``scripts/train_voc.py`` and
``train_coco.py``: Python ``logging`` lines, an ``args: Namespace(...)`` line, loss lines every ``log_iters`` and a
texttable of the validation every ``eval_iters``), written from numbers the tests choose. Nothing here is the
authors' text: the lines are rebuilt from the format their scripts print."""

from __future__ import annotations

import argparse
import datetime
import math
from dataclasses import dataclass, field

from more.data.classes import COCO_CLASSES, VOC_CLASSES

LOSSES = ("cls_loss", "cls_loss_aux", "cls_loss_mct", "ptc_loss", "cle_loss", "une_loss", "seg_loss")
OURS = {"cls_loss": "cls", "cls_loss_aux": "cls_aux", "cls_loss_mct": "mct", "ptc_loss": "ptc", "cle_loss": "cre",
        "une_loss": "ure", "seg_loss": "seg"}
COLUMNS = ("CAM", "aux_CAM", "Score Map", "Fused", "Seg_Pred", "Seg_CAM")
FIRST_WIDTH = 15  # texttable wraps the first column at this width in the authors' logs ("m-ConfutionRati" / "o")


@dataclass
class Run:
    """A run to log: the args, per iteration the losses, per validation iteration the numbers."""

    script: str
    args: dict
    classes: list[str]  # the table's class rows, background first
    losses: dict[int, dict[str, float]] = field(default_factory=dict)
    lrs: dict[int, float] = field(default_factory=dict)
    validations: dict[int, tuple[float, dict[str, list[float]]]] = field(default_factory=dict)  # column -> rows

    def table_rows(self) -> list[str]:
        return [*self.classes, "m-Precision", "m-Recall", "m-ConfutionRatio", "m-IoU"]


def voc_run(max_iters: int = 2000, log_iters: int = 200, eval_iters: int = 1000, seed: int = 0) -> Run:
    args = {"backbone": "matvit_base_patch16_224", "cam_scales": (1.0, 0.5, 0.75, 1.5), "crop_size": 448,
            "data_folder": "/data/VOC2012/", "eval_iters": eval_iters, "list_folder": "datasets/voc",
            "log_iters": log_iters, "lr": 6e-05, "max_iters": max_iters, "num_classes": 21, "seed": seed,
            "spg": 4, "train_set": "train_aug", "val_set": "val", "w_cle": 0.2, "w_une": 0.1,
            "work_dir": "w_outputs/2024-07/voc_run_01-15-02-44"}
    return _fill(Run("train_voc.py", args, ["_background_", *VOC_CLASSES]), seed)


def coco_run(max_iters: int = 2000, log_iters: int = 200, eval_iters: int = 1000, seed: int = 1) -> Run:
    args = {"backbone": "matvit_base_patch16_224", "begin_val": 0, "cam_scales": [1.0, 0.5, 0.75, 1.25, 1.5],
            "data_folder": "/data/MSCOCO/", "eval_iters": eval_iters, "list_folder": "datasets/coco",
            "log_iters": log_iters, "max_iters": max_iters, "num_classes": 81, "seed": seed, "spg": 4,
            "train_set": "train", "val_set": "val_part", "work_dir": "w_outputs/coco/2024-08/run_08-04-44-12"}
    return _fill(Run("train_coco.py", args, ["_background_", *COCO_CLASSES]), seed)


def _fill(run: Run, seed: int) -> Run:
    """Deterministic, distinct numbers (as the scripts print them: %.4f losses, %.3f table cells)."""
    k = seed + 1
    for step in range(run.args["log_iters"], run.args["max_iters"] + 1, run.args["log_iters"]):
        run.losses[step] = {name: round(0.1 * (i + 1) + k * 1e-3 + step * 1e-6, 4) for i, name in enumerate(LOSSES)}
        run.lrs[step] = float(f"{6e-5 * (1 - step / run.args['max_iters']) ** 0.9 + 1e-9:.3e}")
    for step in range(run.args["eval_iters"], run.args["max_iters"] + 1, run.args["eval_iters"]):
        columns = {}
        for j, column in enumerate(COLUMNS):
            cells = [round(20.0 + (i * 7 + j * 3 + step // 100 + k) % 60 + 0.125, 3) for i in range(len(run.classes))]
            cells[3] = 0.0  # printed "0", as texttable prints a whole number
            mean = sum(cells) / len(cells) + j  # distinct per column, so a column mix-up shows
            run_means = [round(mean + 5.0, 3), round(mean + 15.0, 3), round(0.5 + j / 10, 3), round(mean, 3)]
            columns[column] = cells + run_means
        run.validations[step] = (round(0.8 + step / 1e5 + k * 1e-3, 6), columns)
    return run


def _cell(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return "0" if value == 0 else f"{value:.3f}"


def table(run: Run, step: int) -> list[str]:
    """The texttable of one validation, the first column wrapped at 15 characters."""
    _, columns = run.validations[step]
    header = ["Class", *COLUMNS]
    body = [[name, *(_cell(columns[c][i]) for c in COLUMNS)] for i, name in enumerate(run.table_rows())]
    widths = [FIRST_WIDTH] + [max(len(h), *(len(r[i + 1]) for r in body)) for i, h in enumerate(COLUMNS)]

    def rule(char: str) -> str:
        return "+" + "+".join(char * (w + 2) for w in widths) + "+"

    def lines(cells: list[str], centred: bool) -> list[str]:
        first = [cells[0][i:i + FIRST_WIDTH] for i in range(0, len(cells[0]), FIRST_WIDTH)]
        out = []
        for n, piece in enumerate(first):
            row = [piece] + [c if n == 0 else "" for c in cells[1:]]
            out.append("| " + " | ".join((c.center(w) if centred else c.ljust(w)) for c, w in zip(row, widths))
                       + " |")
        return out

    text = [rule("-"), *lines(header, True), rule("=")]
    for row in body:
        text += [*lines(row, False), rule("-")]
    return text


def render(run: Run, *, start: datetime.datetime | None = None, iter_seconds: float = 1.0) -> str:
    """The whole log as the script writes it."""
    t0 = start or datetime.datetime(2024, 7, 1, 15, 2, 44, 339000)

    def stamp(seconds: float) -> str:
        t = t0 + datetime.timedelta(seconds=seconds)
        return t.strftime("%Y-%m-%d %H:%M:%S") + f",{t.microsecond // 1000:03d}"

    def line(seconds: float, message: str) -> str:
        return f"{stamp(seconds)} - {run.script} - INFO: {message}"

    out = [line(0, "Pytorch version: 1.13.1"), line(0, "GPU type: NVIDIA GeForce RTX 3090"), line(0, ""),
           f"args: {argparse.Namespace(**run.args)!r}",
           line(0, f"Total gpus: 1, samples per gpu: {run.args['spg']}..."), line(1, ""), "Optimizer: ",
           "PolyWarmupAdamW (", "Parameter Group 0", "    lr: 6e-05", ")"]
    for step in sorted(set(run.losses) | set(run.validations)):
        t = step * iter_seconds
        if step in run.losses:
            v = run.losses[step]
            out.append(line(t, f"Iter: {step}; Elasped: 0:00:{step % 60:02d}; ETA: 1:00:00; LR: {run.lrs[step]:.3e}; "
                               f"cls_loss: {v['cls_loss']:.4f}, cls_loss_aux: {v['cls_loss_aux']:.4f}, "
                               f"cls_loss_mct: {v['cls_loss_mct']:.4f}, ptc_loss: {v['ptc_loss']:.4f},  "
                               f"cle_loss: {v['cle_loss']:.4f}, une_loss: {v['une_loss']:.4f}, "
                               f"seg_loss: {v['seg_loss']:.4f}..."))
        if run.script == "train_coco.py" and step % 1000 == 0:
            out.append(line(t, f"Saving_{step}_cpt..."))
        if step in run.validations:
            score, _ = run.validations[step]
            out += [line(t + 1, "Validating..."), line(t + 30, f"val cls score: {score:.6f}"), line(t + 30, ""),
                    *table(run, step)]
    return "\n".join(out) + "\n"
