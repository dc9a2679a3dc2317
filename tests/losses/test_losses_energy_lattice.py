"""Permutohedral lattice filter (MORE_SPEC §2.7.1): hand-worked values, rloss golden outputs, the energy switch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from more.config import load_config
from more.losses import lattice
from more.losses.energy import bilateral_features, bilateral_filter, energy_loss
from more.losses.lattice import _simplex, permutohedral_filter

GOLDEN = Path(__file__).parents[1] / "golden" / "energy_lattice.pt"
# An isolated point at a lattice vertex: the blur's only way back to that vertex is the cycle through the other d
# vertices of its simplex (one step along each of the d + 1 directions, each weighted 1/2), so the vertex ends with
# 1 + 2^-(d+1); slicing multiplies by 1 / (1 + 2^-d). For d = 5: (65/64) (32/33) = 65/66.
ISOLATED = (1 + 2.0**-6) / (1 + 2.0**-5)


def points(coords: list[list[float]], values: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (1, d, 1, P) and maps (1, K, 1, P) for P points given as rows."""
    f = torch.tensor(coords, dtype=torch.float32).T[None, :, None, :]
    v = torch.tensor(values, dtype=torch.float32).T[None, :, None, :]
    return f, v


def test_isolated_point_by_hand():
    assert ISOLATED == pytest.approx(65 / 66)
    features, maps = points([[0.0] * 5], [[1.0, -2.0]])
    out = permutohedral_filter(features=features, maps=maps)
    torch.testing.assert_close(out, torch.tensor([ISOLATED, -2 * ISOLATED]).view(1, 2, 1, 1), rtol=1e-6, atol=0)


def test_coincident_and_distant_points_by_hand():
    # two points at the same vertex share it: each gets ISOLATED * (a + b); a third point 1000 bandwidths away has
    # lattice vertices of its own and gets what it gets alone
    far = [1000.0, -3.3, 0.7, 2.0, 1.5]
    features, maps = points([[0.0] * 5, [0.0] * 5, far], [[1.0], [3.0], [5.0]])
    out = permutohedral_filter(features=features, maps=maps).flatten()
    torch.testing.assert_close(out[:2], torch.tensor([4.0, 4.0]) * ISOLATED, rtol=1e-6, atol=0)
    alone = permutohedral_filter(features=features[..., 2:], maps=maps[..., 2:]).flatten()
    assert out[2] == alone[0] and 0.3 * 5 < alone[0] < ISOLATED * 5  # off a vertex a point keeps less of itself


def test_packed_and_row_indexing_agree():
    torch.manual_seed(3)
    keys, _ = _simplex(torch.randn(300, 5) * 4)
    image = torch.arange(3).repeat_interleave(100)
    packed, packed_nb, m = lattice._index(keys, image)
    rows, rows_nb, m_rows = lattice._index(keys, image, pack_limit=0)
    assert m == m_rows and torch.equal(packed, rows)
    for (a1, a2), (b1, b2) in zip(packed_nb, rows_nb):
        assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert any((a1 < m).any() for a1, _ in packed_nb)  # some neighbours exist, so the look-up is exercised
    assert not any(torch.isin(vertex, packed[:100]).any() for vertex in packed[100:])  # images do not share


def test_barycentric_weights_reconstruct_the_elevated_point():
    torch.manual_seed(0)
    f = torch.randn(500, 5) * 3
    keys, bary = _simplex(f)
    d = 5
    assert torch.all(bary >= -1e-6) and torch.allclose(bary.sum(1), torch.ones(500), atol=1e-5)
    full = torch.cat([keys, -keys.sum(-1, keepdim=True)], dim=-1).double()  # the (d+1)-th coordinate sums to zero
    assert torch.all(full.remainder(d + 1) == full[..., :1].remainder(d + 1))  # each vertex is one colour
    # the elevation E f of Adams et al.: y_j = sum_{i >= j} s_i f_i - j s_{j-1} f_{j-1}
    s = torch.tensor([1 / math.sqrt((i + 2) * (i + 1)) * math.sqrt(2 / 3) * (d + 1) for i in range(d)])
    cf = f.double() * s.double()
    elevated = torch.zeros(500, d + 1, dtype=torch.float64)
    for j in range(d + 1):
        elevated[:, j] = cf[:, j:].sum(1) - (j * cf[:, j - 1] if j > 0 else 0)
    torch.testing.assert_close((bary.double()[..., None] * full).sum(1), elevated, rtol=0, atol=1e-4)


@pytest.mark.parametrize("case", ["tiny", "medium", "reference_sigmas"])
def test_equals_rloss_golden(case):
    fixture = torch.load(GOLDEN, weights_only=True)[case]
    features = bilateral_features(
        fixture["image"], sigma_rgb=float(fixture["sigma_rgb"]), sigma_xy=float(fixture["sigma_xy"])
    )
    out = permutohedral_filter(features=features, maps=fixture["maps"])
    expected = fixture["rloss"]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    # and it is not the exact Gaussian sum: the golden would catch a lattice replaced by bilateral_filter
    exact = bilateral_filter(features=features, maps=fixture["maps"])
    assert (exact - expected).abs().max() > 0.05 * expected.abs().max()


def test_linear_in_the_maps_and_one_lattice_per_image():
    torch.manual_seed(1)
    image = torch.rand(2, 3, 9, 11) * 255
    features = bilateral_features(image, sigma_rgb=15.0, sigma_xy=4.0)
    a, b = torch.rand(2, 2, 9, 11), torch.rand(2, 2, 9, 11)
    both = permutohedral_filter(features=features, maps=2 * a - 3 * b)
    expected = 2 * permutohedral_filter(features=features, maps=a) - 3 * permutohedral_filter(features=features, maps=b)
    torch.testing.assert_close(both, expected, rtol=1e-4, atol=1e-4)
    alone = permutohedral_filter(features=features[1:], maps=a[1:])
    torch.testing.assert_close(permutohedral_filter(features=features, maps=a)[1:], alone, rtol=1e-6, atol=1e-6)


def _case():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    image = torch.rand(2, 3, 16, 20) * 255
    target = torch.randint(0, 3, (2, 16, 20))
    target[torch.rand(2, 16, 20) < 0.3] = 255
    return logits, image, target


def test_lattice_energy_value_and_gradient():
    logits, image, target = _case()
    weight, sigma_rgb, sigma_xy = 1e-3, 15.0, 6.0
    value = energy_loss(
        seg_logits=logits, image=image, target=target, sigma_rgb=sigma_rgb, sigma_xy=sigma_xy, weight=weight
    )
    value.backward()
    # independent path: x0.5 bilinear is a 2x2 mean, nearest takes the even pixels; then rloss's formula
    probs = F.interpolate(logits, size=(16, 20), mode="bilinear", align_corners=False).softmax(1)
    small = F.avg_pool2d(probs, 2)
    small_image, small_target = image[:, :, ::2, ::2], target[:, ::2, ::2]
    gate = 1.0 - small.detach().max(1).values
    gate[small_target == 255] = 1.0
    features = bilateral_features(small_image, sigma_rgb=sigma_rgb, sigma_xy=sigma_xy * 0.5)
    filtered = permutohedral_filter(features=features, maps=small.detach()) * gate[:, None]
    assert value.item() == pytest.approx((-weight * (small.detach() * filtered).sum() / 2).item(), rel=1e-5)
    (expected,) = torch.autograd.grad(small, logits, grad_outputs=-2.0 * weight * filtered / 2)
    torch.testing.assert_close(logits.grad, expected, rtol=1e-4, atol=1e-6 * expected.abs().max().item())
    assert expected.abs().max() > 0


def test_the_switch_changes_the_loss_and_rejects_unknown_filters():
    logits, image, target = _case()
    base = dict(seg_logits=logits, image=image, target=target, sigma_xy=12.0, weight=1.0)
    lattice, exact = energy_loss(**base, filter="lattice"), energy_loss(**base, filter="exact")
    assert lattice.item() == energy_loss(**base).item()  # the reference's filter is the default
    assert 0.2 < lattice.item() / exact.item() < 0.9  # the lattice's kernel is narrower in effect, not a rounding
    with pytest.raises(ValueError, match="energy filter 'gauss'"):
        energy_loss(**base, filter="gauss")


def test_fidelity_selects_the_filter():
    assert load_config(overrides=["fidelity=reference"]).loss.energy_filter == "lattice"
    assert load_config(overrides=["fidelity=paper"]).loss.energy_filter == "exact"
    assert load_config(overrides=["fidelity=reference", "loss.energy_filter=exact"]).loss.energy_filter == "exact"
    with pytest.raises(ValueError, match="energy_filter"):
        load_config(overrides=["loss.energy_filter=gauss"])


@pytest.mark.parametrize(("overrides", "expected"), [([], "lattice"), (["loss.energy_filter=exact"], "exact")])
def test_the_trainer_passes_the_filter(tiny_root, tmp_path, monkeypatch, overrides, expected):
    from tiny_config import TINY

    import more.train.step as step
    from more.train import train

    seen = []
    real = step.energy_loss

    def recording(**kw):
        seen.append(kw["filter"])
        return real(**kw)

    monkeypatch.setattr(step, "energy_loss", recording)
    cfg = load_config(
        "synthetic",
        [*TINY, f"data.root={tiny_root}", f"runtime.out_dir={tmp_path}", "train.max_iters=3", "train.eval_every=100"]
        + ["train.ckpt_every=100", "loss.seg_start=0", *overrides],
    )
    train(cfg, run_dir=tmp_path / "run", log=lambda _: None)
    assert seen and set(seen) == {expected}
