"""The report's figures for grids of every size: a small grid keeps its one-number-per-bar layout; hundreds of
conditions give a dense figure a screen holds (at most ``MAX_WIDTH_IN`` inches wide) instead of one tens of thousands
of pixels wide (a 1,005-trial sensitivity grid drew a 69,069-pixel Table 3 and a 42,663-pixel Table 4)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from more.report.charts import BarChart, BarItem, BarPanel, HeatMap
from more.report.figures import DENSE_BARS, DENSE_LINES, MAX_WIDTH_IN, bar_png, heatmap_png

DPI = 110


def size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def chart(bars: int, panels: int = 3) -> BarChart:
    items = [BarItem(f"cond (w={i / 100:g})", values=[40.0 + i % 7, 42.0 + i % 5, 41.0]) for i in range(bars)]
    return BarChart("Table 3", "mIoU (%)", [BarPanel(f"metric {p}", items) for p in range(panels)])


def heat(rows: int, columns: int) -> HeatMap:
    return HeatMap("Table 4", [f"class {r}" for r in range(rows)], [f"cond {c}" for c in range(columns)],
                   [[float((r * c) % 100) for c in range(columns)] for r in range(rows)])


def test_a_small_grid_keeps_three_panels_side_by_side():
    width, height = size(bar_png(chart(5)))
    assert width == round((max(3.4, 0.62 * 5 + 1.4) * 3 + 0.6) * DPI)  # 14.1 in: three 4.5 in panels
    assert height == round((3.5 + 1.3) * DPI)


@pytest.mark.parametrize("bars", [DENSE_BARS + 1, 400])
def test_a_big_grid_stacks_its_panels_within_the_widest_figure(bars):
    width, height = size(bar_png(chart(bars)))
    assert width <= (MAX_WIDTH_IN + 0.6) * DPI
    assert width == round((min(MAX_WIDTH_IN, 0.1 * bars + 1.4) + 0.6) * DPI)
    assert height > 3 * 3.5 * DPI  # three panels, one under the other


def test_the_last_grid_drawn_as_before_is_the_dense_threshold():
    assert size(bar_png(chart(DENSE_BARS, panels=1)))[0] == round((0.62 * DENSE_BARS + 1.4 + 0.6) * DPI)
    assert size(bar_png(chart(DENSE_BARS + 1, panels=1)))[0] == round((0.1 * (DENSE_BARS + 1) + 1.4 + 0.6) * DPI)


def test_a_heat_map_of_a_few_conditions_is_unchanged():
    width, height = size(heatmap_png(heat(21, 5)))
    assert width == round(max(4.0, 1.15 * 5 + 2.6) * DPI) and height == round((0.3 * 21 + 1.9) * DPI)


@pytest.mark.parametrize(("rows", "columns"), [(21, DENSE_LINES + 1), (81, 335), (8, 400)])
def test_a_heat_map_of_hundreds_of_conditions_fits_the_widest_figure(rows, columns):
    width, height = size(heatmap_png(heat(rows, columns)))
    assert width <= MAX_WIDTH_IN * DPI + 1
    assert height <= ((0.12 if rows > DENSE_LINES else 0.3) * rows + 1.9 + 0.06 * len(f"cond {columns - 1}")) * DPI + 1


def test_the_sweep_points_of_a_condition_share_its_colour():
    from more.report.charts import table3_chart
    from more.report.tables import Group

    groups = [Group(c, {"loss.energy_weight": w}, []) for c in ("baseline", "more") for w in (0.1, 0.2, 0.3)]
    chart3 = table3_chart(groups, output="seg", paper_rows=None, authors=[], title="Table 3")
    for panel in chart3.panels:
        assert [b.color_key for b in panel.bars] == ["baseline"] * 3 + ["more"] * 3
        assert len({b.label for b in panel.bars}) == 6
