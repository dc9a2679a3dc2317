"""The tiny config of the trainer tests (``tiny_config.TINY`` on the session's ``tiny_root`` dataset)."""

from __future__ import annotations

import pytest
from tiny_config import TINY

from more.config import load_config


@pytest.fixture
def tiny_cfg(tiny_root, tmp_path):
    def make(*extra: str):
        return load_config(
            "synthetic", [*TINY, f"data.root={tiny_root}", f"runtime.out_dir={tmp_path / 'runs'}", *extra]
        )

    return make
