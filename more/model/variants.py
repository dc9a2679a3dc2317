"""Backbone sizes, in one place (a plain dict registry, no torch import so configs validate fast).

``vit_b16`` is the paper's ViT-B/16 (MORE_SPEC §1.1). The small variants keep CPU runs and tests cheap.
"""

from __future__ import annotations

VARIANTS: dict[str, dict[str, int]] = {
    "vit_b16": {"embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4, "patch_size": 16},
    "vit_s16": {"embed_dim": 384, "depth": 12, "num_heads": 6, "mlp_ratio": 4, "patch_size": 16},
    "vit_tiny": {"embed_dim": 192, "depth": 4, "num_heads": 3, "mlp_ratio": 4, "patch_size": 16},
    "vit_micro": {"embed_dim": 64, "depth": 3, "num_heads": 2, "mlp_ratio": 2, "patch_size": 16},
}

# timm model names whose pretrained weights match each size (used when model.pretrained is a timm tag).
TIMM_NAMES: dict[str, str] = {
    "vit_b16": "vit_base_patch16_224.orig_in21k_ft_in1k",
    "vit_s16": "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "vit_tiny": "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
}
