"""Fixtures for the inference tests: a random-init vit_micro checkpoint of the tiny synthetic recipe (session-wide)
and a private copy of its dataset. ``infer_helpers.py`` is made importable here (pytest runs with
--import-mode=importlib)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from infer_helpers import INFER  # noqa: E402


@pytest.fixture(scope="session")
def infer_ckpt(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``RUN/checkpoints/iter_000007`` of a randomly initialised model on the tiny synthetic set (16 train, 6 val)."""
    import torch

    from more.config import load_config
    from more.model import build_model
    from more.train.checkpoint import save_checkpoint

    cfg = load_config("synthetic", [*INFER, f"data.root={tiny_root}"])
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return save_checkpoint(tmp_path_factory.mktemp("infer_run") / "run", iteration=7, model=model, optimizer=opt,
                           data_state={"epoch": 0, "position": 0}, cfg=cfg, keep=1)


@pytest.fixture
def data_copy(tiny_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset (pass ``data.root=<copy>``): tests that try to write into it own it."""
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    return root
