"""Dense energy loss (MORE_SPEC §2.7): exact bilateral filter vs a brute-force double sum, value and gradient."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from more.losses import bilateral_features, bilateral_filter, energy_loss


def brute_force_filter(image, maps, sigma_rgb, sigma_xy):
    """``out_k(i) = sum_j exp(-d_xy^2 / (2 s_xy^2) - |I_i - I_j|^2 / (2 s_rgb^2)) maps_k(j)`` over all pixel pairs."""
    b, k, h, w = maps.shape
    image, maps = image.double(), maps.double()
    out = torch.zeros(b, k, h, w, dtype=torch.float64)
    pixels = [(y, x) for y in range(h) for x in range(w)]
    for n in range(b):
        for yi, xi in pixels:
            for yj, xj in pixels:
                spatial = ((xi - xj) ** 2 + (yi - yj) ** 2) / (2 * sigma_xy**2)
                colour = ((image[n, :, yi, xi] - image[n, :, yj, xj]) ** 2).sum() / (2 * sigma_rgb**2)
                out[n, :, yi, xi] += torch.exp(-spatial - colour) * maps[n, :, yj, xj]
    return out


@pytest.mark.parametrize("tile", [1, 7, 4096])
def test_bilateral_filter_equals_double_sum(tile):
    torch.manual_seed(0)
    image = torch.rand(2, 3, 6, 5) * 255
    maps = torch.rand(2, 3, 6, 5)
    features = bilateral_features(image, sigma_rgb=40.0, sigma_xy=2.0)
    out = bilateral_filter(features=features, maps=maps, tile=tile)
    expected = brute_force_filter(image, maps, sigma_rgb=40.0, sigma_xy=2.0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def test_tiling_does_not_change_the_result():
    torch.manual_seed(1)
    image = torch.rand(1, 3, 9, 8) * 255
    maps = torch.rand(1, 4, 9, 8)
    features = bilateral_features(image, sigma_rgb=15.0, sigma_xy=5.0)
    one = bilateral_filter(features=features, maps=maps, tile=10_000)
    for tile in (5, 13, 71):  # fp32 rounding of the |f_i|^2 + |f_j|^2 - 2 f_i.f_j expansion differs by tile only
        torch.testing.assert_close(bilateral_filter(features=features, maps=maps, tile=tile), one, rtol=1e-4, atol=0)


def test_energy_two_pixels_by_hand():
    # one row of two pixels of the same colour, no downscaling, sigma_xy = 1: W = [[1, a], [a, 1]], a = e^{-1/2}
    a = math.exp(-0.5)
    logits = torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, 0.0]]]], requires_grad=True)  # (1, 2, 1, 2)
    s0, s1 = (0.75, 0.25), (0.5, 0.5)  # softmax per pixel
    g0, g1 = 1 - 0.75, 1 - 0.5
    as0 = [s0[k] + a * s1[k] for k in range(2)]
    as1 = [s1[k] + a * s0[k] for k in range(2)]
    energy = -(g0 * sum(s0[k] * as0[k] for k in range(2)) + g1 * sum(s1[k] * as1[k] for k in range(2)))
    image = torch.full((1, 3, 1, 2), 100.0)
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    value = energy_loss(
        seg_logits=logits, image=image, target=target, sigma_xy=1.0, scale_factor=1.0, weight=2.0, filter="exact"
    )
    assert value.item() == pytest.approx(2.0 * energy, rel=1e-6)
    # the ignored pixel 0 gets the gate 1
    ignored = torch.tensor([[[255, 0]]])
    energy_ignored = -(1.0 * sum(s0[k] * as0[k] for k in range(2)) + g1 * sum(s1[k] * as1[k] for k in range(2)))
    value = energy_loss(
        seg_logits=logits, image=image, target=ignored, sigma_xy=1.0, scale_factor=1.0, weight=1.0, filter="exact"
    )
    assert value.item() == pytest.approx(energy_ignored, rel=1e-6)


def _energy_case():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 3, 5, requires_grad=True)  # (B, K, h, w) -> upsampled to 12 x 10
    image = torch.rand(2, 3, 12, 10) * 255
    target = torch.randint(0, 3, (2, 12, 10))
    target[torch.rand(2, 12, 10) < 0.3] = 255
    return logits, image, target


def test_energy_value_and_gradient_against_brute_force():
    logits, image, target = _energy_case()
    weight, sigma_rgb, sigma_xy = 1e-3, 30.0, 4.0
    value = energy_loss(
        seg_logits=logits,
        image=image,
        target=target,
        sigma_rgb=sigma_rgb,
        sigma_xy=sigma_xy,
        scale_factor=0.5,
        weight=weight,
        filter="exact",
        tile=16,
    )
    value.backward()
    grad = logits.grad.clone()

    # Independent path: x0.5 bilinear (align_corners=False) is a 2x2 mean; x0.5 nearest takes the even pixels.
    probs = F.interpolate(logits, size=(12, 10), mode="bilinear", align_corners=False).softmax(dim=1)
    small = F.avg_pool2d(probs, 2)  # (2, 3, 6, 5)
    small_image, small_target = image[:, :, ::2, ::2], target[:, ::2, ::2]
    gate = 1.0 - small.detach().max(dim=1).values
    gate[small_target == 255] = 1.0
    filtered = brute_force_filter(small_image, small.detach(), sigma_rgb, sigma_xy * 0.5).float() * gate[:, None]
    expected = -weight * (small.detach() * filtered).sum() / 2
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    # Custom gradient w.r.t. the small S: -2 * weight * G * AS / B, chain-ruled through resampling and softmax.
    (expected_grad,) = torch.autograd.grad(small, logits, grad_outputs=-2.0 * weight * filtered / 2)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6 * expected_grad.abs().max().item())
    assert expected_grad.abs().max() > 0


@pytest.mark.parametrize("filter", ["exact", "lattice"])
def test_energy_bf16_autocast_matches_fp32_and_keeps_precision_settings(filter):
    logits, image, target = _energy_case()
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision)
    reference = energy_loss(seg_logits=logits, image=image, target=target, weight=1.0, filter=filter)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = energy_loss(seg_logits=logits, image=image, target=target, weight=1.0, filter=filter)
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(reference.item(), rel=1e-5)
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision) == before


@pytest.mark.parametrize("filter", ["exact", "lattice"])
def test_energy_parameters_change_the_output(filter):
    logits, image, target = _energy_case()
    base = dict(seg_logits=logits, image=image, target=target, filter=filter)
    reference = energy_loss(**base).item()
    for change in (dict(sigma_rgb=5.0), dict(sigma_xy=10.0), dict(scale_factor=1.0), dict(weight=2.0)):
        assert energy_loss(**base, **change).item() != pytest.approx(reference, rel=1e-4), change
