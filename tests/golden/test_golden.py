"""Our components against outputs of the authors' code (zwyang6/MoRe), recorded in ``tests/golden/``.

The fixtures were written by ``tools/check_reference.py --ref PATH --golden-out tests/golden`` (see MANIFEST.json:
command, reference commit, date, torch version): a reduced-width network (D = 64, depth 3, decoder width 32,
C = 20), its weights, small inputs and what the reference computed from them. These tests need neither the
reference nor the tool: they rebuild our side from the weights and compare at float tolerance, so a change that
breaks equivalence with the reference fails here (e.g. ``gcr.weighting=dot`` or ``optim.idle_params=skip``, both
asserted below).
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import more.train.step as step_module
from more.config import load_config
from more.data.transforms import eval_image
from more.eval.evaluate import column_labels, columns_at, evaluate, predict_batch
from more.losses import cre_loss, mct_loss, ptc_loss, ure_loss
from more.model.backbone import MultiClassTokenViT
from more.model.decoder import LargeFOV
from more.model.gcr import GCR
from more.model.heads import CamClassifier
from more.model.heads import lam as lam_map
from more.model.more import MoRe
from more.pseudo.cam import cam_to_label, multi_scale_cam, multi_scale_lam
from more.pseudo.par import PAR
from more.train.optim import PolyWarmupAdamW
from more.train.step import TERMS, training_step
from tools.refcheck.common import tensor_stats

HERE = Path(__file__).parent
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SCALES = (1.0, 0.5, 0.75, 1.5)
POOL = 12


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(HERE / "reference_outputs.pt", weights_only=True)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((HERE / "MANIFEST.json").read_text())


def build(manifest: dict, *, weighting: str = "sum_product") -> MoRe:
    """Our MoRe at the fixtures' size with the fixtures' weights (train mode, as the reference loop runs it)."""
    size = manifest["size"]
    dim, classes = size["embed_dim"], size["num_classes"]
    model = MoRe(
        backbone=MultiClassTokenViT(num_classes=classes, num_registers=size["num_registers"], embed_dim=dim,
                                    depth=size["depth"], num_heads=size["num_heads"], mlp_ratio=size["mlp_ratio"],
                                    aux_layer=size["aux_layer"]),
        gcr=GCR(dim, top_k=int(0.5 * classes), weighting=weighting),
        classifier=CamClassifier(dim, classes),
        aux_classifier=CamClassifier(dim, classes),
        decoder=LargeFOV(dim, classes + 1, channels=size["decoder"]),
    )
    model.load_state_dict(torch.load(HERE / "weights_micro.pt", weights_only=True))
    return model.train()


def normalise(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb.float() / 255.0 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def assert_close(ours, ref, tol: float = 1e-4) -> None:  # noqa: ANN001
    """|ours - ref| <= tol·max|ref| + tol·|ref| element-wise (fp32 rounding of a different op order)."""
    ours, ref = torch.as_tensor(ours).double(), torch.as_tensor(ref).double()
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    torch.testing.assert_close(ours, ref, atol=tol * scale, rtol=tol)


def assert_stats_close(ours: torch.Tensor, ref: torch.Tensor, tol: float = 1e-4) -> None:
    """Row-wise: each tensor's three statistics within tol of that tensor's largest statistic."""
    scale = ref.abs().amax(dim=1, keepdim=True).clamp(min=1e-30)
    assert bool(((ours - ref).abs() <= tol * scale).all()), f"worst {float(((ours - ref).abs() / scale).max()):.3g}"


def test_manifest_records_provenance(manifest: dict) -> None:
    assert manifest["reference"] == "zwyang6/MoRe"
    assert "tools/check_reference.py" in manifest["command"] and "--golden-out" in manifest["command"]
    assert {"date", "torch", "reference_commit", "size", "files"} <= set(manifest)
    total = sum((HERE / name).stat().st_size for name in manifest["files"])
    assert total < 4e6, "golden fixtures should stay a few MB"


def test_forward_matches_reference(golden: dict, manifest: dict) -> None:
    model, ref = build(manifest), golden["forward"]
    x = normalise(golden["rgb"])
    with torch.no_grad():
        backbone = model.backbone(x)
        out = model(x)
        cam, cam_aux = model.cams(x)
    assert_close(backbone.class_tokens, ref["class_tokens"])
    assert_close(backbone.aux_patch_tokens, ref["aux_patch_tokens"])
    assert_close(out.features, ref["features"])
    for ours, key in ((out.cls_logits, "cls"), (out.cls_aux_logits, "cls_aux"), (out.seg_logits, "seg"),
                      (out.tokens, "tokens"), (cam, "cam"), (cam_aux, "cam_aux")):
        assert_close(ours, ref[key])
    assert_close(lam_map(out.features, out.tokens), ref["lam"])


def test_multi_scale_maps_match_reference(golden: dict, manifest: dict) -> None:
    model, ref = build(manifest), golden["forward"]
    x = normalise(golden["rgb"])
    cam, cam_aux = multi_scale_cam(model.cams, x, SCALES)
    assert_close(F.avg_pool2d(cam, POOL), ref["ms_cam"])
    assert_close(F.avg_pool2d(cam_aux, POOL), ref["ms_cam_aux"])
    assert_close(F.avg_pool2d(multi_scale_lam(model.lam, x, (1.0, 0.5, 1.5)), POOL), ref["ms_lam"])


def test_paper_gcr_weighting_breaks_equivalence(golden: dict, manifest: dict) -> None:
    """The paper's Eq. (4) dot product (gcr.weighting=dot) is not what the reference computes: this must fail."""
    model = build(manifest, weighting="dot")
    with torch.no_grad():
        tokens = model(normalise(golden["rgb"])).tokens
    with pytest.raises(AssertionError):
        assert_close(tokens, golden["forward"]["tokens"])


def _grad(fn, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    leaf = tensor.detach().clone().requires_grad_(True)
    value = fn(leaf)
    value.backward()
    return value.detach(), leaf.grad


def test_losses_match_reference(golden: dict) -> None:
    fwd, ref = golden["forward"], golden["losses"]
    labels = golden["labels"]
    tokens, features = fwd["tokens"], fwd["features"]
    m_cre, m_aux = ref["mask_cre"].long(), ref["mask_aux"].long()
    assert torch.equal(cam_to_label(ref["map"], labels, high=0.5, low=0.25, ignore_mid=True), m_cre)
    assert torch.equal(cam_to_label(ref["map"], labels, high=0.7, low=0.25, ignore_mid=True), m_aux)

    value, grad = _grad(lambda t: mct_loss(tokens=t), tokens)
    assert_close(value, ref["mct"], 1e-5)
    assert_close(grad, ref["mct_grad"], 1e-5)
    value, grad = _grad(lambda t: cre_loss(tokens=t, features=features, mask=m_cre, labels=labels, temperature=0.5),
                        tokens)
    assert_close(value, ref["cre"], 1e-5)
    assert_close(grad, ref["cre_grad"], 1e-4)
    value, grad = _grad(lambda f: ure_loss(tokens=tokens, features=f, mask=m_aux, labels=labels,
                                           scores=ref["ure_scores"]), features)
    assert_close(value, ref["ure"], 1e-5)
    assert_close(grad, ref["ure_grad"], 1e-4)
    value, grad = _grad(lambda f: ptc_loss(features=f, mask=m_aux), features)
    assert_close(value, ref["ptc"], 1e-5)
    assert_close(grad, ref["ptc_grad"], 1e-4)


@pytest.mark.parametrize("n", [0, 2500, 12000])
def test_training_step_matches_reference(golden: dict, manifest: dict, n: int) -> None:
    """The whole step as train_voc.py's loop body computes it (L_ure's draws replayed; the energy filter the fixtures
    were written with: rloss's lattice, or the exact-Gaussian stand-in when the tool ran without ``--rloss``)."""
    model, ref = build(manifest), golden["steps"][f"n{n}"]
    energy_filter = "lattice" if manifest["energy_filter"].startswith("rloss") else "exact"
    cfg = load_config(None, [f"loss.energy_filter={energy_filter}"])
    real_ure = step_module.ure_loss
    with mock.patch.object(step_module, "ure_loss", lambda **kw: real_ure(**{**kw, "scores": ref["ure_scores"]})):
        out = training_step(model, PAR(), normalise(golden["rgb"]), golden["labels"], cfg=cfg, n=n)
    out.total.backward()
    assert torch.equal(out.seg_target, golden["steps"]["y_ref"].long())
    for term in TERMS:
        assert_close(out.unweighted[term], ref[term], 1e-5)
    assert_close(out.total.detach(), ref["total"], 1e-5)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in model.named_parameters()]
    assert_stats_close(tensor_stats(grads), ref["grad_stats"])


def _adamw(manifest: dict, idle_params: str) -> MoRe:
    """Six steps with the fixture's seeded gradients; the decoder gets none while n <= 2 (seg warm-up)."""
    model = build(manifest)
    cfg = load_config(None, ["optim.warmup_iters=2", "train.max_iters=6", f"optim.idle_params={idle_params}"])
    optim = PolyWarmupAdamW(model.param_groups(lr=1e-3, head_lr_mult=10.0, weight_decay=0.01), cfg=cfg.optim,
                            max_iters=6)
    g = torch.Generator().manual_seed(77)
    for n in range(6):
        optim.zero_grad(set_to_none=True)
        for name, param in model.named_parameters():
            grad = torch.randn(param.shape, generator=g)
            param.grad = None if name.startswith("decoder.") and n <= 2 else grad
        optim.step()
    return model


def test_optimizer_matches_reference(golden: dict, manifest: dict) -> None:
    ref = golden["optimizer"]
    cfg = load_config(None)
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(5)]
    mult = [1, 1, 10, 10, 10]
    optim = PolyWarmupAdamW([{"params": [p], "lr": cfg.optim.lr * m, "weight_decay": 0.01}
                             for p, m in zip(params, mult)], cfg=cfg.optim, max_iters=cfg.train.max_iters)
    lrs = []
    for t in ref["lr_steps"].tolist():  # the schedule is a function of the step count: jump to each probed step
        optim.global_step = t
        optim.step()
        lrs.append([group["lr"] for group in optim.param_groups])
    torch.testing.assert_close(torch.tensor(lrs, dtype=torch.float64), ref["lr"], rtol=1e-12, atol=0.0)

    model = _adamw(manifest, "zero_grad")
    assert_stats_close(tensor_stats([p for _, p in model.named_parameters()]), ref["adamw_stats"], 1e-6)
    for name, param in model.named_parameters():
        if name.startswith("decoder."):
            assert_close(param.detach(), ref["adamw_decoder"][name], 1e-6)


def test_skipping_the_decoder_in_the_warm_up_breaks_equivalence(golden: dict, manifest: dict) -> None:
    """optim.idle_params=skip (no zero gradients during the seg warm-up) differs from the reference: must fail."""
    model = _adamw(manifest, "skip")
    with pytest.raises(AssertionError):
        for name, param in model.named_parameters():
            if name.startswith("decoder."):
                assert_close(param.detach(), golden["optimizer"]["adamw_decoder"][name], 1e-6)


def test_validation_columns_match_reference(golden: dict, manifest: dict) -> None:
    ref = golden["validation"]
    model = build(manifest)
    cfg = load_config(None, [f"eval.resize={ref['resize']}"])
    batches = [{"image": eval_image(rgb.permute(1, 2, 0), ref["resize"], MEAN, STD)[None], "labels": labels,
                "mask": [mask.long()]} for rgb, mask, labels in zip(ref["rgb"], ref["mask"], ref["labels"])]
    result = evaluate(model, batches, cfg=cfg, device=torch.device("cpu"))
    assert result.cls_f1 == pytest.approx(ref["cls_f1"], abs=1e-12)
    model.eval()
    for i, batch in enumerate(batches):
        maps = predict_batch(model, batch["image"], batch["labels"], cfg=cfg)
        for name, column in columns_at(maps, [0], tuple(batch["mask"][0].shape)):
            if name in ref["columns"]:
                pred = column_labels(name, column, batch["labels"], bkg_thre=cfg.eval.bkg_thre)
                assert torch.equal(pred[0].to(torch.uint8), ref["columns"][name]["labels"][i]), (name, i)
    for name, column in ref["columns"].items():
        np.testing.assert_allclose(result.scores[name].iou, column["iou"].numpy(), rtol=1e-12, equal_nan=True)
