"""ViT with multiple class tokens and register tokens (MCTformer-style "MATformer", MORE_SPEC §1.1).

Built on timm's :class:`~timm.models.vision_transformer.VisionTransformer`: its ``PatchEmbed``, its pre-norm
``Block``s (fused scaled-dot-product attention) and its final LayerNorm, so parameter names match timm checkpoints
(``patch_embed.proj.*``, ``blocks.{i}.*``, ``norm.*``). Only the extra tokens and the position embedding differ:

* token sequence ``[reg_0..reg_{R-1}, cls_1..cls_C, patch_0..patch_{L-1}]`` (T = R + C extra tokens);
* ``cls_token`` (1, T, D) and ``pos_embed`` (1, T + 14·14, D) at the nominal 224 input; the 14×14 patch part is
  resized DINO-style (bicubic, ``scale_factor``) to the actual grid.

The attention logits of the reference (§1.1) never reach a loss or a metric, so they are not computed.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn


class BackboneOutput(NamedTuple):
    """What the backbone hands to the heads (MORE_SPEC §1.1)."""

    class_tokens: torch.Tensor  # (B, C, D) after the final LN, registers dropped
    patch_tokens: torch.Tensor  # (B, L, D) after the final LN, row-major
    aux_patch_tokens: torch.Tensor  # (B, L, D) output of block `aux_layer`, without the final LN
    grid: tuple[int, int]  # (h, w) patch grid, L = h * w


def interpolate_patch_pos_embed(patch_pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a square patch position table to ``grid`` the DINO way (MORE_SPEC §1.1).

    Bicubic with *scale factors* ``((h + 0.1) / n, (w + 0.1) / n)`` and ``align_corners=False``, as the reference
    does; the sampling grid then differs slightly from ``size=(h, w)``.

    Args:
        patch_pos: (1, n*n, D) the stored patch rows.
        grid: target (h, w).

    Returns:
        (1, h*w, D).
    """
    n_pos, dim = patch_pos.shape[1], patch_pos.shape[2]
    side = math.isqrt(n_pos)
    h, w = grid
    if (h, w) == (side, side):
        return patch_pos
    table = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, D, n, n)
    table = F.interpolate(
        table, scale_factor=((h + 0.1) / side, (w + 0.1) / side), mode="bicubic", align_corners=False
    )  # (1, D, h, w)
    if table.shape[-2:] != (h, w):
        raise RuntimeError(f"position-embedding resize gave {tuple(table.shape[-2:])}, expected {(h, w)}")
    return table.permute(0, 2, 3, 1).reshape(1, h * w, dim)


class MultiClassTokenViT(VisionTransformer):
    """Pre-norm ViT with R register tokens and C class tokens (MORE_SPEC §1.1, §7.1).

    Args:
        num_classes: C, the number of class tokens (foreground classes).
        num_registers: R register tokens placed before the class tokens (§7.1: 4 in the reference, 0 in the paper).
        embed_dim: D.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width / D.
        patch_size: patch side in pixels.
        img_size: nominal input side the position table is stored for (224 -> 14×14).
        aux_layer: block whose patch tokens feed the aux classifier (-3 = 10th of 12).
        device: optional device to allocate parameters on (e.g. ``"meta"``).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        num_registers: int = 4,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        patch_size: int = 16,
        img_size: int = 224,
        aux_layer: int = -3,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1 or num_registers < 0:
            raise ValueError(f"need num_classes >= 1 and num_registers >= 0, got {num_classes}, {num_registers}")
        if not -depth <= aux_layer < depth:
            raise ValueError(f"aux_layer={aux_layer} does not index a block of a depth-{depth} ViT")
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            num_classes=0,  # no classification head: the heads live in more.model.heads
            global_pool="",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            class_token=False,  # replaced below by T extra tokens
            pos_embed="none",  # replaced below by a (1, T + n*n, D) table
            embed_layer=partial(PatchEmbed, strict_img_size=False),  # any multiple of the patch size
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            act_layer=nn.GELU,  # exact GELU
            device=device,
        )
        self.num_class_tokens = num_classes
        self.num_registers = num_registers
        self.num_extra_tokens = num_registers + num_classes  # T
        self.aux_index = aux_layer % depth
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, self.num_extra_tokens, embed_dim, device=device))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_extra_tokens + num_patches, embed_dim, device=device))
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_(self.pos_embed, std=0.02)

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position table for a ``grid`` of patches: the T extra rows as stored, the patch rows resized. (1, T+L, D)"""
        extra = self.pos_embed[:, : self.num_extra_tokens]  # (1, T, D)
        patches = interpolate_patch_pos_embed(self.pos_embed[:, self.num_extra_tokens :], grid)  # (1, L, D)
        return torch.cat((extra, patches), dim=1)

    def forward(self, x: torch.Tensor) -> BackboneOutput:  # type: ignore[override]
        """Encode images.

        Args:
            x: (B, 3, H, W) with H and W multiples of the patch size.

        Returns:
            :class:`BackboneOutput` with the class, patch and aux patch tokens.
        """
        batch = x.shape[0]
        patch = self.patch_embed.patch_size
        grid = (x.shape[-2] // patch[0], x.shape[-1] // patch[1])
        tokens = self.patch_embed(x)  # (B, L, D)
        tokens = torch.cat((self.cls_token.expand(batch, -1, -1), tokens), dim=1)  # (B, T+L, D)
        tokens = tokens + self.position_embedding(grid)
        tokens = self.norm_pre(self.patch_drop(self.pos_drop(tokens)))

        aux = tokens
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)  # (B, T+L, D)
            if i == self.aux_index:
                aux = tokens
        tokens = self.norm(tokens)
        if self.aux_index == len(self.blocks) - 1:
            aux = tokens  # the reference overwrites the last block's record with the normed tokens

        extra = self.num_extra_tokens
        return BackboneOutput(
            class_tokens=tokens[:, self.num_registers : extra],  # (B, C, D): registers dropped
            patch_tokens=tokens[:, extra:],  # (B, L, D)
            aux_patch_tokens=aux[:, extra:],  # (B, L, D)
            grid=grid,
        )
