"""Every loss term and its gradients: L_cls, L_mct, L_cre, L_ure (replayed draws), PTC, L_seg, the energy loss.

Inputs are random features / tokens with masks from ``cam_to_label`` of random CAMs, two images, VOC's C = 20.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from more.losses import classification_loss, cre_loss, energy_loss, mct_loss, ptc_loss, seg_loss, ure_loss
from more.losses.ptc import ptc_affinity_mask
from more.pseudo.cam import cam_to_label
from more.train.step import denormalize
from tools.refcheck.common import Reference, Row, approx, exact
from tools.refcheck.replay import ure_scores

C, D, GRID = 20, 32, 28
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
ENERGY_NOTE = "exact-Gaussian stand-in for rloss vs ours with loss.energy_filter=exact (--rloss: the lattice)"
ENERGY_LATTICE_NOTE = "rloss's built lattice vs ours (loss.energy_filter=lattice)"


def _labels(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(2, C)
    labels[0, torch.randperm(C, generator=g)[:3]] = 1
    labels[1, torch.randperm(C, generator=g)[:1]] = 1
    return labels


def _mask(labels: torch.Tensor, seed: int, high: float = 0.7, low: float = 0.25) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cam = F.interpolate(torch.rand(2, C, 7, 7, generator=g), size=(GRID, GRID), mode="bilinear", align_corners=False)
    return cam_to_label(cam, labels, high=high, low=low, ignore_mid=True)


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def _value_and_grad(fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:  # noqa: ANN001
    leaves = [_leaf(t) for t in inputs]
    value = fn(*leaves)
    value.backward()
    return value.detach(), [t.grad if t.grad is not None else torch.zeros_like(t) for t in leaves]


def _pair(name: str, ours, theirs, *inputs: torch.Tensor, tol: float = 1e-5) -> list[Row]:  # noqa: ANN001
    a, ga = _value_and_grad(ours, *inputs)
    b, gb = _value_and_grad(theirs, *inputs)
    return [approx(f"{name}: value", a, b, tol=tol), approx(f"{name}: gradients", ga, gb, tol=tol)]


def checks(ref: Reference) -> list[Row]:
    """Rows for the loss terms."""
    L = ref.losses
    g = torch.Generator().manual_seed(3)
    labels = _labels(1)
    tokens = torch.randn(2, C, D, generator=g)
    features = torch.randn(2, D, GRID, GRID, generator=g)
    logits = torch.randn(2, C, generator=g) * 3
    rows = _pair("L_cls (multilabel soft margin)", lambda z: classification_loss(logits=z, labels=labels),
                 lambda z: F.multilabel_soft_margin_loss(z, labels), logits)
    rows += _pair("L_mct", lambda t: mct_loss(tokens=t), lambda t: L.multi_cls_loss(t, labels), tokens)

    m_cre = _mask(labels, 5, high=0.5)
    ref_cre = L.CRELoss_neg(temp=0.5)
    for mode in ("all", "present"):
        rows += _pair(f"L_cre tau=0.5 (classes={mode})",
                      lambda t, f, mode=mode: cre_loss(tokens=t, features=f, mask=m_cre, labels=labels,
                                                       temperature=0.5, classes=mode),
                      lambda t, f: ref_cre(t, f, m_cre, labels), tokens, features, tol=2e-5)
    big = features * 30  # |p|/tau beyond exp's float32 range: the reference's raw exp overflows
    ours_big = cre_loss(tokens=tokens, features=big, mask=m_cre, labels=labels, temperature=0.1)
    ref_big = L.CRELoss_neg(temp=0.1)(tokens, big, m_cre, labels)
    rows.append(approx("L_cre overflow (q·p/tau > 88)", ours_big, ref_big, note="logsumexp keeps it finite where "
                       f"the reference's raw exp gives {float(ref_big)}", deliberate=True))

    m_ure = _mask(labels, 6)
    ref_ure = L.URELoss_neg(temp=0.5)
    scores = ure_scores(ref, m_ure, seed=123)

    def ref_ure_seeded(t: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(123)
        return ref_ure(t, f, m_ure, labels)

    rows += _pair("L_ure (reference's draws replayed)",
                  lambda t, f: ure_loss(tokens=t, features=f, mask=m_ure, labels=labels, scores=scores),
                  ref_ure_seeded, tokens, features)
    own = ure_loss(tokens=tokens, features=features, mask=m_ure, labels=labels,
                   generator=torch.Generator().manual_seed(9))
    rows.append(approx("L_ure with our own draws", own, ref_ure_seeded(tokens, features), deliberate=True,
                       note="own sampler (random scores + top-k), same distribution as the reference's randperm"))

    m_ptc = _mask(labels, 7)
    rows.append(exact("PTC affinity mask (label_to_aff_mask)", ptc_affinity_mask(m_ptc).long(),
                      ref.camutils.label_to_aff_mask(m_ptc)))
    aff = ref.camutils.label_to_aff_mask(m_ptc)
    rows += _pair("PTC loss", lambda f: ptc_loss(features=f, mask=m_ptc), lambda f: L.get_masked_ptc_loss(f, aff),
                  features)

    seg_logits = torch.randn(2, C + 1, 112, 112, generator=g)
    target = F.interpolate(_mask(labels, 8)[:, None].float(), size=(112, 112), mode="nearest")[:, 0].long()
    rows += _pair("L_seg (bg/fg balanced CE)", lambda z: seg_loss(logits=z, target=target),
                  lambda z: L.get_seg_loss(z, target, ignore_index=255), seg_logits)

    images = torch.randn(2, 3, 112, 112, generator=g)
    layer = L.DenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5)
    small = torch.randn(2, C + 1, 28, 28, generator=g)

    def ref_energy(z: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(z, size=(112, 112), mode="bilinear", align_corners=False)
        return L.get_energy_loss(img=images, logit=up, label=target, img_box=None, loss_layer=layer)[0]

    def our_energy(z: torch.Tensor) -> torch.Tensor:
        return energy_loss(seg_logits=z, image=denormalize(images, MEAN, STD), target=target,
                           filter="lattice" if ref.rloss else "exact")

    note = ENERGY_LATTICE_NOTE if ref.rloss else ENERGY_NOTE
    for row in _pair("energy loss (sigma_rgb 15, sigma_xy 100, x0.5)", our_energy, ref_energy, small, tol=1e-4):
        rows.append(Row(row.component, row.max_abs, row.rel, row.equal, note))
    return rows
