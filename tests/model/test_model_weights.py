"""Pretrained loading and the §1.2 mapping: .pth / .safetensors / .npz, class-token symmetry, failures."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from more.model.weights import WeightsError, _require_reachable, load_pretrained

R, C = 4, 5
T = R + C


def check_mapping(backbone, vit) -> None:
    """The §1.2 mapping of a single-CLS ViT ``vit`` into ``backbone``."""
    src = vit.state_dict()
    cls, pos = src["cls_token"], src["pos_embed"]  # (1, 1, D), (1, 197, D)
    assert torch.equal(backbone.cls_token.data, cls.expand(1, T, -1))  # registers and classes all start equal
    assert torch.equal(backbone.pos_embed.data[:, R:T], pos[:, :1].expand(1, C, -1))
    registers = backbone.pos_embed.data[:, :R]
    assert registers.abs().max() <= 2.0 and registers.std() > 0.3  # trunc_normal(std=1) in [-2, 2], not std 0.02
    for key in ("patch_embed.proj.weight", "blocks.2.mlp.fc2.bias", "blocks.0.attn.qkv.weight", "norm.weight"):
        assert torch.equal(backbone.state_dict()[key], src[key]), key


def test_pth_mapping_and_report(tmp_path, micro_backbone, plain_vit) -> None:
    vit = plain_vit()
    path = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), path)
    backbone = micro_backbone(num_classes=C, num_registers=R)
    report = load_pretrained(backbone, str(path))
    check_mapping(backbone, vit)
    assert torch.equal(backbone.pos_embed.data[:, T:], vit.state_dict()["pos_embed"][:, 1:])
    assert report.missing == [] and report.unexpected == []  # head.* dropped silently


def test_class_tokens_are_identical_after_loading(tmp_path, micro_backbone, plain_vit) -> None:
    path = tmp_path / "vit.pth"
    torch.save({"model": plain_vit().state_dict()}, path)  # the {"model": ...} wrapping
    backbone = micro_backbone(num_classes=C, num_registers=R)
    load_pretrained(backbone, str(path))
    with torch.no_grad():
        tokens = backbone(torch.randn(2, 3, 32, 48)).class_tokens  # (B, C, D)
    torch.testing.assert_close(tokens, tokens[:, :1].expand_as(tokens), rtol=0, atol=1e-6)


def test_safetensors_and_state_dict_key(tmp_path, micro_backbone, plain_vit) -> None:
    vit = plain_vit()
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    backbone = micro_backbone(num_classes=C, num_registers=R)
    load_pretrained(backbone, str(tmp_path / "vit.safetensors"))
    check_mapping(backbone, vit)
    torch.save({"state_dict": vit.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    other = micro_backbone(num_classes=C, num_registers=R)
    load_pretrained(other, str(tmp_path / "wrapped.pt"))
    check_mapping(other, vit)


def test_other_grid_is_resized(tmp_path, micro_backbone, plain_vit) -> None:
    vit = plain_vit(img_size=112)  # 7×7 grid
    torch.save(vit.state_dict(), tmp_path / "vit112.pth")
    backbone = micro_backbone(num_classes=C, num_registers=R)
    load_pretrained(backbone, str(tmp_path / "vit112.pth"))
    grid = vit.state_dict()["pos_embed"][:, 1:].reshape(1, 7, 7, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(14, 14), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(backbone.pos_embed.data[:, T:], expected.reshape(1, 196, -1))


def test_unexpected_keys_are_reported(tmp_path, micro_backbone, plain_vit) -> None:
    state = plain_vit().state_dict()
    state["extra.weight"] = torch.zeros(3)
    del state["norm.bias"]
    torch.save(state, tmp_path / "odd.pth")
    report = load_pretrained(micro_backbone(num_classes=C, num_registers=R), str(tmp_path / "odd.pth"))
    assert report.unexpected == ["extra.weight"] and report.missing == ["norm.bias"]


def save_big_vision_npz(vit, path) -> None:
    """Write ``vit`` in the original Google ViT npz layout (the inverse of timm's ``_load_weights``)."""
    sd = {k: v.detach().numpy() for k, v in vit.state_dict().items()}
    dim, heads = vit.embed_dim, vit.blocks[0].attn.num_heads
    out = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
    }
    for i in range(len(vit.blocks)):
        p, q = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        out[p + "LayerNorm_0/scale"], out[p + "LayerNorm_0/bias"] = sd[q + "norm1.weight"], sd[q + "norm1.bias"]
        out[p + "LayerNorm_2/scale"], out[p + "LayerNorm_2/bias"] = sd[q + "norm2.weight"], sd[q + "norm2.bias"]
        qkv_w, qkv_b = np.split(sd[q + "attn.qkv.weight"], 3), np.split(sd[q + "attn.qkv.bias"], 3)
        for name, w, b in zip(("query", "key", "value"), qkv_w, qkv_b):
            out[p + f"MultiHeadDotProductAttention_1/{name}/kernel"] = w.T.reshape(dim, heads, dim // heads)
            out[p + f"MultiHeadDotProductAttention_1/{name}/bias"] = b.reshape(heads, dim // heads)
        proj = sd[q + "attn.proj.weight"].reshape(dim, heads, dim // heads).transpose(1, 2, 0)
        out[p + "MultiHeadDotProductAttention_1/out/kernel"] = proj
        out[p + "MultiHeadDotProductAttention_1/out/bias"] = sd[q + "attn.proj.bias"]
        for r in range(2):
            out[p + f"MlpBlock_3/Dense_{r}/kernel"] = sd[q + f"mlp.fc{r + 1}.weight"].T
            out[p + f"MlpBlock_3/Dense_{r}/bias"] = sd[q + f"mlp.fc{r + 1}.bias"]
    np.savez(path, **out)


def test_npz_through_timm_loader(tmp_path, micro_backbone, plain_vit) -> None:
    vit = plain_vit()
    save_big_vision_npz(vit, tmp_path / "vit.npz")
    backbone = micro_backbone(num_classes=C, num_registers=R)
    load_pretrained(backbone, str(tmp_path / "vit.npz"))
    check_mapping(backbone, vit)
    for key in ("blocks.1.attn.proj.weight", "blocks.1.attn.qkv.bias", "blocks.2.norm2.weight"):
        assert torch.equal(backbone.state_dict()[key], vit.state_dict()[key]), key


def test_missing_file_raises(tmp_path, micro_backbone) -> None:
    with pytest.raises(WeightsError, match="nope.pth"):
        load_pretrained(micro_backbone(), str(tmp_path / "nope.pth"))


def test_wrong_format_raises(tmp_path, micro_backbone, plain_vit) -> None:
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(WeightsError, match="tensor.pth"):
        load_pretrained(micro_backbone(), str(tmp_path / "tensor.pth"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="junk.safetensors"):
        load_pretrained(micro_backbone(), str(tmp_path / "junk.safetensors"))
    torch.save({"blocks.0.norm1.weight": torch.ones(64)}, tmp_path / "nocls.pth")
    with pytest.raises(WeightsError, match="cls_token"):
        load_pretrained(micro_backbone(), str(tmp_path / "nocls.pth"))


def test_shape_mismatch_raises(tmp_path, micro_backbone, plain_vit) -> None:
    torch.save(plain_vit(mlp_ratio=4).state_dict(), tmp_path / "wide.pth")  # fc1 is 256 wide, model has 128
    with pytest.raises(WeightsError, match="mlp.fc1"):
        load_pretrained(micro_backbone(), str(tmp_path / "wide.pth"))


def test_bad_tag_offline_fails_fast(monkeypatch, micro_backbone) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    for tag in ("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k", "no_such_model_xyz", "timm:"):
        with pytest.raises(WeightsError, match=tag):
            load_pretrained(micro_backbone(), tag)
    assert time.perf_counter() - start < 10.0
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_unreachable_hub_fails_fast() -> None:
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="unreachable"):
        _require_reachable("http://127.0.0.1:9", timeout=2.0)  # loopback discard port: refused at once
    assert time.perf_counter() - start < 3.0
