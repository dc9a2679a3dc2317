"""GCR against a plain per-(b, c) loop of the §1.5 formulas, its switches, K clamping and gradient paths."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from more.model.gcr import GCR

B, C, L, D = 2, 4, 6, 8


def loop_gcr(gcr: GCR, class_tokens: torch.Tensor, patch_tokens: torch.Tensor) -> torch.Tensor:
    """MORE_SPEC §1.5 (and the paper variants) written out per image and per class token, one neighbour at a time."""
    out = torch.empty_like(class_tokens)
    for b in range(class_tokens.shape[0]):
        tails_in = patch_tokens[b]
        if gcr.candidates == "classes_and_patches":
            tails_in = torch.cat([class_tokens[b], patch_tokens[b]])
        tails = tails_in @ gcr.tail_proj.weight.T + gcr.tail_proj.bias  # (M, D)
        for c in range(class_tokens.shape[1]):
            token = class_tokens[b, c]
            head = gcr.head_proj.weight @ token + gcr.head_proj.bias  # (D,)
            if gcr.similarity == "dot":
                scores = torch.stack([(head / math.sqrt(head.numel())) @ t for t in tails])
            else:
                scores = torch.stack([head @ t / (head.norm() * t.norm()) for t in tails])
            k = min(gcr.top_k, len(tails))
            order = sorted(range(len(tails)), key=lambda j: -float(scores[j]))[:k]
            top = scores[order]
            rel = torch.exp(top - top.max()) / torch.exp(top - top.max()).sum()  # Eq. (1)
            omegas = []
            for n, j in enumerate(order):
                edge = (1 - rel[n]) * head + rel[n] * tails[j]  # Eq. (3)
                gate = torch.tanh(head + edge)
                if gcr.weighting == "dot":
                    omegas.append((tails[j] * gate).sum())  # Eq. (4)
                else:
                    omegas.append(tails[j].sum() * gate.sum())  # §7.17: the reference's product of sums
            omega = torch.stack(omegas)
            weights = torch.exp(omega - omega.max()) / torch.exp(omega - omega.max()).sum()
            knowledge = sum(weights[n] * tails[j] for n, j in enumerate(order))
            w1, b1, w2, b2 = gcr.linear1.weight, gcr.linear1.bias, gcr.linear2.weight, gcr.linear2.bias
            if gcr.fusion == "reference":
                s = torch.nn.functional.leaky_relu(w1 @ (0.1 * (head + knowledge) + token) + b1, 0.01)
                p = torch.nn.functional.leaky_relu(w2 @ (0.1 * (head * knowledge) + token) + b2, 0.01)
                v = s + p
                mean, var = v.mean(), ((v - v.mean()) ** 2).mean()
                out[b, c] = (v - mean) / torch.sqrt(var + 1e-5) * gcr.norm.weight + gcr.norm.bias
            else:
                s = torch.nn.functional.leaky_relu(w1 @ (head + knowledge) + b1, 0.01)
                p = torch.nn.functional.leaky_relu(w2 @ (knowledge * head) + b2, 0.01)
                out[b, c] = s + p
    return out


def make_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(B, C, D, dtype=torch.float64), torch.randn(B, L, D, dtype=torch.float64)


def randomize(gcr: GCR) -> GCR:
    """Non-trivial LayerNorm affine parameters so the test sees them."""
    if gcr.norm is not None:
        torch.nn.init.normal_(gcr.norm.weight)
        torch.nn.init.normal_(gcr.norm.bias)
    return gcr.double()


SWITCHES = list(itertools.product(["classes_and_patches", "patches"], ["dot", "cosine"], ["reference", "paper"],
                                  ["sum_product", "dot"]))


@pytest.mark.parametrize(("candidates", "similarity", "fusion", "weighting"), SWITCHES)
def test_matches_the_plain_loop(candidates: str, similarity: str, fusion: str, weighting: str) -> None:
    gcr = randomize(GCR(D, top_k=3, candidates=candidates, similarity=similarity, fusion=fusion, weighting=weighting))
    tokens, patches = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(gcr(tokens, patches), loop_gcr(gcr, tokens, patches), rtol=1e-10, atol=1e-10)


def test_reference_defaults() -> None:
    gcr = GCR(D, top_k=2)
    assert (gcr.candidates, gcr.similarity, gcr.fusion, gcr.weighting) == (
        "classes_and_patches", "dot", "reference", "sum_product")
    assert gcr.norm is not None and gcr.norm.eps == 1e-5
    assert not hasattr(gcr, "_fc1")
    assert GCR(D, top_k=2, fusion="paper").norm is None


@pytest.mark.parametrize("switch", [{"candidates": "patches"}, {"similarity": "cosine"}, {"fusion": "paper"},
                                    {"weighting": "dot"}])
def test_every_switch_changes_the_output(switch: dict) -> None:
    base = randomize(GCR(D, top_k=3))
    other = randomize(GCR(D, top_k=3, **switch))
    other.load_state_dict(base.state_dict(), strict=False)  # same weights; paper fusion has no norm
    tokens, patches = make_inputs()
    with torch.no_grad():
        assert not torch.allclose(base(tokens, patches), other(tokens, patches))


def test_top_k_changes_the_output() -> None:
    gcr = randomize(GCR(D, top_k=2))
    tokens, patches = make_inputs()
    with torch.no_grad():
        first = gcr(tokens, patches)
        gcr.top_k = 5
        assert not torch.allclose(first, gcr(tokens, patches))


@pytest.mark.parametrize(("candidates", "count"), [("classes_and_patches", C + L), ("patches", L)])
def test_k_is_clamped_to_the_candidates(candidates: str, count: int) -> None:
    gcr = randomize(GCR(D, top_k=1000, candidates=candidates))
    tokens, patches = make_inputs()
    with torch.no_grad():
        big = gcr(tokens, patches)
        gcr.top_k = count
        torch.testing.assert_close(big, gcr(tokens, patches), rtol=0, atol=0)


def test_no_gradient_into_patches_and_gradient_into_class_tokens() -> None:
    gcr = GCR(D, top_k=3)
    tokens = torch.randn(B, C, D, requires_grad=True)
    patches = torch.randn(B, L, D, requires_grad=True)
    gcr(tokens, patches).square().sum().backward()
    assert patches.grad is None
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert all(p.grad is not None for p in gcr.parameters())


def test_invalid_switches_rejected() -> None:
    with pytest.raises(ValueError, match="similarity"):
        GCR(D, top_k=2, similarity="l2")
    with pytest.raises(ValueError, match="top_k"):
        GCR(D, top_k=0)
    with pytest.raises(ValueError, match="weighting"):
        GCR(D, top_k=2, weighting="einsum")


def hand_gcr_weights(weighting: str) -> torch.Tensor:
    """The neighbour weights S of one head with two neighbours, computed by hand (D = 2, identity projections)."""
    gcr = GCR(2, top_k=2, candidates="patches", weighting=weighting).double()
    with torch.no_grad():
        for lin in (gcr.head_proj, gcr.tail_proj):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    captured = {}
    gcr.linear1.register_forward_hook(lambda _m, args, _o: captured.setdefault("x", args[0]))
    tokens = torch.tensor([[[0.0, 0.0]]], dtype=torch.float64)  # h = 0
    patches = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]], dtype=torch.float64)
    with torch.no_grad():
        gcr(tokens, patches)
    # h = 0: both scores are 0, r = (1/2, 1/2), e_j = t_j / 2, gate_j = tanh(t_j / 2); input to linear1 is 0.1·a.
    return captured["x"][0, 0] / 0.1


def test_weighting_by_hand() -> None:
    t1, t2 = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([3.0, -1.0], dtype=torch.float64)
    g1, g2 = torch.tanh(t1 / 2), torch.tanh(t2 / 2)
    for weighting, w1, w2 in (("dot", (t1 * g1).sum(), (t2 * g2).sum()),
                              ("sum_product", 3.0 * g1.sum(), 2.0 * g2.sum())):
        s1 = 1.0 / (1.0 + torch.exp(w2 - w1))
        torch.testing.assert_close(hand_gcr_weights(weighting), s1 * t1 + (1 - s1) * t2, rtol=1e-12, atol=1e-12)
