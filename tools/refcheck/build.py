"""The same network on both sides: ``more``'s MoRe and the reference's ``model_mal.network``, one set of weights.

Weights are drawn on our side (a seeded init) and copied into the reference through the explicit state-dict name
map of :mod:`more.model.reference_names` (``ref_name``); every parameter of either side must be accounted for, so a
renamed or new parameter fails loudly instead of silently staying at its random init on one side.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace

import torch
from torch import nn

from more.model.backbone import MultiClassTokenViT
from more.model.decoder import LargeFOV
from more.model.gcr import GCR
from more.model.heads import CamClassifier
from more.model.more import MoRe
from more.model.reference_names import REFERENCE_ONLY, reference_name
from tools.refcheck.common import Reference

__all__ = ["REFERENCE_ONLY", "SIZES", "Size", "build_ours", "build_reference", "copy_weights", "grads_by_our_name",
           "paired", "ref_name", "voc_args"]

NUM_REGISTERS = 4


@dataclass(frozen=True)
class Size:
    """Widths of a paired build. ``decoder`` is LargeFOV's hidden width (512 in the reference)."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    decoder: int


SIZES = {
    # reduced widths: the reference's MATformer, GCR and LargeFOV take these as constructor arguments / attributes
    "micro": Size(embed_dim=64, depth=3, num_heads=2, mlp_ratio=2, decoder=32),
    "small": Size(embed_dim=96, depth=4, num_heads=2, mlp_ratio=2, decoder=512),
    "vit_b16": Size(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4, decoder=512),
}

# The explicit name map lives in the package (eval and infer load the authors' checkpoints through it).
ref_name = reference_name

def build_ours(
    size: Size, *, num_classes: int = 20, aux_layer: int = -3, weighting: str = "sum_product", seed: int = 0
) -> MoRe:
    """Our MoRe at ``size`` with the reference's switches, weights from ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    dim = size.embed_dim
    model = MoRe(
        backbone=MultiClassTokenViT(num_classes=num_classes, num_registers=NUM_REGISTERS, embed_dim=dim,
                                    depth=size.depth, num_heads=size.num_heads, mlp_ratio=size.mlp_ratio,
                                    aux_layer=aux_layer),
        gcr=GCR(dim, top_k=int(0.5 * num_classes), weighting=weighting),
        classifier=CamClassifier(dim, num_classes),
        aux_classifier=CamClassifier(dim, num_classes),
        decoder=LargeFOV(dim, num_classes + 1, channels=size.decoder),
    )
    with torch.no_grad():  # registers get the reference's large std-1 position rows (§1.2), so they matter
        model.backbone.pos_embed[:, :NUM_REGISTERS].normal_(0.0, 1.0)
    return model


def build_reference(ref: Reference, size: Size, *, num_classes: int = 20, aux_layer: int = -3) -> nn.Module:
    """The reference ``network`` at ``size`` (random init; call :func:`copy_weights` next)."""
    args = SimpleNamespace(num_attri=num_classes + NUM_REGISTERS, finetune="", model="MATformer")
    encoder_pkg = ref.model_mal.encoder  # the reference's model.backbone package: network() looks backbones up there
    name = "matvit_base_patch16_224"
    if size != SIZES["vit_b16"]:
        name = "_more_refcheck_vit"
        matformer = ref.mat_vit.MATformer

        def factory(pretrained=None, args=None, if_reload=True, **kwargs):  # noqa: ANN001, ARG001 - network()'s call
            return matformer(patch_size=16, embed_dim=size.embed_dim, depth=size.depth, num_heads=size.num_heads,
                             mlp_ratio=size.mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                             **kwargs)

        setattr(encoder_pkg, name, factory)
    with contextlib.redirect_stdout(io.StringIO()):  # MATformer prints its training flag
        net = ref.model_mal.network(args, backbone=name, num_classes=num_classes + 1, pretrained=False,
                                    aux_layer=aux_layer)
    dim = size.embed_dim
    if dim != 768:  # graphic_cls_aggregation's widths are constructor arguments with 768 defaults
        net.graph_layer = ref.GCA.graphic_cls_aggregation(in_dim=dim, mid_dim=dim, out_dim=dim)
    if size.decoder != 512:  # LargeFOV's hidden width is an attribute; rebuild its convs with the reference's helpers
        head = ref.conv_head
        net.decoder.conv6 = head.conv3x3(dim, size.decoder, padding=5, dilation=5)
        net.decoder.conv7 = head.conv3x3(size.decoder, size.decoder, padding=5, dilation=5)
        net.decoder.conv8 = head.conv1x1(size.decoder, num_classes + 1, padding=0)
    return net


def copy_weights(ours: MoRe, theirs: nn.Module) -> None:
    """Copies every parameter of ``ours`` into ``theirs`` through :func:`ref_name`; both sides fully covered."""
    ref_params = dict(theirs.named_parameters())
    mapped = {}
    for name, tensor in ours.state_dict().items():
        target = ref_name(name)
        if target not in ref_params:
            raise KeyError(f"{name} -> {target}: not a parameter of the reference network")
        if ref_params[target].shape != tensor.shape:
            raise ValueError(f"{name} -> {target}: shape {tuple(tensor.shape)} vs {tuple(ref_params[target].shape)}")
        mapped[target] = tensor
    missing = set(ref_params) - set(mapped) - set(REFERENCE_ONLY)
    if missing:
        raise KeyError(f"reference parameters without a source on our side: {sorted(missing)}")
    theirs.load_state_dict(mapped, strict=False)


def paired(ref: Reference, size: Size, *, num_classes: int = 20, weighting: str = "sum_product",
           seed: int = 0) -> tuple[MoRe, nn.Module]:
    """Both networks with identical weights, in train mode (as the reference's loop runs them)."""
    ours = build_ours(size, num_classes=num_classes, weighting=weighting, seed=seed)
    theirs = build_reference(ref, size, num_classes=num_classes)
    copy_weights(ours, theirs)
    return ours.train(), theirs.train()


def grads_by_our_name(ours: MoRe, theirs: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Gradients of every parameter on both sides, keyed by our name (zeros where a side has none)."""
    ref_params = dict(theirs.named_parameters())
    a, b = {}, {}
    for name, param in ours.named_parameters():
        other = ref_params[ref_name(name)]
        a[name] = param.grad if param.grad is not None else torch.zeros_like(param)
        b[name] = other.grad if other.grad is not None else torch.zeros_like(other)
    return a, b


def voc_args(ref: Reference, **overrides: object) -> SimpleNamespace:
    """The authors' VOC defaults: ``scripts/train_voc.py``'s argument parser with no arguments, plus overrides."""
    args = ref.load_script("scripts/train_voc.py").parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args
