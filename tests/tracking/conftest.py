"""Fixtures for the tracking tests: a tiny synthetic dataset and config (as in tests/train), and sqlite MLflow stores
copied from one migrated template database (MLflow's migrations take ~15 s on the 2-core test machines)."""

from __future__ import annotations

import shutil

import pytest

from more.config import load_config

TINY = [
    "data.synth_classes=3", "data.synth_train=16", "data.synth_val=6", "data.synth_image_size=64",
    "data.crop_size=64", "eval.resize=64", "eval.batch_size=6", "model.variant=vit_micro", "train.batch_size=4",
    "train.max_iters=6", "train.eval_every=3", "train.ckpt_every=3", "train.log_every=1", "train.keep_ckpts=5",
    "pseudo.cam_scales=[1.0, 0.5]", "lir.ure_kernel=2", "lir.ure_num_tokens=4", "loss.seg_start=1",
    "pseudo.mask_switch_iter=3", "optim.warmup_iters=2", "data.num_workers=0", "runtime.num_threads=1",
    "eval.num_vis=2",
]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    from more.data import ensure_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    ensure_dataset(load_config("synthetic", [*TINY, f"data.root={root}"]), progress=lambda *_: None)
    return root


@pytest.fixture
def make_store(template_db, tmp_path_factory):
    """``make_store()`` -> the URI of a fresh sqlite store (artifacts in ``<folder>/artifacts``)."""

    def make() -> str:
        folder = tmp_path_factory.mktemp("mlflow")
        shutil.copyfile(template_db, folder / "mlflow.db")
        return f"sqlite:///{folder / 'mlflow.db'}"

    return make
