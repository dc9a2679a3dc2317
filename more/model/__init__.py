"""The MoRe network: multi-class-token ViT backbone, GCR, CAM heads, LAM and the LargeFOV decoder (MORE_SPEC §1).

Names are imported lazily: config validation reads ``more.model.variants`` (a plain dict) and must not pay for
importing torch and timm.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "BackboneOutput": "backbone", "MultiClassTokenViT": "backbone", "build_model": "build", "LargeFOV": "decoder",
    "GCR": "gcr", "CamClassifier": "heads", "lam": "heads", "CamOutput": "more", "MoRe": "more",
    "MoReOutput": "more", "LoadReport": "weights", "WeightsError": "weights", "load_pretrained": "weights",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"more.model.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'more.model' has no attribute {name!r}")
