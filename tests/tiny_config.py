"""The tiny training configuration shared by the trainer, tracking and search tests: vit_micro on 16 generated
64 px images, 6 iterations with every phase switch inside them. ``tests/conftest.py`` makes this module importable
(pytest runs with --import-mode=importlib) and builds the dataset once per session (the ``tiny_root`` fixture)."""

from __future__ import annotations

TINY = [
    "data.synth_classes=3",
    "data.synth_train=16",
    "data.synth_val=6",
    "data.synth_image_size=64",
    "data.crop_size=64",
    "eval.resize=64",
    "eval.batch_size=6",
    "model.variant=vit_micro",
    "train.batch_size=4",
    "train.max_iters=6",
    "train.eval_every=3",
    "train.ckpt_every=3",
    "train.log_every=1",
    "train.keep_ckpts=5",
    "pseudo.cam_scales=[1.0, 0.5]",
    "lir.ure_kernel=2",
    "lir.ure_num_tokens=4",
    "loss.seg_start=1",
    "pseudo.mask_switch_iter=3",
    "optim.warmup_iters=2",
    "data.num_workers=0",
    "runtime.num_threads=1",
]
