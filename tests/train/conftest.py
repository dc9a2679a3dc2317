"""A tiny synthetic dataset and config shared by the trainer tests (generated once per session)."""

from __future__ import annotations

import pytest

from more.config import load_config

TINY = [
    "data.synth_classes=3",
    "data.synth_train=16",
    "data.synth_val=6",
    "data.synth_image_size=64",
    "data.crop_size=64",
    "eval.resize=64",
    "eval.batch_size=6",
    "model.variant=vit_micro",
    "train.batch_size=4",
    "train.max_iters=6",
    "train.eval_every=3",
    "train.ckpt_every=3",
    "train.log_every=1",
    "train.keep_ckpts=5",
    "pseudo.cam_scales=[1.0, 0.5]",
    "lir.ure_kernel=2",
    "lir.ure_num_tokens=4",
    "loss.seg_start=1",
    "pseudo.mask_switch_iter=3",
    "optim.warmup_iters=2",
    "data.num_workers=0",
    "runtime.num_threads=1",
]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    from more.data import ensure_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    ensure_dataset(load_config("synthetic", [*TINY, f"data.root={root}"]), progress=lambda *_: None)
    return root


@pytest.fixture
def tiny_cfg(tiny_root, tmp_path):
    def make(*extra: str):
        return load_config(
            "synthetic", [*TINY, f"data.root={tiny_root}", f"runtime.out_dir={tmp_path / 'runs'}", *extra]
        )

    return make
