"""Localization-informed Regularization (LIR): L_cre (paper Eq. (7)) and L_ure (Eq. (8)-(9)).

MORE_SPEC §2.3 (``CRELoss_neg``) and §2.4 (``URELoss_neg`` with ``uncertain_kernel_search``), vectorized as in
§8.2-8.3: no Python loop over images, classes or positions and no host synchronisation. Random choices of the
kernel search are expressed through one random score per crop position and ``topk``, so that a test can replay the
reference's loops with the same scores.

Masks are the 3-valued maps of Eq. (6) at feature resolution: 0 background, 1..C class, 255 uncertain.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

IGNORE = 255
ROI_BG, ROI_UNCERTAIN, ROI_FG = 0, 1, 2
_CRE_EPS = 1e-4  # the reference's "+ 1e-4" in the softmax denominator and in the per-class mean
_NORM_EPS = 1e-8


# ---------------------------------------------------------------------------------------------------------------
# L_cre: confident relation enhancement
# ---------------------------------------------------------------------------------------------------------------


def cre_loss(
    *,
    tokens: torch.Tensor,
    features: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    norm: str = "reference",
    normalize_patches: bool = False,
    classes: str = "auto",
) -> torch.Tensor:
    """InfoNCE between each present class token and the patches of its class, all patches as the denominator.

    Args:
        tokens: post-GCR class tokens (gradient flows), shape (B, C, D).
        features: final patch tokens as a map; detached here, shape (B, D, h, w).
        mask: confident-relation map M_c, long with 0 bg, 1..C class, 255 uncertain, shape (B, h, w).
        labels: image-level labels in {0, 1}, shape (B, C). Only present classes contribute.
        temperature: tau (0.5 VOC, 0.1 COCO).
        norm: "reference" = per-class mean over its positives, summed over present classes, averaged over images;
            "paper" = Eq. (7)'s 1/N+ over all positive pairs of the batch (0 when there are none).
        normalize_patches: L2-normalise the patch tokens too (paper: cosine similarity).
        classes: which class rows enter the (B, C, D) x (B, D, L) similarity matmul, the cost of this loss.
            ``"all"``: every class, absent ones masked (no host sync; the GPU default). ``"present"``: only as many
            rows per image as the image with most present classes needs, gathered first (one scalar read from
            the device; on VOC about 1.5 of 20 classes are present, so the matmul shrinks ~7x; the CPU default).
            Absent classes contribute nothing either way, so both give the same loss and gradients up to float
            rounding (the matmul sums in another order: ~1 ulp on the loss).

    Returns:
        Scalar loss (fp32).
    """
    if norm not in ("reference", "paper"):
        raise ValueError(f"norm must be 'reference' or 'paper', got {norm!r}")
    if classes == "auto":
        classes = "present" if tokens.device.type == "cpu" else "all"
    if classes not in ("all", "present"):
        raise ValueError(f"classes must be 'auto', 'all' or 'present', got {classes!r}")
    b, c, d = tokens.shape
    with torch.autocast(device_type=tokens.device.type, enabled=False):
        present = labels > 0  # (B, C)
        class_ids = torch.arange(1, c + 1, device=mask.device).expand(b, c)  # mask value of each row's class
        q = tokens.float()
        if classes == "present":
            k = int(present.sum(1).max())  # the one host read
            rows = present.to(torch.uint8).topk(k, dim=1).indices  # (B, k): present classes first
            q = q.gather(1, rows[..., None].expand(b, k, d))
            present, class_ids = present.gather(1, rows), rows + 1
        q = F.normalize(q, dim=-1, eps=_NORM_EPS)  # (B, C', D)
        # §7.9: the reference detaches the patch tokens and does not normalise them.
        p = features.detach().float().flatten(2)  # (B, D, L)
        if normalize_patches:
            p = F.normalize(p, dim=1, eps=_NORM_EPS)
        logits = q @ p / temperature  # (B, C', L)
        # Eq. (7): -log(exp z_j / (sum_j' exp z_j' + 1e-4)), written with logsumexp so that it cannot overflow.
        log_sum_exp = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B, C', 1)
        log_denominator = torch.logaddexp(log_sum_exp, torch.full_like(log_sum_exp, math.log(_CRE_EPS)))
        nll = log_denominator - logits  # (B, C', L)
        positive = (mask.flatten(1)[:, None, :] == class_ids[:, :, None]) & present[:, :, None]  # (B, C', L)
        positive = positive.float()
        if norm == "reference":
            # §7.9: per-class mean, summed (not averaged) over present classes, averaged over images.
            per_class = (positive * nll).sum(-1) / (positive.sum(-1) + _CRE_EPS)  # (B, C')
            return per_class.sum() / b
        return (positive * nll).sum() / positive.sum().clamp(min=1.0)


# ---------------------------------------------------------------------------------------------------------------
# L_ure: uncertain relation enhancement
# ---------------------------------------------------------------------------------------------------------------


class UncertainSelection(NamedTuple):
    """Tokens chosen by the uncertain kernel search (Eq. (8)) for each image.

    Attributes:
        index: flat index r*w + c into the full (h, w) grid of each slot, shape (B, K) long.
        valid: which slots hold a chosen token, shape (B, K) bool.
        num_candidates: uncertain positions that passed the kernel test (before sampling), shape (B,) long.
    """

    index: torch.Tensor
    valid: torch.Tensor
    num_candidates: torch.Tensor


def ure_roi(mask: torch.Tensor) -> torch.Tensor:
    """ROI codes of the reference's ``mask2roi``: 0 background, 1 uncertain (255), 2 foreground (1..C)."""
    roi = torch.full_like(mask, ROI_BG)
    roi = torch.where(mask == IGNORE, ROI_UNCERTAIN, roi)
    return torch.where((mask >= 1) & (mask != IGNORE), ROI_FG, roi)  # (B, h, w)


def ure_crop_shape(height: int, width: int, kernel: int) -> tuple[int, int]:
    """Shape of the interior crop ``roi[m:h-m, m:w-m]`` (m = kernel // 2) whose positions are candidates."""
    margin = kernel // 2
    return max(height - 2 * margin, 0), max(width - 2 * margin, 0)


def select_uncertain_tokens(
    *,
    mask: torch.Tensor,
    kernel: int = 6,
    phi: float = 1.2,
    num_tokens: int = 8,
    strict: bool = False,
    fallback: bool = True,
    token_offset: str = "reference",
    scores: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> UncertainSelection:
    """Vectorized ``uncertain_kernel_search`` (Eq. (8), MORE_SPEC §2.4, §8.2).

    Candidates are the uncertain positions (r, c) of the crop ``roi[m:h-m, m:w-m]`` whose window
    ``roi[r:r+d, c:c+d]`` (full coordinates, so offsets -m..d-m-1 around the tested pixel (r+m, c+m)) has mean
    >= phi. At most ``num_tokens`` are kept at random; when fewer pass, floor((N - n) / 4) random foreground crop
    positions are added (any crop positions if there are too few foreground ones).

    Args:
        mask: uncertain-relation map M_a, long with 0 bg, 1..C class, 255 uncertain, shape (B, h, w).
        kernel: window size d.
        phi: threshold on the window mean of the ROI codes.
        num_tokens: N, the most uncertain tokens kept per image.
        strict: test "mean > phi" (paper Eq. (8)) instead of the reference's ">=" (§7.10).
        fallback: add the reference's random foreground tokens when n <= N (§7.10).
        token_offset: "reference" takes the token at the window's top-left (r, c), offset (-m, -m) from the tested
            pixel (a reference bug, §7.10); "centered" takes it at the tested pixel (r+m, c+m).
        scores: one random score per crop position, shape (B, h-2m, w-2m); a higher score is picked first.
            Drawn with ``torch.rand(generator=generator)`` when None.
        generator: random generator for ``scores``.

    Returns:
        The chosen flat indices into the (h, w) grid, with a validity mask of N + N // 4 slots per image.
    """
    if token_offset not in ("reference", "centered"):
        raise ValueError(f"token_offset must be 'reference' or 'centered', got {token_offset!r}")
    b, h, w = mask.shape
    margin = kernel // 2
    hc, wc = ure_crop_shape(h, w, kernel)
    device = mask.device
    if scores is None:
        scores = torch.rand((b, hc, wc), generator=generator, device=device)
    elif scores.shape != (b, hc, wc):
        raise ValueError(f"scores must have shape {(b, hc, wc)}, got {tuple(scores.shape)}")
    num_extra = num_tokens // 4 if fallback else 0
    slots = num_tokens + num_extra
    if hc == 0 or wc == 0:  # no interior position: nothing can be selected
        empty = torch.zeros((b, slots), dtype=torch.long, device=device)
        return UncertainSelection(empty, empty.bool(), torch.zeros(b, dtype=torch.long, device=device))

    roi = ure_roi(mask)  # (B, h, w)
    crop = roi[:, margin : margin + hc, margin : margin + wc].flatten(1)  # (B, Lc)
    # Window sums at every top-left position; the crop's (r, c) windows all fit because d <= 2m + 1.
    window_sum = F.avg_pool2d(roi[:, None].float(), kernel, stride=1, divisor_override=1)[:, 0]  # (B, h-d+1, w-d+1)
    window_mean = window_sum[:, :hc, :wc].flatten(1) / (kernel * kernel)  # (B, Lc), exactly as sum / d^2
    passes = window_mean > phi if strict else window_mean >= phi
    candidate = (crop == ROI_UNCERTAIN) & passes  # (B, Lc)
    num_candidates = candidate.sum(-1)  # (B,)
    flat_scores = scores.flatten(1).float()  # (B, Lc), in [0, 1)

    lc = hc * wc
    slot = torch.arange(num_tokens, device=device)
    k_main = min(num_tokens, lc)
    # Valid candidates score >= 0 > -1, so the top n entries are candidates; with n > N a uniform random subset.
    _, main_index = torch.where(candidate, flat_scores, -1.0).topk(k_main, dim=-1)  # (B, k_main)
    main_valid = slot[:k_main][None, :] < num_candidates[:, None].clamp(max=num_tokens)  # (B, k_main)
    indices, valid = [main_index], [main_valid]

    if num_extra > 0:
        # §7.10: keep all n <= N and add floor((N - n) / 4) random foreground tokens.
        add = torch.where(num_candidates <= num_tokens, (num_tokens - num_candidates) // 4, 0)  # (B,)
        foreground = crop == ROI_FG  # (B, Lc)
        too_few = foreground.sum(-1) < add  # (B,)
        pool = foreground | too_few[:, None]  # (B, Lc), all crop positions when too few foreground
        k_extra = min(num_extra, lc)
        _, extra_index = torch.where(pool, flat_scores, -1.0).topk(k_extra, dim=-1)  # (B, k_extra)
        available = torch.minimum(add, pool.sum(-1))  # (B,)
        extra_valid = slot[:k_extra][None, :] < available[:, None]  # (B, k_extra)
        indices.append(extra_index)
        valid.append(extra_valid)

    crop_index = torch.cat(indices, dim=1)  # (B, K)
    rows, cols = crop_index // wc, crop_index % wc
    if token_offset == "centered":
        rows, cols = rows + margin, cols + margin
    flat_index = rows * w + cols  # (B, K), into the full (h, w) grid
    chosen = torch.cat(valid, dim=1)  # (B, K)
    if chosen.shape[1] < slots:  # fewer crop positions than slots: pad with invalid slots
        pad = slots - chosen.shape[1]
        flat_index = torch.cat([flat_index, flat_index.new_zeros((b, pad))], dim=1)
        chosen = torch.cat([chosen, chosen.new_zeros((b, pad))], dim=1)
    return UncertainSelection(flat_index, chosen, num_candidates)


def ure_loss(
    *,
    tokens: torch.Tensor,
    features: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    kernel: int = 6,
    phi: float = 1.2,
    num_tokens: int = 8,
    strict: bool = False,
    use_abs: bool = True,
    fallback: bool = True,
    token_offset: str = "reference",
    scores: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pull the selected uncertain patch tokens towards present class tokens, push them from absent ones (Eq. (9)).

    Per selected token u of image b, with s_k = |u . q_k| (cosines of L2-normalised vectors) and y the labels:
    ``l(u) = 0.5 * (1 - sum_k y_k s_k / (sum y + 1)) + 0.5 * sum_k (1 - y_k) s_k / (sum (1 - y) + 1)``;
    the loss is the mean of l(u) over every selected token of the batch (0 if none). Only the patch features get a
    gradient: the class tokens are detached.

    # §7.10: the paper's Eq. (9) has 1/N+ and 1/N- over pairs and cos, not |cos|; the reference uses ToCo-style
    # 0.5/0.5 weights with +1 denominators per token and |cos| (use_abs=False gives cos).

    Args:
        tokens: post-GCR class tokens (detached here), shape (B, C, D).
        features: final patch tokens as a map (gradient flows), shape (B, D, h, w).
        mask: M_a with 0 bg, 1..C class, 255 uncertain, shape (B, h, w).
        labels: image-level labels in {0, 1}, shape (B, C).
        kernel, phi, num_tokens, strict, fallback, token_offset, scores, generator: see
            :func:`select_uncertain_tokens`.
        use_abs: use |cos| (reference) rather than cos (paper).

    Returns:
        Scalar loss (fp32).
    """
    selection = select_uncertain_tokens(
        mask=mask,
        kernel=kernel,
        phi=phi,
        num_tokens=num_tokens,
        strict=strict,
        fallback=fallback,
        token_offset=token_offset,
        scores=scores,
        generator=generator,
    )
    b, d = features.shape[:2]
    with torch.autocast(device_type=features.device.type, enabled=False):
        # Gather, then normalise: the same as normalising the whole map, for K instead of L columns.
        index = selection.index[:, None, :].expand(b, d, -1)  # (B, D, K)
        u = F.normalize(features.float().flatten(2).gather(2, index), dim=1, eps=_NORM_EPS)  # (B, D, K)
        q = F.normalize(tokens.detach().float(), dim=-1, eps=_NORM_EPS)  # (B, C, D)
        sim = torch.einsum("bdk,bcd->bkc", u, q)  # (B, K, C)
        if use_abs:
            sim = sim.abs()
        y = labels.float()[:, None, :]  # (B, 1, C)
        y_neg = 1.0 - y
        positive = (y * sim).sum(-1) / (y.sum(-1) + 1.0)  # (B, K)
        negative = (y_neg * sim).sum(-1) / (y_neg.sum(-1) + 1.0)  # (B, K)
        per_token = 0.5 * (1.0 - positive) + 0.5 * negative  # (B, K)
        valid = selection.valid.float()  # (B, K)
        return (per_token * valid).sum() / valid.sum().clamp(min=1.0)
