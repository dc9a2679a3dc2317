"""A tiny synthetic dataset and a randomly initialised vit_micro checkpoint for the search tests."""

from __future__ import annotations

import pytest
import torch

from more.config import load_config

TINY = [
    "data.synth_classes=3", "data.synth_train=12", "data.synth_val=4", "data.synth_image_size=64",
    "data.crop_size=64", "eval.resize=64", "eval.batch_size=6", "model.variant=vit_micro", "train.batch_size=4",
    "train.max_iters=6", "train.eval_every=3", "train.ckpt_every=3", "train.log_every=1", "train.keep_ckpts=5",
    "pseudo.cam_scales=[1.0, 0.5]", "lir.ure_kernel=2", "lir.ure_num_tokens=4", "loss.seg_start=1",
    "pseudo.mask_switch_iter=3", "optim.warmup_iters=2", "data.num_workers=0", "runtime.num_threads=1",
    "runtime.device=cpu", "eval.infer_cam_scales=[1.0]",
]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    from more.data import ensure_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    ensure_dataset(load_config("synthetic", [*TINY, f"data.root={root}"]), progress=lambda *_: None)
    return root


@pytest.fixture(scope="session")
def checkpoint(tiny_root, tmp_path_factory):
    """A checkpoint folder of a randomly initialised vit_micro MoRe on the tiny synthetic set."""
    from more.model import build_model
    from more.train.checkpoint import save_checkpoint

    cfg = load_config("synthetic", [*TINY, f"data.root={tiny_root}"])
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "run", iteration=6, model=model, optimizer=opt,
                           data_state={"epoch": 0, "position": 0}, cfg=cfg, keep=1)
