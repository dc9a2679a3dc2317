"""The picture grid logged at every evaluation: image | GT | CAM | LAM | seg for a few fixed validation images.

Rendering (:func:`picture_grid`, :func:`colorize`, :func:`heatmap`) is plain numpy/PIL. :class:`PictureMaker`
produces the rows from a checkpoint: it keeps one copy of the model, reloads only the weights of each
evaluation's checkpoint (memory-mapped, so the optimizer state is never read) and runs
:func:`more.eval.evaluate.predict_batch` on the first ``eval.num_vis`` images of the validation split.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from more.data.classes import IGNORE_INDEX, VOC_PALETTE

COLUMNS = ("image", "GT", "CAM", "LAM", "seg")
TITLE_H = 14  # pixels of the column-title band
GAP = 2  # pixels between tiles
# Jet-like colormap anchors (value -> RGB): blue, cyan, yellow, red.
_ANCHORS = np.array([0.0, 0.35, 0.65, 1.0])
_COLORS = np.array([[0, 0, 160], [0, 200, 255], [255, 230, 0], [200, 0, 0]], dtype=np.float64)


@dataclass(frozen=True)
class PictureRow:
    """One validation image and the model's maps for it, all at the same (H, W)."""

    image: np.ndarray  # (H, W, 3) uint8
    gt: np.ndarray  # (H, W) int, 255 = ignore
    cam: np.ndarray  # (H, W) float in [0, 1]: max over the image's GT classes
    lam: np.ndarray  # (H, W) float in [0, 1]: max over the image's GT classes
    seg: np.ndarray  # (H, W) int: decoder argmax, 0 = background
    name: str = ""


def colorize(mask: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 in the PASCAL VOC palette (255 = ignore keeps its cream colour)."""
    return VOC_PALETTE[np.clip(mask.astype(np.int64), 0, 255)]


def heatmap(score: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] (clipped; NaN -> 0) -> (H, W, 3) uint8, blue (low) to red (high)."""
    s = np.clip(np.nan_to_num(score.astype(np.float64), nan=0.0), 0.0, 1.0)
    rgb = np.stack([np.interp(s, _ANCHORS, _COLORS[:, c]) for c in range(3)], axis=-1)  # (H, W, 3)
    return np.rint(rgb).astype(np.uint8)


def blend(image: np.ndarray, color: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``alpha * color + (1 - alpha) * image`` in uint8."""
    mixed = alpha * color.astype(np.float64) + (1.0 - alpha) * image.astype(np.float64)
    return np.rint(mixed).astype(np.uint8)


def _tile(array: np.ndarray, size: int, *, nearest: bool) -> np.ndarray:
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize((size, size), resample))


def row_tiles(row: PictureRow, size: int) -> list[np.ndarray]:
    """The five (size, size, 3) tiles of a row: image, GT, CAM over image, LAM over image, seg."""
    image = _tile(row.image, size, nearest=False)
    gt = colorize(np.where(row.gt == IGNORE_INDEX, IGNORE_INDEX, row.gt))
    cam = heatmap(row.cam)
    lam = heatmap(row.lam)
    return [
        image,
        _tile(gt, size, nearest=True),
        blend(image, _tile(cam, size, nearest=False)),
        blend(image, _tile(lam, size, nearest=False)),
        _tile(colorize(row.seg), size, nearest=True),
    ]


def picture_grid(rows: Sequence[PictureRow], *, tile: int = 128,
                 class_names: Sequence[str] | None = None) -> np.ndarray:
    """Stack rows of tiles under a title band into one (H, W, 3) uint8 image on a white background; with
    ``class_names`` (C+1, background first) a legend band below names the classes the GT and seg tiles show, each
    beside its colour.

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("picture_grid: no rows")
    n_cols, n_rows = len(COLUMNS), len(rows)
    width = n_cols * tile + (n_cols - 1) * GAP
    legend = _legend_lines(rows, class_names, width) if class_names else []
    height = TITLE_H + n_rows * tile + (n_rows - 1) * GAP + (GAP + len(legend) * LEGEND_H if legend else 0)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        top = TITLE_H + r * (tile + GAP)
        for c, tile_img in enumerate(row_tiles(row, tile)):
            left = c * (tile + GAP)
            canvas[top : top + tile, left : left + tile] = tile_img
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for c, title in enumerate(COLUMNS):
        draw.text((c * (tile + GAP) + 3, 1), title, fill=(0, 0, 0))
    top = TITLE_H + n_rows * tile + (n_rows - 1) * GAP + GAP
    for line, entries in enumerate(legend):
        y = top + line * LEGEND_H
        for x, index, name in entries:
            draw.rectangle((x, y + 2, x + SWATCH - 1, y + 2 + SWATCH - 1), fill=tuple(int(v) for v in
                                                                                   VOC_PALETTE[index]),
                           outline=(0, 0, 0))
            draw.text((x + SWATCH + 3, y + 1), name, fill=(0, 0, 0))
    return np.asarray(picture)


LEGEND_H = 14  # pixels of one legend line
SWATCH = 10  # side of a legend colour square


def _legend_lines(rows: Sequence[PictureRow], class_names: Sequence[str],
                  width: int) -> list[list[tuple[int, int, str]]]:
    """``(x, class index, name)`` of every class the GT or seg tiles show, laid out in lines that fit ``width``."""
    shown = sorted({int(v) for row in rows for m in (row.gt, row.seg) for v in np.unique(m)
                    if int(v) != IGNORE_INDEX and int(v) < len(class_names)})
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[list[tuple[int, int, str]]] = [[]]
    x = 3
    for index in shown:
        name = class_names[index]
        need = SWATCH + 3 + int(measure.textlength(name)) + 10
        if lines[-1] and x + need > width:
            lines.append([])
            x = 3
        lines[-1].append((x, index, name))
        x += need
    return lines if lines[0] else []


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)  # ~3x faster than the default level, ~20% larger
    return buf.getvalue()


# ------------------------------------------------------------------------------------ rows from a checkpoint


class PictureMaker:
    """Grid pictures of a run's first ``num_images`` validation images at each checkpoint.

    Args:
        cfg: the run's config (dataset, model, ``eval.num_vis``, device, autocast).
        num_images: how many images (default ``cfg.eval.num_vis``; 0 disables the pictures).
        tile: tile size in pixels.
    """

    def __init__(self, cfg: Any, *, num_images: int | None = None, tile: int = 128) -> None:
        self.cfg = cfg
        self.num_images = cfg.eval.num_vis if num_images is None else num_images
        self.tile = tile
        self._model: Any = None
        self._batch: dict[str, Any] | None = None

    @property
    def enabled(self) -> bool:
        return self.num_images > 0

    def _load_batch(self) -> dict[str, Any]:
        from more.data import build_eval_dataset, collate_eval

        dataset = build_eval_dataset(self.cfg, self.cfg.data.val_split)
        items = [dataset[i] for i in range(min(self.num_images, len(dataset)))]
        if not items:
            raise ValueError(f"no validation images in split {self.cfg.data.val_split!r} for the picture grid")
        return collate_eval(items)

    def _load_model(self, checkpoint_dir: str | os.PathLike) -> Any:
        import torch

        from more.model import build_model
        from more.train.checkpoint import CKPT_FILE
        from more.train.trainer import resolve_device

        if self._model is None:
            self._model = build_model(self.cfg, load_weights=False).to(resolve_device(self.cfg.runtime.device))
        path = Path(checkpoint_dir)
        file = path / CKPT_FILE if path.is_dir() else path
        payload = torch.load(file, map_location="cpu", weights_only=True, mmap=True)  # reads only the model's pages
        self._model.load_state_dict(payload["model"])
        return self._model.eval()

    def rows(self, checkpoint_dir: str | os.PathLike) -> list[PictureRow]:
        """Predict the fixed images with the checkpoint's weights; maps are brought to each image's size."""
        from more.eval.evaluate import columns_at, predict_batch
        from more.train.trainer import use_autocast

        model = self._load_model(checkpoint_dir)
        if self._batch is None:
            self._batch = self._load_batch()
        device = next(model.parameters()).device
        images = self._batch["image"].to(device)
        labels = self._batch["labels"].to(device)  # (B, C)
        maps = predict_batch(model, images, labels, cfg=self.cfg, autocast=use_autocast(self.cfg, device))
        out: list[PictureRow] = []
        for i, (orig, gt) in enumerate(zip(self._batch["orig"], self._batch["mask"])):
            cols = dict(columns_at(maps, [i], tuple(gt.shape[-2:])))  # the validation's maps at the image's size
            present = labels[i, :, None, None]  # (C, 1, 1)
            out.append(PictureRow(
                image=orig.numpy(), gt=gt.numpy(), cam=(cols["cam"][0] * present).amax(0).cpu().numpy(),
                lam=(cols["lam"][0] * present).amax(0).cpu().numpy(), seg=cols["seg"][0].argmax(0).cpu().numpy(),
                name=self._batch["name"][i],
            ))
        return out

    def png(self, checkpoint_dir: str | os.PathLike) -> bytes:
        """The grid of :meth:`rows` as PNG bytes, with a legend of the dataset's class names."""
        from more.data.classes import class_names

        return encode_png(picture_grid(self.rows(checkpoint_dir), tile=self.tile, class_names=class_names(self.cfg)))
