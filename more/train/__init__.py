"""Training: the loop (`trainer`), one step's losses (`step`), PolyWarmupAdamW (`optim`), checkpoints, data order.

``train`` and ``TrainingDiverged`` are imported lazily so that light users (the optimizer, checkpoints) do not
pull in the model and data stacks.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainingDiverged", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from more.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'more.train' has no attribute {name!r}")
