"""Datasets: PASCAL VOC 2012 (+SBD), MS COCO 2014 in VOC layout, datasets described by a ``dataset.yaml`` (your own
classes) and the generated synthetic set (which is described the same way).

``build_train_dataset`` / ``build_eval_dataset`` give torch datasets; ``ensure_dataset`` generates the synthetic
set on first use; ``check_dataset`` lists every problem of a tree (``python -m more data check``);
``more.data.prepare`` builds trees from the downloaded archives (``python -m more data prepare``).

Names are imported on first use, so ``import more.data.description`` (the config reads a dataset's class names
through it) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "CheckReport": "check", "check_dataset": "check", "inspect_dataset": "check",
    "COCO_CLASSES": "classes", "IGNORE_INDEX": "classes", "SYNTH_CLASSES": "classes", "VOC_CLASSES": "classes",
    "VOC_PALETTE": "classes", "class_names": "classes", "dataset_name": "classes",
    "DatasetDescription": "description", "DatasetError": "description", "read_description": "description",
    "SynthOptions": "synth", "ensure_dataset": "synth", "generate_dataset": "synth", "render_sample": "synth",
    "build_train_transform": "transforms", "eval_image": "transforms", "normalize": "transforms",
    "image_labels": "labels", "read_labels_file": "labels",
    "EvalDataset": "voc", "TrainDataset": "voc", "build_eval_dataset": "voc", "build_train_dataset": "voc",
    "collate_eval": "voc", "SplitFiles": "layout", "read_split": "layout", "split_files": "layout",
    "read_mask": "masks", "write_mask": "masks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'more.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"more.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
