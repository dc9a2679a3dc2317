"""The search tests' tiny config (tests/tiny_config.py on the CPU) and a randomly initialised vit_micro checkpoint."""

from __future__ import annotations

import pytest
import torch
from tiny_config import TINY as SHARED_TINY

from more.config import load_config

TINY = [*SHARED_TINY, "runtime.device=cpu", "eval.infer_cam_scales=[1.0]"]


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
