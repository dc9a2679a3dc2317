"""MultiClassTokenViT: token layout, DINO-style position resize, aux block, registers, bf16 (MORE_SPEC §1.1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from more.model.backbone import MultiClassTokenViT, interpolate_patch_pos_embed
from more.model.variants import VARIANTS


@pytest.mark.parametrize(("variant", "size"), [("vit_micro", (64, 64)), ("vit_micro", (64, 96)),
                                               ("vit_micro", (224, 224)), ("vit_tiny", (64, 96))])
def test_shapes(variant: str, size: tuple[int, int]) -> None:
    spec = VARIANTS[variant]
    model = MultiClassTokenViT(num_classes=7, num_registers=4, embed_dim=spec["embed_dim"], depth=spec["depth"],
                               num_heads=spec["num_heads"], mlp_ratio=spec["mlp_ratio"])
    assert model.cls_token.shape == (1, 11, spec["embed_dim"])
    assert model.pos_embed.shape == (1, 11 + 196, spec["embed_dim"])
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    h, w = size[0] // 16, size[1] // 16
    assert out.grid == (h, w)
    assert out.class_tokens.shape == (2, 7, spec["embed_dim"])
    assert out.patch_tokens.shape == (2, h * w, spec["embed_dim"])
    assert out.aux_patch_tokens.shape == (2, h * w, spec["embed_dim"])


def test_vit_b16_on_meta_device() -> None:
    with torch.device("meta"):
        model = MultiClassTokenViT(num_classes=20)
        out = model(torch.empty(1, 3, 448, 448))
    assert model.pos_embed.shape == (1, 24 + 196, 768) and model.aux_index == 9  # -3 = the 10th block
    assert sum(p.numel() for n, p in model.named_parameters() if n.startswith("blocks.")) == 12 * 7087872
    assert out.class_tokens.shape == (1, 20, 768) and out.patch_tokens.shape == (1, 784, 768)


def test_timm_blocks_use_fused_attention_and_exact_gelu(micro_backbone) -> None:
    model = micro_backbone()
    block = model.blocks[0]
    assert block.attn.fused_attn
    assert isinstance(block.mlp.act, torch.nn.GELU) and block.mlp.act.approximate == "none"
    assert model.norm.eps == 1e-6 and block.norm1.eps == 1e-6
    assert block.attn.qkv.bias is not None


@pytest.mark.parametrize("grid", [(4, 6), (28, 28), (3, 5)])
def test_pos_embed_resize_uses_scale_factor(micro_backbone, grid: tuple[int, int]) -> None:
    model = micro_backbone()
    table = model.pos_embed[:, 9:].detach()  # (1, 196, D) patch rows
    h, w = grid
    square = table.reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(square, scale_factor=((h + 0.1) / 14, (w + 0.1) / 14), mode="bicubic",
                             align_corners=False).permute(0, 2, 3, 1).reshape(1, h * w, -1)
    by_size = F.interpolate(square, size=grid, mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    got = model.position_embedding(grid).detach()
    assert torch.equal(got[:, :9], model.pos_embed[:, :9].detach())  # extra-token rows as stored
    assert torch.equal(got[:, 9:], expected)
    assert not torch.allclose(got[:, 9:], by_size.reshape(1, h * w, -1))  # size= samples a different grid


def test_pos_embed_identity_at_nominal_grid(micro_backbone) -> None:
    model = micro_backbone()
    assert torch.equal(interpolate_patch_pos_embed(model.pos_embed[:, 9:], (14, 14)), model.pos_embed[:, 9:])


def test_registers_dropped_and_tokens_after_final_norm(micro_backbone) -> None:
    model = micro_backbone(num_classes=5, num_registers=4)
    seen = {}
    model.norm.register_forward_hook(lambda m, i, o: seen.update(normed=o))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 48))
    normed = seen["normed"]  # (B, T+L, D)
    assert normed.shape[1] == 9 + 6
    assert torch.equal(out.class_tokens, normed[:, 4:9])
    assert torch.equal(out.patch_tokens, normed[:, 9:])


def test_no_registers(micro_backbone) -> None:
    model = micro_backbone(num_classes=5, num_registers=0)
    seen = {}
    model.norm.register_forward_hook(lambda m, i, o: seen.update(normed=o))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert torch.equal(out.class_tokens, seen["normed"][:, :5])


@pytest.mark.parametrize(("aux_layer", "block"), [(-3, 0), (-2, 1), (1, 1)])
def test_aux_tokens_come_from_the_aux_block_without_final_norm(micro_backbone, aux_layer: int, block: int) -> None:
    model = micro_backbone(aux_layer=aux_layer)  # depth 3
    seen = {}
    for i, blk in enumerate(model.blocks):
        blk.register_forward_hook(lambda m, inp, o, i=i: seen.update({i: o}))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert torch.equal(out.aux_patch_tokens, seen[block][:, 9:])
    assert not torch.allclose(out.aux_patch_tokens, out.patch_tokens)


def test_aux_last_block_is_the_normed_output_like_the_reference(micro_backbone) -> None:
    model = micro_backbone(aux_layer=-1)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert torch.equal(out.aux_patch_tokens, out.patch_tokens)


def test_bad_sizes_rejected(micro_backbone) -> None:
    model = micro_backbone()
    with pytest.raises(AssertionError):
        model(torch.randn(1, 3, 40, 32))
    with pytest.raises(ValueError):
        micro_backbone(aux_layer=3)


def test_bf16_autocast_forward_is_finite(micro_backbone) -> None:
    model = micro_backbone()
    seen = {}
    model.blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: seen.update(qkv=o))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 64, 96))
    assert seen["qkv"].dtype == torch.bfloat16  # the matmuls did run in bf16
    for t in (out.class_tokens, out.patch_tokens, out.aux_patch_tokens):
        assert torch.isfinite(t.float()).all()
