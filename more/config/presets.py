"""Named presets (``voc``, ``coco``, ``synthetic``) and the paper-vs-code ``fidelity`` switch sets.

A preset is a flat dict of dotted overrides applied on top of the code defaults (which already are
the reference VOC recipe). Keeping presets as overrides means ``python -m more config show`` can say
exactly where every value came from.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # The reference VOC recipe (MORE_SPEC §2.8, §3, §4): the schema defaults are exactly this.
    "voc": {
        "name": "voc",
        "data.dataset": "voc",
        "data.root": "work/data/VOC2012",
    },
    # MS COCO 2014 (MORE_SPEC §2.8 COCO, §4.2, §4.3, §5.6).
    "coco": {
        "name": "coco",
        "data.dataset": "coco",
        "data.root": "work/data/COCO",
        "data.train_split": "train",  # the lists `data prepare coco` writes, as train_coco.py reads them;
        "data.val_split": "val",  # training validates on train.val_subset (val_part = the first 5000 of val)
        "data.augmentation": "coco",
        "data.jitter_prob": 0.8,
        "train.max_iters": 80000,
        "train.batch_size": 4,
        "train.eval_every": 4000,
        "train.ckpt_every": 1000,
        "train.val_subset": "val_part",  # train_coco.py validates on val_part; used when ImageSets/val_part.txt exists
        "lir.cre_weight": 0.1,
        "lir.ure_weight": 0.01,
        "lir.cre_temperature": 0.1,
        "loss.ptc_start": 8000,
        "loss.ptc_weight": 0.3,
        "loss.ptc_weight_late": 0.3,  # train_coco.py uses args.w_ptc (0.3) in both PTC phases
        "loss.lir_start": 12000,
        "loss.seg_start": 16000,
        "pseudo.cam_scales": [1.0, 0.5, 0.75, 1.25, 1.5],
        "pseudo.par_bg_high": 0.65,
        "pseudo.aux_high": 0.65,
        "pseudo.mask_switch_iter": 50000,
        "eval.bkg_thre": 0.45,
        "eval.split": "val",
    },
    # CPU-sized recipe for the demo and the tests: tiny ViT on the generated synthetic set.
    "synthetic": {
        "name": "synthetic",
        "data.dataset": "synthetic",
        "data.root": "work/data/synthetic",
        "data.train_split": "train",
        "data.val_split": "val",
        "data.crop_size": 128,
        "data.scale_min": 0.5,
        "data.num_workers": 0,
        "data.synth_train": 600,
        "model.variant": "vit_tiny",
        "train.max_iters": 300,
        "train.batch_size": 8,
        "train.log_every": 20,
        "train.eval_every": 100,
        "train.ckpt_every": 100,
        "optim.lr": 5e-4,  # random init: a from-scratch tiny ViT wants a larger step than the pretrained ViT-B
        "optim.warmup_iters": 30,
        "loss.seg_start": 80,
        "loss.energy_scale_factor": 0.25,  # a 32x32 energy grid: cheap on the CPU, even with energy_filter=exact
        "pseudo.mask_switch_iter": 150,
        "pseudo.cam_scales": [1.0, 0.75],
        "eval.resize": 128,
        "eval.batch_size": 16,
        "eval.seg_scales": [1.0],
        "eval.infer_multiscale": [1.0, 0.75, 1.25],
    },
}

# MORE_SPEC §7: for each difference that changes the computation, the reference code's value and the
# paper's. The schema defaults equal the "reference" column.
FIDELITY_SWITCHES: dict[str, tuple[Any, Any]] = {
    "model.num_registers": (4, 0),  # §7.1
    "gcr.top_k_ratio_of": ("classes", "patches"),  # §7.2
    "gcr.similarity": ("dot", "cosine"),  # §7.3
    "gcr.candidates": ("classes_and_patches", "patches"),  # §7.4
    "gcr.fusion": ("reference", "paper"),  # §7.5
    "gcr.weighting": ("sum_product", "dot"),  # §7.17
    "model.lam": ("dot", "cosine"),  # §7.6
    "loss.seg_target": ("cam", "lam"),  # §7.7
    "lir.cre_norm": ("reference", "paper"),  # §7.9
    "lir.cre_normalize_patches": (False, True),  # §7.9
    "lir.ure_abs": (True, False),  # §7.10
    "lir.ure_fallback": (True, False),  # §7.10
    "lir.ure_token_offset": ("reference", "centered"),  # §7.10
    "lir.ure_strict": (False, True),  # §7.10
    "pseudo.lir_mask_source": ("aux_then_main", "main"),  # §7.11
    "loss.energy_filter": ("lattice", "exact"),  # §2.7.1: rloss's lattice approximates the energy's Gaussian kernel
}

FIDELITY_LEVELS = ("reference", "paper")


def fidelity_overrides(level: str) -> dict[str, Any]:
    """Dotted overrides that put every §7 switch on ``level`` ("reference" or "paper")."""
    column = FIDELITY_LEVELS.index(level)
    return {key: values[column] for key, values in FIDELITY_SWITCHES.items()}


# The paper's Table 3 rows as named override sets (used by ablation specs and `more train --condition`).
TABLE3_CONDITIONS: dict[str, dict[str, Any]] = {
    "baseline": {"lir.cre_weight": 0.0, "lir.ure_weight": 0.0, "gcr.enabled": False},
    "wo_cre": {"lir.cre_weight": 0.0},
    "wo_ure": {"lir.ure_weight": 0.0},
    "wo_gcr": {"gcr.enabled": False},
    "more": {},
}
