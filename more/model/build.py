"""Build :class:`MoRe` from a config: every size comes from ``more.model.variants.VARIANTS`` (one place)."""

from __future__ import annotations

from more.config import MoReConfig, num_classes, resolved_top_k
from more.model.backbone import MultiClassTokenViT
from more.model.decoder import LargeFOV
from more.model.gcr import GCR
from more.model.heads import CamClassifier
from more.model.more import MoRe
from more.model.variants import TIMM_NAMES, VARIANTS
from more.model.weights import WeightsError, load_pretrained


def build_backbone(cfg: MoReConfig, *, device=None) -> MultiClassTokenViT:
    """The multi-class-token ViT of ``cfg.model.variant`` with C = ``num_classes(cfg)`` class tokens."""
    size = VARIANTS[cfg.model.variant]
    return MultiClassTokenViT(
        num_classes=num_classes(cfg),
        num_registers=cfg.model.num_registers,
        embed_dim=size["embed_dim"],
        depth=size["depth"],
        num_heads=size["num_heads"],
        mlp_ratio=size["mlp_ratio"],
        patch_size=size["patch_size"],
        aux_layer=cfg.model.aux_layer,
        device=device,
    )


def build_gcr(cfg: MoReConfig, dim: int) -> GCR | None:
    """GCR with the config's switches (K from :func:`more.config.resolved_top_k`), or None when disabled."""
    if not cfg.gcr.enabled:
        return None
    return GCR(dim, top_k=resolved_top_k(cfg), candidates=cfg.gcr.candidates, similarity=cfg.gcr.similarity,
               fusion=cfg.gcr.fusion, weighting=cfg.gcr.weighting)


def pretrained_source(cfg: MoReConfig) -> str:
    """``model.pretrained`` with the shorthand ``timm`` resolved to the variant's timm tag ("" = random init)."""
    source = cfg.model.pretrained
    if source == "timm":
        if cfg.model.variant not in TIMM_NAMES:
            raise WeightsError(f"model.pretrained='timm': no timm weights are known for variant {cfg.model.variant}")
        return "timm:" + TIMM_NAMES[cfg.model.variant]
    return source


def build_model(cfg: MoReConfig, *, load_weights: bool = True) -> MoRe:
    """Build MoRe from ``cfg``; loads ``cfg.model.pretrained`` into the backbone when set and ``load_weights``.

    Args:
        cfg: a validated config.
        load_weights: False skips the pretrained weights (e.g. when a checkpoint will overwrite them anyway).

    Raises:
        WeightsError: the weights were asked for and could not be loaded.
    """
    backbone = build_backbone(cfg)
    source = pretrained_source(cfg)
    if source and load_weights:
        load_pretrained(backbone, source)
    dim, classes = backbone.embed_dim, num_classes(cfg)
    return MoRe(
        backbone=backbone,
        gcr=build_gcr(cfg, dim),
        classifier=CamClassifier(dim, classes),
        aux_classifier=CamClassifier(dim, classes),
        decoder=LargeFOV(dim, classes + 1, channels=cfg.model.decoder_channels, dilation=cfg.model.decoder_dilation),
        lam_mode=cfg.model.lam,
    )
