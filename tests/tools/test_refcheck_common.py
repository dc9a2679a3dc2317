"""tools/refcheck/common.py: the comparison rows, the table and the reference loader's input checks."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tools/ is not installed

from tools.refcheck.common import ReferenceUnavailable, Row, approx, compare, exact, load_reference, render  # noqa: E402


def test_compare_reports_worst_leaf_and_equality() -> None:
    row = compare("x", (torch.tensor([1.0, 2.0]), [np.array([3.0])]), (torch.tensor([1.0, 2.5]), [np.array([3.0])]),
                  atol=0.1, rtol=0.0)
    assert not row.equal and row.failing
    assert row.max_abs == pytest.approx(0.5)
    assert row.rel == pytest.approx(0.5 / 3.0)  # against the largest reference magnitude over the float leaves
    assert compare("y", torch.tensor([1.0]), torch.tensor([1.05]), atol=0.1, rtol=0.0).equal


def test_compare_nan_inf_shapes_and_labels() -> None:
    same = compare("nan", torch.tensor([math.nan, math.inf]), torch.tensor([math.nan, math.inf]), atol=0, rtol=0)
    assert same.equal and same.max_abs == 0.0
    assert not compare("nan vs 1", torch.tensor([math.nan]), torch.tensor([1.0]), atol=0, rtol=0).equal
    shape = compare("shape", torch.zeros(2), torch.zeros(3), atol=0, rtol=0)
    assert not shape.equal and math.isinf(shape.max_abs) and "shape" in shape.note
    labels = exact("labels", torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 5]))
    assert labels.rel == pytest.approx(0.25)  # integer outputs: fraction of differing elements
    assert not compare("structure", [torch.zeros(1)], [torch.zeros(1), torch.zeros(1)], atol=0, rtol=0).equal


def test_approx_scales_atol_by_reference_magnitude() -> None:
    ref = torch.tensor([1000.0, 0.0])
    assert approx("a", ref + torch.tensor([0.0, 0.05]), ref, tol=1e-4).equal  # 0.05 <= 1e-4 * 1000
    assert not approx("b", ref + torch.tensor([0.0, 0.2]), ref, tol=1e-4).equal


def test_render_marks_deliberate_and_counts() -> None:
    rows = [Row("ok", 0.0, 0.0, True), Row("known", 1.0, 0.1, False, "a reason", deliberate=True),
            Row("bad", 2.0, 0.2, False, "why")]
    table = render(rows)
    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    assert header == ["component", "max abs err", "rel err", "equal/differs", "documented deliberate difference"]
    assert "a reason" in table and "bad (why)" in table and "DIFFERS" in table
    assert table.rstrip().endswith("3 rows: 1 equal, 1 documented deliberate, 1 undocumented differences")
    assert [r.failing for r in rows] == [False, False, True]


def test_load_reference_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ReferenceUnavailable, match="not found"):
        with load_reference(tmp_path / "nowhere"):
            pass
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "GCA.py").write_text("")
    with pytest.raises(ReferenceUnavailable, match=r"lacks: .*model_mal\.py"):
        with load_reference(tmp_path):
            pass
    assert "model" not in sys.modules or not str(getattr(sys.modules["model"], "__file__", "")).startswith(
        str(tmp_path))
