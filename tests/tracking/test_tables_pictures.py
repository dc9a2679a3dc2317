"""Per-class tables and the picture grid: pure numpy/PIL, values computed by hand."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from more.data.classes import VOC_PALETTE
from more.tracking.pictures import COLUMNS, GAP, TITLE_H, PictureRow, blend, colorize, encode_png, heatmap, picture_grid
from more.tracking.tables import per_class_table, to_csv, to_markdown

NAMES = ["background", "boat", "plane"]


def report_metrics() -> dict[str, float]:
    return {
        "iter": 6.0, "train/loss": 1.5, "val/cls_f1": 0.5,
        "val/cam/miou": 40.0, "val/cam/confusion": 0.75,
        "val/cam/iou/background": 70.0, "val/cam/iou/boat": 30.0, "val/cam/iou/plane": 20.0,
        "val/cam/confusion/background": 0.25, "val/cam/confusion/boat": math.inf, "val/cam/confusion/plane": 1.0,
        "val/seg/miou": 50.0, "val/seg/iou/background": 80.0, "val/seg/iou/boat": 40.0, "val/seg/iou/plane": math.nan,
    }


def test_per_class_table_collects_outputs_quantities_and_mean_row():
    table = per_class_table(report_metrics(), NAMES)
    assert table.columns == ["cam/iou", "cam/confusion", "seg/iou"]
    assert table.rows == ["background", "boat", "plane", "mean"]
    assert table.values["cam/iou"] == [70.0, 30.0, 20.0, 40.0]
    assert table.values["cam/confusion"] == [0.25, math.inf, 1.0, 0.75]
    assert table.values["seg/iou"][:2] == [80.0, 40.0] and math.isnan(table.values["seg/iou"][2])
    assert table.values["seg/iou"][3] == 50.0


def test_per_class_csv_and_markdown_text():
    table = per_class_table(report_metrics(), NAMES)
    assert to_csv(table) == (
        "class,cam/iou,cam/confusion,seg/iou\n"
        "background,70.0,0.25,80.0\n"
        "boat,30.0,inf,40.0\n"
        "plane,20.0,1.0,nan\n"
        "mean,40.0,0.75,50.0\n"
    )
    md = to_markdown(table, title="t")
    assert md.splitlines()[:5] == ["## t", "", "| class | cam/iou | cam/confusion | seg/iou |", "|---|---|---|---|",
                                   "| background | 70.00 | 0.25 | 80.00 |"]
    assert "| **mean** | 40.00 | 0.75 | 50.00 |" in md


def test_missing_class_is_an_empty_cell_and_unknown_keys_are_ignored():
    metrics = {"val/cam/iou/background": 1.0, "val/cam/iou/ghost": 9.0, "train/cam/iou/boat": 3.0}
    table = per_class_table(metrics, NAMES)
    assert table.columns == ["cam/iou"]
    assert to_csv(table).splitlines()[1:] == ["background,1.0", "boat,", "plane,", "mean,"]


def test_report_reads_the_confusion_columns_back():
    reader = pytest.importorskip("more.report.mlflow_reader")
    parsed = reader.parse_per_class_csv(to_csv(per_class_table(report_metrics(), NAMES)))
    assert parsed["cam"]["background"] == 0.25 and parsed["cam"]["plane"] == 1.0 and parsed["cam"]["boat"] == math.inf


def test_colorize_uses_the_voc_palette():
    mask = np.array([[0, 1], [2, 255]])
    rgb = colorize(mask)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 1].tolist() == [128, 0, 0]
    assert rgb[1, 0].tolist() == [0, 128, 0] and rgb[1, 1].tolist() == [224, 224, 192]


def test_heatmap_anchor_and_interpolated_colours():
    rgb = heatmap(np.array([[0.0, 1.0, 0.5, np.nan, 2.0]]))
    assert rgb[0, 0].tolist() == [0, 0, 160] and rgb[0, 1].tolist() == [200, 0, 0]
    # 0.5 lies 0.5 of the way from the cyan anchor (0.35) to the yellow one (0.65): (127.5, 215, 127.5) rounded
    assert rgb[0, 2].tolist() == [128, 215, 128]
    assert rgb[0, 3].tolist() == [0, 0, 160] and rgb[0, 4].tolist() == [200, 0, 0]  # NaN -> 0, clipped above 1


def test_blend_is_the_weighted_mean():
    out = blend(np.full((1, 1, 3), 100, np.uint8), np.full((1, 1, 3), 201, np.uint8), alpha=0.5)
    assert out[0, 0].tolist() == [150, 150, 150]  # 150.5 rounds half to even


def test_picture_grid_layout_and_png_round_trip():
    h, w, tile = 8, 8, 16
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 1] = 90
    gt = np.full((h, w), 2)
    gt[0, 0] = 255
    row = PictureRow(image=image, gt=gt, cam=np.ones((h, w)), lam=np.zeros((h, w)), seg=np.ones((h, w), int), name="a")
    grid = picture_grid([row, row], tile=tile)
    assert grid.shape == (TITLE_H + 2 * tile + GAP, len(COLUMNS) * tile + (len(COLUMNS) - 1) * GAP, 3)
    top = TITLE_H + tile + GAP  # second row
    col = lambda c: c * (tile + GAP)  # noqa: E731
    assert grid[top + 5, col(0) + 5].tolist() == [0, 90, 0]  # image
    assert grid[top + 5, col(1) + 5].tolist() == VOC_PALETTE[2].tolist()  # GT class 2
    assert grid[top, col(1)].tolist() == VOC_PALETTE[255].tolist()  # the ignore pixel, nearest-resized
    assert grid[top + 5, col(2) + 5].tolist() == [100, 45, 0]  # red (200, 0, 0) over (0, 90, 0), alpha 0.5
    assert grid[top + 5, col(3) + 5].tolist() == [0, 45, 80]  # blue (0, 0, 160) over the image
    assert grid[top + 5, col(4) + 5].tolist() == VOC_PALETTE[1].tolist()  # seg class 1
    assert grid[TITLE_H + tile, 0].tolist() == [255, 255, 255]  # the gap between rows
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(grid))))
    np.testing.assert_array_equal(decoded, grid)


def test_picture_grid_refuses_no_rows():
    with pytest.raises(ValueError, match="no rows"):
        picture_grid([])
