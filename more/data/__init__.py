"""Datasets: PASCAL VOC 2012 (+SBD), MS COCO 2014 in VOC layout, and the generated synthetic set.

``build_train_dataset`` / ``build_eval_dataset`` give torch datasets; ``ensure_dataset`` generates the synthetic
set on first use; ``check_dataset`` lists every problem of a tree (``python -m more data check``).
"""

from more.data.check import CheckReport, check_dataset, inspect_dataset
from more.data.classes import COCO_CLASSES, IGNORE_INDEX, SYNTH_CLASSES, VOC_CLASSES, VOC_PALETTE, class_names
from more.data.synth import SynthOptions, ensure_dataset, generate_dataset, render_sample
from more.data.transforms import build_train_transform, eval_image, normalize
from more.data.voc import (
    EvalDataset,
    SplitFiles,
    TrainDataset,
    build_eval_dataset,
    build_train_dataset,
    collate_eval,
    image_labels,
    read_labels_file,
    read_mask,
    read_split,
    split_files,
    write_mask,
)

__all__ = [
    "COCO_CLASSES", "IGNORE_INDEX", "SYNTH_CLASSES", "VOC_CLASSES", "VOC_PALETTE", "CheckReport", "EvalDataset",
    "SplitFiles", "SynthOptions", "TrainDataset", "build_eval_dataset", "build_train_dataset", "build_train_transform",
    "check_dataset", "class_names", "collate_eval", "ensure_dataset", "eval_image", "generate_dataset",
    "image_labels", "inspect_dataset", "normalize", "read_labels_file", "read_mask", "read_split", "render_sample",
    "split_files", "write_mask",
]
