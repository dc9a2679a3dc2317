"""Helpers of the inference tests (made importable by ``tests/eval/conftest.py``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tiny_config import TINY

INFER = [*TINY, "runtime.device=cpu", "eval.batch_size=2", "eval.crf_workers=1"]


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_outputs(a: Path, b: Path, folders: tuple[str, ...]) -> None:
    """The PNG / npz folders of two inference outputs hold the same files with the same bytes."""
    for folder in folders:
        left, right = tree_digest(a / folder), tree_digest(b / folder)
        assert left, f"{a / folder} is empty"
        assert left == right, f"{folder}: {sorted(k for k in set(left) | set(right) if left.get(k) != right.get(k))}"


def journal(out: Path) -> list[dict]:
    """The parsed lines of ``out/done.jsonl`` (every line must parse)."""
    return [json.loads(line) for line in (out / "done.jsonl").read_text().splitlines()]


def leftovers(out: Path) -> list[Path]:
    """Temporary files a write left behind."""
    return [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp_")]
