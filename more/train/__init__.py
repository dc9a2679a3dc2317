"""Training: the loop (`trainer`), one step's losses (`step`), PolyWarmupAdamW (`optim`), checkpoints, data order."""

from more.train.trainer import TrainingDiverged, train

__all__ = ["TrainingDiverged", "train"]
