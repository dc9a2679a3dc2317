"""Class names of the supported datasets and the PASCAL VOC colour palette.

Index 0 is always ``background``; foreground classes are 1..C and 255 marks "ignore" in masks. Everything else asks
:func:`class_names` (and ``more.config.num_classes``) rather than using these lists: a custom dataset brings its own.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from more.config import MoReConfig

IGNORE_INDEX = 255

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

# The standard COCO-80 order (MORE_SPEC §5.6): mask value k is the k-th name, 1-based.
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

# The generated set (more.data.synth): a data.synth_classes=C dataset uses the first C names.
# boat and plane co-occur with a typical background (water, sky), sheep with grass.
SYNTH_CLASSES: tuple[str, ...] = ("boat", "plane", "disc", "box", "ring", "star", "sheep", "kite")


def _voc_palette() -> np.ndarray:
    """The 256-entry PASCAL VOC colormap (bit-interleaved index -> RGB), as a (256, 3) uint8 array."""
    index = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.int64)
    for bit in range(8):  # 8 rounds of 3 bits, most significant output bit first
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


VOC_PALETTE: np.ndarray = _voc_palette()  # (256, 3): 0 black, 1 (128, 0, 0), ..., 255 (224, 224, 192)


def class_names(cfg: MoReConfig) -> list[str]:
    """The C+1 class names of the configured dataset, background first.

    voc and coco have their fixed lists; a custom dataset's come from its ``dataset.yaml``; a synthetic set's are the
    generator's first ``data.synth_classes`` designs (which its ``dataset.yaml`` repeats).

    Raises:
        DatasetError: a custom dataset whose ``dataset.yaml`` is missing or invalid (the file is named).
    """
    dataset = cfg.data.dataset
    if dataset == "voc":
        names: tuple[str, ...] = VOC_CLASSES
    elif dataset == "coco":
        names = COCO_CLASSES
    elif dataset == "custom":
        from more.data.description import read_description

        names = read_description(cfg.data.root).classes
    else:
        names = synth_class_names(cfg.data.synth_classes)
    return ["background", *names]


def tree_class_names(root: str | os.PathLike, dataset: str, num_classes: int | None = None) -> list[str]:
    """The C+1 names of the dataset tree at ``root`` when there is no config (``data check``): a ``dataset.yaml``'s
    classes (custom, and synthetic sets that have one), a generated set's ``synth.json``, else voc's or coco's list.
    A ``num_classes`` that differs cuts the list or extends it with ``class_<k>``.
    """
    from pathlib import Path

    from more.data.description import has_description, read_description

    root = Path(root)
    if dataset == "custom" or (dataset == "synthetic" and has_description(root)):
        names: tuple[str, ...] = read_description(root).classes
    elif dataset == "coco":
        names = COCO_CLASSES
    elif (root / "synth.json").is_file():
        try:
            names = tuple(json.loads((root / "synth.json").read_text())["class_names"][1:])
        except (OSError, ValueError, KeyError, TypeError):
            names = VOC_CLASSES
    else:
        names = VOC_CLASSES
    C = len(names) if num_classes is None else num_classes
    return ["background", *names[:C], *(f"class_{k}" for k in range(len(names) + 1, C + 1))]


def dataset_name(cfg: MoReConfig) -> str:
    """What the run's data is called (the MLflow tag ``more.dataset``): voc, coco, synthetic, or a custom dataset's
    ``name:``."""
    if cfg.data.dataset == "custom":
        from more.data.description import read_description

        return read_description(cfg.data.root).name
    return cfg.data.dataset


def synth_class_names(num_classes: int) -> tuple[str, ...]:
    """Names of the first ``num_classes`` synthetic classes.

    Raises:
        ValueError: more classes than the generator knows.
    """
    if not 1 <= num_classes <= len(SYNTH_CLASSES):
        raise ValueError(f"the synthetic dataset has 1..{len(SYNTH_CLASSES)} classes, not {num_classes}")
    return SYNTH_CLASSES[:num_classes]
