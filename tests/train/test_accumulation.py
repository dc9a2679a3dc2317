"""``train.accum_steps``: 1 process x 8 images, 2 DDP processes (gloo) x 4 and 1 process x 2 micro-steps x 4 make the
same optimizer steps, on the same data order and the same random draws.

What cannot agree, and why: three loss terms pool their normaliser over the images a process holds, as the
reference defines them: L_seg (mean CE over the background / foreground pixels of the batch), PTC (its positive /
negative pair counts) and L_ure (the mean over the uncertain tokens selected in the batch). Under DDP each process
pools over its own 4 images and DDP averages the gradients, which is what the reference's COCO run (2 GPUs x 4)
computed; accumulation reproduces that exactly, micro-step by micro-step. A single batch of 8 pools over 8 images
and so is a different (not a larger-batch) update for these three terms. Every other term is a mean over images,
so all three layouts agree once these three are weighted 0, and their logged values already agree on the first
step. (``lir.cre_norm=paper`` pools L_cre the same way; the reference's per-image mean is the default.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # spawned children import accum_procs by name

from accum_procs import train_ddp  # noqa: E402

from more.train.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from more.train.trainer import train  # noqa: E402

STEPS = ("train.max_iters=3", "train.eval_every=3", "train.ckpt_every=1", "loss.seg_start=0")
POOLED = {"seg": ("loss.seg_weight=0",), "ptc": ("loss.ptc_weight=0", "loss.ptc_weight_late=0"),
          "ure": ("lir.ure_weight=0",)}
PER_IMAGE_TERMS = ("cls", "cls_aux", "mct", "cre", "energy")
LAYOUTS = {"1x8": ("train.batch_size=8",), "2x4": ("train.batch_size=4",),
           "1x2x4": ("train.batch_size=4", "train.accum_steps=2")}
# Float rounding differs between the layouts (sums over 8 vs 4 + 4 images, DDP's all-reduce), and AdamW divides
# each update by the gradient's running RMS: for parameters whose exact gradient is zero (the attention key
# biases: a softmax ignores a shift of its logits) the rounding noise becomes an update of up to ~1% of the lr
# (5e-4 here). 2e-5 covers that; the pooled terms move weights by ~1e-3.
TOLERANCE = {"rtol": 1e-4, "atol": 2e-5}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run)["model"]


def first_step_losses(run: Path) -> dict[str, float]:
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["iter"] == 1
    return {k.split("/")[1]: v for k, v in first.items() if k.startswith("train/")}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **TOLERANCE, msg=lambda m, k=k: f"{what}, {k}: {m}")


def test_accumulation_ddp_and_one_large_batch_make_the_same_update(tiny_cfg, tmp_path):
    pooled_off = [o for overrides in POOLED.values() for o in overrides]
    runs = {(terms, layout): tmp_path / f"{terms}-{layout}" for terms in ("all", "per_image") for layout in LAYOUTS}

    def cfg(terms: str, layout: str):
        return tiny_cfg(*STEPS, *LAYOUTS[layout], *(pooled_off if terms == "per_image" else ()))

    train_ddp([(cfg(terms, "2x4"), runs[terms, "2x4"]) for terms in ("all", "per_image")])
    for (terms, layout), run in runs.items():
        if layout != "2x4":
            train(cfg(terms, layout), run_dir=run, log=lambda _: None)
    w = {key: weights(run) for key, run in runs.items()}
    after_one = load_checkpoint(list_checkpoints(runs["all", "2x4"])[0])["model"]
    assert max_difference(w["all", "2x4"], after_one) > 1e-3  # the two steps after the first did train

    # every term, as the reference computes it: accumulation gives DDP's update, bit for bit (DDP sums the two
    # processes' gradients divided by 2; accumulation sums the two micro-steps' gradients of loss / 2)
    for k, value in w["all", "2x4"].items():
        assert torch.equal(w["all", "1x2x4"][k], value), f"accumulation vs DDP, every term: {k}"
    # the terms that are means over images: all three layouts agree
    assert_same_weights(w["per_image", "1x2x4"], w["per_image", "1x8"], "accumulation vs one batch of 8")
    assert_same_weights(w["per_image", "2x4"], w["per_image", "1x8"], "DDP vs one batch of 8")
    # with the pooled terms on, one batch of 8 makes another update, far beyond rounding
    assert max_difference(w["all", "1x8"], w["all", "2x4"]) > 50 * TOLERANCE["atol"]

    # the first logged step (same initial weights) names the terms: the per-image ones agree in all three layouts,
    # the pooled ones agree between the two sharded layouts and differ for the batch of 8
    losses = {layout: first_step_losses(runs["all", layout]) for layout in LAYOUTS}
    for term in PER_IMAGE_TERMS:
        assert losses["1x8"][term] == pytest.approx(losses["2x4"][term], rel=1e-5), term
        assert losses["1x2x4"][term] == pytest.approx(losses["2x4"][term], rel=1e-5), term
    for term in POOLED:
        assert losses["1x2x4"][term] == pytest.approx(losses["2x4"][term], rel=1e-6), term
        assert losses["1x8"][term] != pytest.approx(losses["2x4"][term], rel=1e-4), term
