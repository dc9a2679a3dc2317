"""L_cre (Eq. 7) and L_ure (Eq. 8-9): hand values, loop equivalence with the reference's loops, gradient rules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from more.losses import cre_loss, select_uncertain_tokens, ure_loss
from more.losses.lir import ure_crop_shape

# ---------------------------------------------------------------------------------------------------------------
# Plain implementations mirroring the reference's loops (model/losses.py CRELoss_neg / URELoss_neg)
# ---------------------------------------------------------------------------------------------------------------


def cre_loop(tokens, features, mask, labels, temperature, norm="reference", normalize_patches=False):
    """Loops over images and present classes with the naive exp form, in float64."""
    b = mask.shape[0]
    q = F.normalize(tokens.double(), p=2, dim=2, eps=1e-8)
    p = features.detach().double()
    if normalize_patches:
        p = F.normalize(p, p=2, dim=1, eps=1e-8)
    logits = torch.exp(torch.matmul(q, p.reshape(b, p.shape[1], -1)) / temperature)
    total, pairs_loss, pairs = 0.0, 0.0, 0.0
    for i in range(b):
        for idx in torch.where(labels[i] == 1)[0].tolist():
            logit = logits[i, idx, :]
            loss = -torch.log(logit / (logit.sum() + 1e-4))
            flag = (mask[i] == idx + 1).flatten().double()
            total = total + (flag * loss).sum() / (flag.sum() + 1e-4)
            pairs_loss = pairs_loss + (flag * loss).sum()
            pairs = pairs + flag.sum().item()
    if norm == "reference":
        return total / b
    return pairs_loss / pairs if pairs > 0 else torch.zeros(())


def ure_loop(tokens, features, mask, labels, *, kernel, phi, num_tokens, strict, use_abs, fallback, offset, scores):
    """``uncertain_kernel_search`` with per-position window slices; random choices replayed from ``scores``."""
    p = F.normalize(features, p=2, dim=1, eps=1e-8)
    q = F.normalize(tokens, p=2, dim=2, eps=1e-8).detach()
    roi = torch.zeros_like(mask)
    roi[mask == 255] = 1
    roi[(mask >= 1) & (mask != 255)] = 2
    b, _, h, w = features.shape
    margin = kernel // 2
    total, n = 0.0, 0
    for i in range(b):
        crop = roi[i, margin : h - margin, margin : w - margin]
        chosen = []
        for r, c in (crop == 1).nonzero().tolist():
            window_mean = roi[i, r : r + kernel, c : c + kernel].sum() / (kernel * kernel)
            if (window_mean > phi) if strict else (window_mean >= phi):
                chosen.append((r, c))

        def by_score(rc, i=i):
            return -scores[i, rc[0], rc[1]].item()

        if len(chosen) > num_tokens:
            chosen = sorted(chosen, key=by_score)[:num_tokens]
        elif fallback:
            add = (num_tokens - len(chosen)) // 4
            pool = (crop == 2).nonzero().tolist()
            if len(pool) < add:
                pool = (crop >= 0).nonzero().tolist()
            chosen += sorted(pool, key=by_score)[:add]
        for r, c in chosen:
            rr, cc = (r, c) if offset == "reference" else (r + margin, c + margin)
            sim = q[i] @ p[i, :, rr, cc]
            if use_abs:
                sim = sim.abs()
            y, y_neg = labels[i], (labels[i] == 0).float()
            total = total + 0.5 * (1 - (y * sim).sum() / (y.sum() + 1)) + 0.5 * (y_neg * sim).sum() / (y_neg.sum() + 1)
            n += 1
    return total / n if n else torch.zeros(())


def random_case(generator, b, c, d, h, w, p_uncertain, p_bg):
    tokens = torch.randn(b, c, d, generator=generator)
    features = torch.randn(b, d, h, w, generator=generator)
    mask = torch.randint(1, c + 1, (b, h, w), generator=generator)
    u = torch.rand(b, h, w, generator=generator)
    mask[u < p_bg] = 0
    mask[(u >= p_bg) & (u < p_bg + p_uncertain)] = 255
    labels = (torch.rand(b, c, generator=generator) < 0.5).float()
    labels[:, 0] = 1.0
    return tokens, features, mask, labels


# ---------------------------------------------------------------------------------------------------------------
# L_cre
# ---------------------------------------------------------------------------------------------------------------


def _cre_hand_case():
    tokens = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2): normalised to e_x and e_y
    features = torch.tensor([[0.0, math.log(2.0), math.log(3.0)], [0.0, 0.0, 0.0]]).view(1, 2, 1, 3)
    mask = torch.tensor([[[1, 2, 1]]])
    return tokens, features, mask


def test_cre_by_hand_reference_and_paper():
    tokens, features, mask = _cre_hand_case()
    labels = torch.tensor([[1.0, 1.0]])
    # class 1: exp Z = (1, 2, 3), sum 6, positives j = 0, 2; class 2: exp Z = (1, 1, 1), sum 3, positive j = 1
    l0, l2 = math.log(6.0001 / 1), math.log(6.0001 / 3)
    l1 = math.log(3.0001 / 1)
    reference = (l0 + l2) / (2 + 1e-4) + l1 / (1 + 1e-4)
    paper = (l0 + l2 + l1) / 3
    args = dict(tokens=tokens, features=features, mask=mask, labels=labels, temperature=1.0)
    assert cre_loss(**args).item() == pytest.approx(reference, rel=1e-5)
    assert cre_loss(**args, norm="paper").item() == pytest.approx(paper, rel=1e-5)
    absent = dict(args, labels=torch.tensor([[1.0, 0.0]]))
    assert cre_loss(**absent).item() == pytest.approx((l0 + l2) / (2 + 1e-4), rel=1e-5)
    # normalised patches: p = (0, 1, 1) along x for class 1 -> exp Z = (1, e, e)
    e = math.e
    expected = (math.log(1 + 2 * e + 1e-4) + math.log((1 + 2 * e + 1e-4) / e)) / (2 + 1e-4)
    assert cre_loss(**absent, normalize_patches=True).item() == pytest.approx(expected, rel=1e-5)


def test_cre_empty_masks_give_zero():
    tokens, features, _ = _cre_hand_case()
    mask = torch.tensor([[[0, 255, 0]]])
    for norm in ("reference", "paper"):
        value = cre_loss(
            tokens=tokens, features=features, mask=mask, labels=torch.ones(1, 2), temperature=0.5, norm=norm
        )
        assert value.item() == 0.0


@pytest.mark.parametrize("classes", ["all", "present"])
@pytest.mark.parametrize("norm", ["reference", "paper"])
@pytest.mark.parametrize("normalize_patches", [False, True])
def test_cre_equals_loop(norm, normalize_patches, classes):
    generator = torch.Generator().manual_seed(3)
    for case in range(6):
        b, c, d, h, w = 3, 4, 5, 4 + case, 5
        tokens, features, mask, labels = random_case(generator, b, c, d, h, w, p_uncertain=0.3, p_bg=0.2)
        if case == 1:
            labels[1] = 0.0  # an image without any present class
        if case == 2:
            mask[0] = 255  # an empty mask
        temperature = (0.1, 0.5, 1.0)[case % 3]
        expected = cre_loop(tokens, features, mask, labels, temperature, norm, normalize_patches)
        value = cre_loss(
            tokens=tokens,
            features=features,
            mask=mask,
            labels=labels,
            temperature=temperature,
            norm=norm,
            normalize_patches=normalize_patches,
            classes=classes,
        )
        assert value.item() == pytest.approx(float(expected), rel=1e-4, abs=1e-5), case


def test_cre_present_rows_equal_all_rows_with_gradients():
    generator = torch.Generator().manual_seed(8)
    tokens, features, mask, labels = random_case(generator, 4, 6, 8, 7, 7, p_uncertain=0.2, p_bg=0.2)
    labels.zero_()
    labels[0, [1, 4]] = 1.0  # 2, 1, 0 and 3 present classes: rows are padded to 3 with masked absent classes
    labels[1, 5] = 1.0
    labels[3, [0, 2, 3]] = 1.0
    grads = {}
    for classes in ("all", "present"):
        leaf = tokens.clone().requires_grad_(True)
        value = cre_loss(tokens=leaf, features=features, mask=mask, labels=labels, temperature=0.5, classes=classes)
        value.backward()
        grads[classes] = (value.detach(), leaf.grad)
    assert grads["present"][0].item() == pytest.approx(grads["all"][0].item(), rel=1e-6)
    torch.testing.assert_close(grads["present"][1], grads["all"][1])
    assert grads["all"][1][2].abs().sum() == 0 and grads["all"][1][0, 1].abs().sum() > 0
    # no present class anywhere: zero loss and a zero gradient, not an error
    leaf = tokens.clone().requires_grad_(True)
    none = cre_loss(tokens=leaf, features=features, mask=mask, labels=torch.zeros_like(labels), temperature=0.5,
                    classes="present")
    none.backward()
    assert none.item() == 0.0 and (leaf.grad is None or leaf.grad.abs().sum() == 0)


def test_cre_gradient_reaches_tokens_only():
    generator = torch.Generator().manual_seed(4)
    tokens, features, mask, labels = random_case(generator, 2, 3, 4, 5, 5, p_uncertain=0.2, p_bg=0.2)
    tokens.requires_grad_(True)
    features.requires_grad_(True)
    cre_loss(tokens=tokens, features=features, mask=mask, labels=labels, temperature=0.5).backward()
    assert features.grad is None
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0


def test_cre_bf16_autocast_large_norms_is_finite_and_matches_fp32():
    generator = torch.Generator().manual_seed(5)
    tokens, features, mask, labels = random_case(generator, 2, 3, 16, 6, 6, p_uncertain=0.2, p_bg=0.2)
    features = 1000.0 * F.normalize(features, dim=1)  # |p| = 1000, tau = 0.1: Z up to 1e4
    q = F.normalize(tokens, dim=-1)
    assert torch.isinf(torch.exp(torch.einsum("bcd,bdl->bcl", q, features.flatten(2)) / 0.1)).any()
    args = dict(tokens=tokens, features=features, mask=mask, labels=labels, temperature=0.1)
    fp32 = cre_loss(**args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = cre_loss(**args)
    assert torch.isfinite(bf16) and bf16.item() > 0
    assert bf16.item() == pytest.approx(fp32.item(), rel=1e-4)


def test_cre_rejects_unknown_norm():
    tokens, features, mask = _cre_hand_case()
    with pytest.raises(ValueError):
        cre_loss(tokens=tokens, features=features, mask=mask, labels=torch.ones(1, 2), temperature=1.0, norm="x")
    with pytest.raises(ValueError, match="classes"):
        cre_loss(tokens=tokens, features=features, mask=mask, labels=torch.ones(1, 2), temperature=1.0, classes="x")


# ---------------------------------------------------------------------------------------------------------------
# L_ure
# ---------------------------------------------------------------------------------------------------------------


def _ure_hand_case():
    """4x4 grid, d = 2 (margin 1, crop roi[1:3, 1:3]): one uncertain candidate at crop (0, 0), no foreground in crop."""
    mask = torch.tensor([[[1, 1, 0, 0], [1, 255, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    features = torch.zeros(1, 2, 4, 4)
    features[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    features[0, :, 1, 1] = torch.tensor([0.0, 3.0])
    features[0, :, 2, 2] = torch.tensor([1.0, 1.0])
    tokens = torch.tensor([[[1.0, 0.0], [0.0, -2.0]]])  # q1 = e_x, q2 = -e_y
    labels = torch.tensor([[1.0, 0.0]])
    scores = torch.tensor([[[0.1, 0.2], [0.3, 0.9]]])  # the fallback picks crop (1, 1) first
    return dict(tokens=tokens, features=features, mask=mask, labels=labels, kernel=2, scores=scores)


def test_ure_by_hand_every_switch():
    case = _ure_hand_case()
    # window roi[0:2, 0:2] = [[2, 2], [2, 1]] -> mean 1.75 >= 1.2: candidate, token at (0, 0) = e_x.
    # n = 1 -> floor((8 - 1) / 4) = 1 extra; no foreground in the crop -> any crop position -> crop (1, 1).
    # e_x: s = (1, 0) -> 0.5 * (1 - 1/2) + 0 = 0.25; token (1, 1) = e_y: s = (0, 1) -> 0.5 + 0.5 * 1/2 = 0.75
    assert ure_loss(**case).item() == pytest.approx(0.5, rel=1e-6)
    # cos instead of |cos|: e_y . q2 = -1 -> 0.5 - 0.25 = 0.25
    assert ure_loss(**case, use_abs=False).item() == pytest.approx(0.25, rel=1e-6)
    assert ure_loss(**case, fallback=False).item() == pytest.approx(0.25, rel=1e-6)
    # centred: tokens at (1, 1) (0.75) and (2, 2) = (1, 1)/sqrt2: s = (a, a), a = 1/sqrt2 -> 0.5
    assert ure_loss(**case, token_offset="centered").item() == pytest.approx(0.625, rel=1e-6)
    # phi = 1.75: ">=" keeps the candidate, ">" drops it -> n = 0 -> 2 extra tokens: crop (1, 1) and (1, 0)
    assert ure_loss(**case, phi=1.75).item() == pytest.approx(0.5, rel=1e-6)
    # crop (1, 0) -> token (1, 0) = 0 vector: s = 0 -> 0.5; with (1, 1): (0.75 + 0.5) / 2
    assert ure_loss(**case, phi=1.75, strict=True).item() == pytest.approx(0.625, rel=1e-6)
    assert ure_loss(**case, phi=1.8).item() == pytest.approx(0.625, rel=1e-6)


def test_ure_selection_counts_and_caps():
    mask = torch.full((2, 8, 8), 255)
    mask[1] = 0
    selection = select_uncertain_tokens(mask=mask, kernel=2, phi=1.0, num_tokens=4, generator=torch.Generator())
    # image 0: all 36 crop positions pass (mean 1.0 >= 1.0) -> 4 kept; image 1: none -> 1 fallback token
    assert selection.num_candidates.tolist() == [36, 0]
    assert selection.valid.sum(-1).tolist() == [4, 1]
    assert selection.index.shape == (2, 5)


def test_ure_nothing_selected_gives_zero():
    features = torch.randn(1, 3, 6, 6, requires_grad=True)
    mask = torch.full((1, 6, 6), 255)
    value = ure_loss(
        tokens=torch.randn(1, 2, 3),
        features=features,
        mask=mask,
        labels=torch.ones(1, 2),
        kernel=2,
        phi=2.0,
        num_tokens=3,
    )  # N < 4: no fallback tokens
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


URE_CASES = [
    # (h, w, kernel, phi, N, strict, p_uncertain, p_bg)
    (8, 8, 2, 1.0, 8, False, 0.4, 0.2),
    (10, 9, 3, 1.2, 4, True, 0.5, 0.1),
    (12, 12, 6, 1.2, 8, False, 0.5, 0.1),  # many candidates: n > N
    (12, 11, 5, 1.5, 2, False, 0.3, 0.3),
    (9, 9, 4, 0.8, 12, False, 0.0, 0.4),  # no uncertain pixels: fallback only
    (9, 10, 3, 1.0, 8, False, 1.0, 0.0),  # all uncertain, no foreground: fallback from all crop positions
    (11, 11, 7, 1.2, 8, True, 0.4, 0.2),
    (10, 10, 2, 0.5, 8, False, 0.1, 0.9),  # few candidates and (almost) no foreground for the fallback
    (28, 28, 6, 1.2, 8, False, 0.45, 0.25),  # the VOC grid
]


@pytest.mark.parametrize("case", URE_CASES)
@pytest.mark.parametrize("offset", ["reference", "centered"])
def test_ure_equals_loop(case, offset):
    h, w, kernel, phi, num_tokens, strict, p_uncertain, p_bg = case
    generator = torch.Generator().manual_seed(h * 100 + w + kernel)
    tokens, features, mask, labels = random_case(generator, 3, 4, 6, h, w, p_uncertain, p_bg)
    if p_uncertain > 0 and p_bg < 0.3:
        mask[1, :, : w // 2] = 0  # a half-background image
    if p_bg >= 0.8:
        mask[1, 1:-1, 1:-1] = 0  # no candidate at all
        mask[2, h // 2, w // 2] = 1  # a single foreground pixel: enough for 1 fallback token, not for 2
    scores = torch.rand((3, *ure_crop_shape(h, w, kernel)), generator=generator)
    for use_abs, fallback in [(True, True), (False, True), (True, False)]:
        kwargs = dict(kernel=kernel, phi=phi, num_tokens=num_tokens, strict=strict, use_abs=use_abs, fallback=fallback)
        expected = ure_loop(tokens, features, mask, labels, **kwargs, offset=offset, scores=scores)
        value = ure_loss(
            tokens=tokens, features=features, mask=mask, labels=labels, **kwargs, token_offset=offset, scores=scores
        )
        assert value.item() == pytest.approx(float(expected), rel=1e-5, abs=1e-6), (use_abs, fallback)


def test_ure_gradient_reaches_features_only():
    generator = torch.Generator().manual_seed(7)
    tokens, features, mask, labels = random_case(generator, 2, 3, 4, 10, 10, p_uncertain=0.5, p_bg=0.1)
    tokens.requires_grad_(True)
    features.requires_grad_(True)
    ure_loss(
        tokens=tokens, features=features, mask=mask, labels=labels, kernel=3, phi=1.0, generator=generator
    ).backward()
    assert tokens.grad is None
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_ure_generator_reproducible_and_scores_shape_checked():
    generator = torch.Generator().manual_seed(8)
    tokens, features, mask, labels = random_case(generator, 2, 3, 4, 12, 12, p_uncertain=0.6, p_bg=0.1)
    args = dict(tokens=tokens, features=features, mask=mask, labels=labels, kernel=2, phi=1.0, num_tokens=2)
    first = ure_loss(**args, generator=torch.Generator().manual_seed(1))
    again = ure_loss(**args, generator=torch.Generator().manual_seed(1))
    assert first.item() == again.item()
    with pytest.raises(ValueError, match="scores"):
        ure_loss(**args, scores=torch.rand(2, 12, 12))


def test_ure_bf16_autocast_is_finite():
    generator = torch.Generator().manual_seed(9)
    tokens, features, mask, labels = random_case(generator, 2, 3, 8, 10, 10, p_uncertain=0.5, p_bg=0.1)
    scores = torch.rand(2, 8, 8, generator=generator)
    args = dict(tokens=tokens, features=1000.0 * features, mask=mask, labels=labels, kernel=3, phi=1.0, scores=scores)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = ure_loss(**args)
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(ure_loss(**args).item(), rel=1e-5)
