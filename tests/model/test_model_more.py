"""The composed MoRe model and its builder: outputs, cam_only path, w/o GCR, gradients, param groups, bf16."""

from __future__ import annotations

import pytest
import torch

from more.config import resolved_top_k
from more.model import MoRe, WeightsError, build_model
from more.model.heads import lam


@pytest.mark.parametrize(("variant", "size"), [("vit_micro", (64, 64)), ("vit_micro", (64, 96)),
                                               ("vit_tiny", (32, 48))])
def test_forward_shapes(tiny_cfg, variant: str, size: tuple[int, int]) -> None:
    cfg = tiny_cfg(f"model.variant={variant}", "model.decoder_channels=32")
    model = build_model(cfg)
    dim = model.backbone.embed_dim
    h, w = size[0] // 16, size[1] // 16
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.cls_logits.shape == (2, 5) and out.cls_aux_logits.shape == (2, 5)
    assert out.seg_logits.shape == (2, 6, h, w)
    assert out.features.shape == (2, dim, h, w) and out.aux_features.shape == (2, dim, h, w)
    assert out.tokens.shape == (2, 5, dim)


def test_vit_b16_voc_model_on_meta(tiny_cfg) -> None:
    cfg = tiny_cfg("model.variant=vit_b16", "data.dataset=voc")
    with torch.device("meta"):
        model = build_model(cfg)
        out = model(torch.empty(1, 3, 448, 448))
    assert model.gcr.top_k == resolved_top_k(cfg) == 10
    assert out.seg_logits.shape == (1, 21, 28, 28) and out.tokens.shape == (1, 20, 768)


def test_builder_wires_the_config(tiny_cfg) -> None:
    cfg = tiny_cfg("gcr.top_k=7", "gcr.similarity=cosine", "gcr.fusion=paper", "gcr.candidates=patches",
                   "model.lam=cosine", "model.num_registers=0", "model.aux_layer=-2", "model.decoder_channels=24",
                   "model.decoder_dilation=3")
    model = build_model(cfg)
    gcr = model.gcr
    assert (gcr.top_k, gcr.similarity, gcr.fusion, gcr.candidates) == (7, "cosine", "paper", "patches")
    assert model.lam_mode == "cosine" and model.backbone.num_registers == 0 and model.backbone.aux_index == 1
    assert model.decoder.conv6.out_channels == 24 and model.decoder.conv6.dilation == (3, 3)
    assert build_model(tiny_cfg("gcr.enabled=false")).gcr is None


def test_features_are_final_patch_tokens_and_logits_pool_them(tiny_cfg) -> None:
    model = build_model(tiny_cfg())
    seen = {}
    model.backbone.register_forward_hook(lambda m, i, o: seen.update(out=o))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 48))
    bb = seen["out"]
    torch.testing.assert_close(out.features, bb.patch_tokens.transpose(1, 2).reshape(2, -1, 2, 3))
    torch.testing.assert_close(out.aux_features, bb.aux_patch_tokens.transpose(1, 2).reshape(2, -1, 2, 3))
    pooled = out.features.amax(dim=(2, 3))  # (B, D)
    torch.testing.assert_close(out.cls_logits, pooled @ model.classifier.conv.weight.flatten(1).T)
    torch.testing.assert_close(out.tokens, model.gcr(bb.class_tokens, bb.patch_tokens))


def test_without_gcr_tokens_are_the_class_tokens(tiny_cfg) -> None:
    model = build_model(tiny_cfg("gcr.enabled=false"))
    seen = {}
    model.backbone.register_forward_hook(lambda m, i, o: seen.update(out=o))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert torch.equal(out.tokens, seen["out"].class_tokens)


def test_cams_path_skips_gcr_and_decoder(tiny_cfg) -> None:
    model = build_model(tiny_cfg())
    calls = []
    model.gcr.register_forward_hook(lambda *a: calls.append("gcr"))
    model.decoder.register_forward_hook(lambda *a: calls.append("decoder"))
    x = torch.randn(2, 3, 32, 48)
    cams = model.cams(x)
    assert calls == [] and not cams.cam.requires_grad
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(cams.cam, model.classifier.cam(out.features))
    torch.testing.assert_close(cams.cam_aux, model.aux_classifier.cam(out.aux_features))
    assert cams.cam.shape == (2, 5, 2, 3)


def test_lam_uses_the_configured_mode(tiny_cfg) -> None:
    for mode in ("dot", "cosine"):
        model = build_model(tiny_cfg(f"model.lam={mode}"))
        with torch.no_grad():
            out = model(torch.randn(1, 3, 32, 32))
            torch.testing.assert_close(model.lam_from(out), lam(out.features, out.tokens, mode))


def test_gcr_sends_no_gradient_into_patch_tokens(tiny_cfg) -> None:
    model = build_model(tiny_cfg())
    seen = {}

    def keep(module, inputs, out):
        out.patch_tokens.retain_grad()
        out.class_tokens.retain_grad()
        seen["out"] = out

    model.backbone.register_forward_hook(keep)
    model(torch.randn(2, 3, 32, 32)).tokens.square().sum().backward()
    assert seen["out"].patch_tokens.grad is None  # the tails are detached: no path from GCR to patch tokens
    assert seen["out"].class_tokens.grad.abs().sum() > 0
    assert model.backbone.cls_token.grad.abs().sum() > 0  # through the class tokens, into the whole ViT


def test_param_groups_cover_every_parameter_once(tiny_cfg) -> None:
    model = build_model(tiny_cfg())
    groups = model.param_groups(6e-5, 10.0, 0.01)
    assert [g["name"] for g in groups] == ["encoder", "encoder_norm", "classifiers", "gcr", "decoder"]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    assert [g["lr"] for g in groups] == pytest.approx([6e-5, 6e-5, 6e-4, 6e-4, 6e-4])
    assert all(g["weight_decay"] == 0.01 for g in groups)
    names = {id(p): n for n, p in model.backbone.named_parameters()}
    assert all("norm" in names[id(p)] for p in groups[1]["params"])
    encoder = {names[id(p)] for p in groups[0]["params"]}
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight"} <= encoder and not any("norm" in n for n in encoder)
    torch.optim.AdamW(groups)  # accepted as is


def test_param_groups_without_gcr_keep_five_groups(tiny_cfg) -> None:
    model = build_model(tiny_cfg("gcr.enabled=false"))
    groups = model.param_groups(1e-4, 10.0, 0.0)
    assert len(groups) == 5 and groups[3]["params"] == []
    opt = torch.optim.AdamW(groups)
    model(torch.randn(1, 3, 32, 32)).cls_logits.sum().backward()
    opt.step()


def test_pretrained_file_is_loaded_by_the_builder(tmp_path, tiny_cfg, plain_vit) -> None:
    vit = plain_vit()
    torch.save(vit.state_dict(), tmp_path / "w.pth")
    model = build_model(tiny_cfg(f"model.pretrained={tmp_path / 'w.pth'}"))
    assert torch.equal(model.backbone.cls_token.data, vit.cls_token.data.expand(1, 9, -1))
    key = "blocks.1.attn.qkv.weight"
    assert torch.equal(model.backbone.state_dict()[key], vit.state_dict()[key])
    with pytest.raises(WeightsError, match="missing.pth"):
        build_model(tiny_cfg(f"model.pretrained={tmp_path / 'missing.pth'}"))
    with pytest.raises(WeightsError, match="vit_micro"):
        build_model(tiny_cfg("model.pretrained=timm"))


def test_bf16_autocast_model_forward_is_finite(tiny_cfg) -> None:
    model = build_model(tiny_cfg("model.decoder_channels=32"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 64, 96))
        cams = model.cams(torch.randn(2, 3, 64, 96))
    for tensor in (*out, *cams):
        assert torch.isfinite(tensor.float()).all()
    out.cls_logits.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_model_is_composed_by_injection(tiny_cfg) -> None:
    built = build_model(tiny_cfg())
    model = MoRe(backbone=built.backbone, gcr=None, classifier=built.classifier,
                 aux_classifier=built.aux_classifier, decoder=built.decoder, lam_mode="cosine")
    assert model.backbone is built.backbone and model.num_classes == 5
    with pytest.raises(ValueError, match="lam_mode"):
        MoRe(backbone=built.backbone, gcr=None, classifier=built.classifier, aux_classifier=built.aux_classifier,
             decoder=built.decoder, lam_mode="l1")
