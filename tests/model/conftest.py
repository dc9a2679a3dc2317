"""Shared fixtures for the model tests: factories for tiny backbones, configs and a small timm ViT that plays the
pretrained checkpoint. Every test starts from the same random state."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from more.config import MoReConfig, load_config
from more.model.backbone import MultiClassTokenViT
from more.model.variants import VARIANTS

MICRO = VARIANTS["vit_micro"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def micro_backbone() -> Callable[..., MultiClassTokenViT]:
    """Factory of vit_micro-sized multi-class-token ViTs (depth 3, D 64)."""

    def make(num_classes: int = 5, num_registers: int = 4, aux_layer: int = -3) -> MultiClassTokenViT:
        return MultiClassTokenViT(
            num_classes=num_classes, num_registers=num_registers, embed_dim=MICRO["embed_dim"],
            depth=MICRO["depth"], num_heads=MICRO["num_heads"], mlp_ratio=MICRO["mlp_ratio"],
            patch_size=MICRO["patch_size"], aux_layer=aux_layer,
        )

    return make


@pytest.fixture
def plain_vit() -> Callable[..., VisionTransformer]:
    """Factory of single-CLS timm ViTs with vit_micro sizes and a 1000-way head (an ImageNet-like checkpoint)."""

    def make(img_size: int = 224, mlp_ratio: float | None = None) -> VisionTransformer:
        return VisionTransformer(
            img_size=img_size, patch_size=16, num_classes=1000, embed_dim=MICRO["embed_dim"], depth=MICRO["depth"],
            num_heads=MICRO["num_heads"], mlp_ratio=mlp_ratio or MICRO["mlp_ratio"], qkv_bias=True,
        )

    return make


@pytest.fixture
def tiny_cfg() -> Callable[..., MoReConfig]:
    """Factory of synthetic-dataset configs (vit_micro, C = 5, decoder width 32) with extra dotted overrides."""

    def make(*overrides: str) -> MoReConfig:
        base = ["model.variant=vit_micro", "data.synth_classes=5", "model.decoder_channels=32"]
        return load_config("synthetic", [*base, *overrides])

    return make
