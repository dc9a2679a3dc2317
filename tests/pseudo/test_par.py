"""Batched PAR and the two-threshold refinement against the reference's per-image loop (MORE_SPEC §3.3, §8.4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pseudo_reference import LoopPAR, loop_refine

from more.pseudo import par as par_module
from more.pseudo.par import PAR, refine_cams_with_bkg

DILATIONS = [1, 2, 4]


def _scene(b: int = 3, c: int = 3, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """0-255 RGB images with a square of three coloured bands on a dark textured background; class k's CAM
    covers band k (smoothed, so that its border falls between the thresholds), plus noise."""
    g = torch.Generator().manual_seed(seed)
    images = 40 + 30 * torch.rand(b, 3, size, size, generator=g)
    cams = torch.zeros(b, c, size, size)
    for i in range(b):
        y0, x0 = 4 + 3 * i, 6 + 2 * i
        for k in range(c):  # band k of the square: its own colour and class k's CAM
            images[i, k % 3, y0 + 5 * k : y0 + 5 * k + 5, x0 : x0 + 14] += 150.7
            cams[i, k, y0 + 5 * k : y0 + 5 * k + 5, x0 : x0 + 14] = 1.0
    cams = F.avg_pool2d(cams, 5, stride=1, padding=2, count_include_pad=True)
    return images, 0.9 * cams + 0.1 * torch.rand(b, c, size, size, generator=g)


def test_position_affinity_constant():
    par = PAR()  # default dilations [1, 2, 4, 8, 12, 24]
    dist = torch.tensor(
        [
            d * s
            for d in (1, 2, 4, 8, 12, 24)
            for s in (math.sqrt(2), 1, math.sqrt(2), 1, 1, math.sqrt(2), 1, math.sqrt(2))
        ]
    )
    assert float(dist.std()) == pytest.approx(9.90, abs=0.01)  # MORE_SPEC §3.3
    torch.testing.assert_close(par.pos_softmax, (-((dist / (dist.std() + 1e-8) / 0.3) ** 2)).softmax(0))
    aff = par.affinity(torch.rand(1, 3, 30, 30))
    assert aff.shape == (1, 48, 30, 30)
    torch.testing.assert_close(aff.sum(dim=1), torch.full((1, 30, 30), 1.01))  # softmax + 0.01 softmax


def test_par_matches_reference_and_shares_affinity_across_variants():
    torch.manual_seed(0)
    imgs = torch.rand(2, 3, 32, 32)
    masks = torch.rand(4, 3, 32, 32).softmax(dim=1)  # 2 variants x 2 images, variant-major
    par, ref = PAR(DILATIONS, 10), LoopPAR(DILATIONS, 10)
    out = par(imgs, masks)
    expected = torch.cat([ref(imgs[[i % 2]], masks[[i]]) for i in range(4)])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(par.propagate(masks, par.affinity(imgs)), out)


def test_par_cpu_channel_chunks_equal_one_pass(monkeypatch):
    torch.manual_seed(1)
    imgs, masks = torch.rand(2, 3, 16, 16), torch.rand(2, 5, 16, 16)
    par = PAR(DILATIONS, 3)
    whole = par(imgs, masks)
    monkeypatch.setattr(par_module, "CPU_CHUNK_BYTES", 2 * 16 * 16 * 4 * 2)  # two channels per chunk
    torch.testing.assert_close(par(imgs, masks), whole, rtol=0, atol=0)


@pytest.mark.parametrize("channels", ["all", "present"])
def test_refine_matches_reference_loop(channels):
    images, cams = _scene()
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # last image: no class
    par, ref = PAR(DILATIONS, 10), LoopPAR(DILATIONS, 10)
    out = refine_cams_with_bkg(par, images, cams, labels, high=0.7, low=0.25, channels=channels)
    expected = loop_refine(ref, images, cams, labels, 0.7, 0.25)
    assert out.shape == (3, 32, 32) and out.dtype == torch.int64
    assert torch.equal(out, expected)
    # the scene exercises every outcome: background, uncertain, and both classes of image 0
    assert {0, 255, 1, 3} <= set(out[0].unique().tolist())
    assert set(out[1].unique().tolist()) <= {0, 2, 255} and torch.all(out[2] == 0)


def test_refine_uses_truncated_uint8_image():
    images, cams = _scene(b=1, c=2, seed=3)
    labels = torch.tensor([[1.0, 1.0]])
    par = PAR(DILATIONS, 10)
    a = refine_cams_with_bkg(par, images, cams, labels, high=0.7, low=0.25)
    b = refine_cams_with_bkg(par, torch.floor(images) + 0.99, cams, labels, high=0.7, low=0.25)
    assert torch.equal(a, b)


def test_refine_combination_rule():
    """Y = high-variant label; 255 where it is background; 0 only where both variants are background."""
    images, cams = _scene(b=2, c=2, seed=4)
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    par = PAR(DILATIONS, 10)
    out = refine_cams_with_bkg(par, images, cams, labels, high=0.7, low=0.25)
    single = {bg: refine_cams_with_bkg(par, images, cams, labels, high=bg, low=bg) for bg in (0.7, 0.25)}
    label_h, label_l = single[0.7], single[0.25]  # with high == low the rule returns that variant's label
    expected = torch.where(label_h == 0, 255, label_h)
    expected = torch.where((label_h == 0) & (label_l == 0), 0, expected)
    assert torch.equal(out, expected)


def test_absent_channels_get_zero_probability():
    labels = torch.tensor([[0.0, 1.0, 0.0]])
    logits = torch.rand(1, 4, 8, 8)
    keep = torch.cat([torch.ones(1, 1, dtype=torch.bool), labels > 0], dim=1)
    probs = logits.masked_fill(~keep[:, :, None, None], float("-inf")).softmax(dim=1)
    torch.testing.assert_close(probs[:, [0, 2]], logits[:, [0, 2]].softmax(dim=1))
    refined = PAR(DILATIONS, 2)(torch.rand(1, 3, 8, 8), probs)
    assert torch.all(refined[:, [1, 3]] == 0)
    assert F.interpolate(refined, size=(16, 16), mode="bilinear", align_corners=False)[:, [0, 2]].min() > 0
