"""The global batch of a run: processes x images per process x accumulation steps (MORE_SPEC §4.2).

``train.batch_size`` is per process and micro-step; the optimizer sees the mean gradient of
``processes x train.batch_size x train.accum_steps`` images. The reference's COCO run is 2 GPUs x 4 images
(global batch 8): ``train.accum_steps=2`` gives the same update on one GPU.
"""

from __future__ import annotations

from more.config.schema import MoReConfig


def global_batch(cfg: MoReConfig, processes: int = 1) -> int:
    """Images per optimizer step."""
    return processes * cfg.train.batch_size * cfg.train.accum_steps


def global_batch_text(cfg: MoReConfig, processes: int = 1) -> str:
    """E.g. ``8 = 1 process x 4 images x 2 accumulation steps``."""
    steps = cfg.train.accum_steps
    return (f"{global_batch(cfg, processes)} = {processes} process{'es' if processes != 1 else ''} x "
            f"{cfg.train.batch_size} image{'s' if cfg.train.batch_size != 1 else ''} x "
            f"{steps} accumulation step{'s' if steps != 1 else ''}")


def global_batches_text(configs: list[MoReConfig], processes: int = 1) -> str:
    """The global batch of a set of trials: one line, per distinct value when the trials differ."""
    texts = list(dict.fromkeys(global_batch_text(cfg, processes) for cfg in configs))
    if len(texts) == 1:
        return texts[0]
    return f"differs between trials: {'; '.join(texts)}"
