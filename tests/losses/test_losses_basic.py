"""Hand-computed values for L_cls, L_mct, L_seg, PTC and the weighted total (MORE_SPEC §2.1, 2.2, 2.5, 2.6, 2.8)."""

from __future__ import annotations

import math

import pytest
import torch

from more.losses import (
    classification_loss,
    mct_loss,
    ptc_affinity_mask,
    ptc_loss,
    seg_loss,
    total_loss,
)


def test_classification_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    labels = torch.tensor([[1.0, 0.0]])
    # class 1: -log sigmoid(0) = ln 2; class 2: -log(1 - sigmoid(ln 3)) = -log(1/4) = ln 4
    expected = (math.log(2.0) + math.log(4.0)) / 2
    assert classification_loss(logits=logits, labels=labels).item() == pytest.approx(expected, rel=1e-6)


def test_mct_identical_tokens_give_log_c():
    tokens = torch.randn(1, 1, 5).expand(2, 3, 5).contiguous()
    assert mct_loss(tokens=tokens).item() == pytest.approx(math.log(3.0), rel=1e-5)


def test_mct_by_hand_and_temperature():
    tokens = torch.tensor([[[2.0, 0.0], [1.0, 1.0]]])  # cosine 1/sqrt(2) between the two tokens
    # each row: -log(e^{1/t} / (e^{1/t} + e^{c/t})) = log(1 + e^{(c - 1)/t}), c = 1/sqrt(2)
    c = 1 / math.sqrt(2.0)
    assert mct_loss(tokens=tokens, temperature=1.0).item() == pytest.approx(math.log1p(math.exp(c - 1)), rel=1e-5)
    expected = math.log1p(math.exp((c - 1) / 0.07))
    assert mct_loss(tokens=tokens).item() == pytest.approx(expected, rel=1e-4)


def test_seg_loss_same_size_by_hand():
    ln3 = math.log(3.0)
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, :, 0, 0] = torch.tensor([ln3, 0.0])  # p(bg) = 3/4
    logits[0, :, 0, 1] = torch.tensor([0.0, ln3])  # p(class 1) = 3/4
    logits[0, :, 1, 0] = torch.tensor([1000.0, -1000.0])  # ignored pixel: huge CE if it were counted
    target = torch.tensor([[[0, 1], [255, 0]]])
    bg = (math.log(4 / 3) + math.log(2.0)) / (2 + 1e-6)
    fg = math.log(4 / 3) / (1 + 1e-6)
    assert seg_loss(logits=logits, target=target).item() == pytest.approx(0.5 * (bg + fg), rel=1e-6)


def test_seg_loss_upsamples_and_handles_missing_groups():
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)  # constant after bilinear upsampling
    target = torch.tensor([[[0, 1], [1, 255]]])
    expected = 0.5 * (math.log(4.0) + math.log(4 / 3))
    assert seg_loss(logits=logits, target=target).item() == pytest.approx(expected, rel=1e-5)
    only_bg = torch.tensor([[[0, 0], [255, 255]]])
    assert seg_loss(logits=logits, target=only_bg).item() == pytest.approx(0.5 * math.log(4.0), rel=1e-5)


def test_ptc_affinity_mask_by_hand():
    mask = torch.tensor([[[0, 1], [255, 1]]])
    expected = torch.tensor(
        [[[255, 0, 255, 0], [0, 255, 255, 1], [255, 255, 255, 255], [0, 1, 255, 255]]], dtype=torch.uint8
    )
    target = ptc_affinity_mask(mask)
    assert target.dtype == torch.uint8
    assert torch.equal(target, expected)


def _aff_mask_loop(cam_label: torch.Tensor) -> torch.Tensor:
    """The reference's ``label_to_aff_mask``: repeat, compare, per-image boolean writes, diagonal."""
    b, h, w = cam_label.shape
    rep = cam_label.reshape(b, 1, -1).repeat([1, h * w, 1])
    aff = (rep == rep.permute(0, 2, 1)).long()
    for i in range(b):
        aff[i, :, rep[i, 0, :] == 255] = 255
        aff[i, rep[i, 0, :] == 255, :] = 255
    aff[:, range(h * w), range(h * w)] = 255
    return aff


def test_ptc_affinity_mask_equals_loop():
    torch.manual_seed(0)
    mask = torch.randint(0, 4, (3, 5, 6))
    mask[torch.rand(mask.shape) < 0.3] = 255
    assert torch.equal(ptc_affinity_mask(mask).long(), _aff_mask_loop(mask))


def test_ptc_loss_by_hand():
    features = torch.zeros(1, 2, 2, 2)
    features[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    features[0, :, 0, 1] = torch.tensor([0.0, 1.0])
    features[0, :, 1, 0] = torch.tensor([1.0, 1.0])  # ignored (label 255)
    features[0, :, 1, 1] = torch.tensor([2.0, 0.0])
    mask = torch.tensor([[[0, 1], [255, 1]]])
    # positives: (1,3),(3,1) with |cos| 0; negatives: (0,1),(1,0) with 0 and (0,3),(3,0) with 1
    expected = 0.5 * (1 - 0.0 / 3) + 0.5 * 2.0 / 5
    assert ptc_loss(features=features, mask=mask).item() == pytest.approx(expected, rel=1e-6)


def test_ptc_loss_pools_counts_over_batch():
    torch.manual_seed(1)
    features = torch.randn(2, 3, 3, 3)
    mask = torch.randint(0, 3, (2, 3, 3))
    x = torch.nn.functional.normalize(features.flatten(2), dim=1)
    sim = (x.transpose(1, 2) @ x).abs()
    target = _aff_mask_loop(mask)
    pos, neg = target == 1, target == 0
    expected = 0.5 * (1 - sim[pos].sum() / (pos.sum() + 1)) + 0.5 * sim[neg].sum() / (neg.sum() + 1)
    assert ptc_loss(features=features, mask=mask).item() == pytest.approx(expected.item(), rel=1e-5)


def test_total_loss_weights_and_reporting():
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    out = total_loss(terms={"cls": a, "seg": b}, weights={"cls": 1.0, "seg": 0.5, "unused": 9.0})
    assert out.total.item() == pytest.approx(3.5)
    assert out.unweighted["seg"].item() == 3.0 and not out.unweighted["seg"].requires_grad
    assert out.weighted["seg"].item() == pytest.approx(1.5) and not out.weighted["seg"].requires_grad
    out.total.backward()
    assert a.grad.item() == 1.0 and b.grad.item() == 0.5


def test_total_loss_zero_weight_adds_nothing_even_nan():
    a = torch.tensor(2.0, requires_grad=True)
    bad = torch.tensor(float("nan"), requires_grad=True)
    out = total_loss(terms={"cls": a, "energy": bad}, weights={"cls": 0.25, "energy": 0.0})
    assert out.total.item() == pytest.approx(0.5)
    assert math.isnan(out.unweighted["energy"].item())
    assert out.weighted["energy"].item() == 0.0
    out.total.backward()
    assert bad.grad is None
    all_zero = total_loss(terms={"cls": a}, weights={"cls": 0.0})
    assert all_zero.total.item() == 0.0


def test_total_loss_rejects_missing_weight_and_non_scalar():
    with pytest.raises(ValueError, match="no weight"):
        total_loss(terms={"cls": torch.tensor(1.0)}, weights={"seg": 1.0})
    with pytest.raises(ValueError, match="scalar"):
        total_loss(terms={"cls": torch.ones(2)}, weights={"cls": 1.0})


def test_bf16_autocast_gives_finite_fp32_losses():
    torch.manual_seed(2)
    tokens = torch.randn(2, 4, 16) * 100
    features = torch.randn(2, 16, 5, 5) * 1000
    mask = torch.randint(0, 5, (2, 5, 5))
    mask[0, 0] = 255
    logits = torch.randn(2, 5, 5, 5) * 50
    labels = (torch.rand(2, 4) < 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = {
            "cls": classification_loss(logits=logits.mean((2, 3))[:, :4], labels=labels),
            "mct": mct_loss(tokens=tokens),
            "ptc": ptc_loss(features=features, mask=mask),
            "seg": seg_loss(logits=logits, target=mask.clamp(max=4).repeat_interleave(2, 1).repeat_interleave(2, 2)),
        }
    for name, value in values.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), name
