"""Weighted total loss (paper Eq. (10) and L = L_MoRe + gamma * L_seg, plus the regularization terms; MORE_SPEC §2.8).

Every term is reported, weighted and unweighted, so that a term ablated to weight 0 is still logged.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class LossTerms(NamedTuple):
    """The combined loss and every term.

    Attributes:
        total: sum of weight * term over the terms with a non-zero weight (differentiable scalar).
        unweighted: each term's value, detached.
        weighted: each term's weight * value, detached; exactly 0 for a zero weight (even if the term is NaN).
    """

    total: torch.Tensor
    unweighted: dict[str, torch.Tensor]
    weighted: dict[str, torch.Tensor]


def total_loss(*, terms: dict[str, torch.Tensor], weights: dict[str, float]) -> LossTerms:
    """Combine scalar loss terms with their weights.

    A term with weight 0 adds nothing to ``total`` (it is skipped, so a NaN or inf in it cannot leak) but is still
    reported in ``unweighted``. Weights of terms that were not computed are ignored.

    Args:
        terms: scalar loss tensors by name (e.g. "cls", "cls_aux", "mct", "cre", "ure", "ptc", "seg", "energy").
        weights: the weight of each term by the same names; every term needs one.

    Returns:
        :class:`LossTerms`. When every weight is 0, ``total`` is a zero tensor without a graph.

    Raises:
        ValueError: a term has no weight, or a term is not a scalar.
    """
    missing = sorted(set(terms) - set(weights))
    if missing:
        raise ValueError(f"no weight for loss terms {missing}; weights given for {sorted(weights)}")
    if not terms:
        raise ValueError("total_loss needs at least one term")
    for name, value in terms.items():
        if value.dim() != 0:
            raise ValueError(f"loss term {name!r} must be a scalar, got shape {tuple(value.shape)}")
    reference = next(iter(terms.values()))
    total = None
    unweighted: dict[str, torch.Tensor] = {}
    weighted: dict[str, torch.Tensor] = {}
    for name, value in terms.items():
        weight = float(weights[name])
        unweighted[name] = value.detach()
        if weight == 0.0:
            weighted[name] = torch.zeros_like(value.detach(), dtype=torch.float32)
            continue
        contribution = weight * value.float()
        weighted[name] = contribution.detach()
        total = contribution if total is None else total + contribution
    if total is None:
        total = torch.zeros((), device=reference.device, dtype=torch.float32)
    return LossTerms(total=total, unweighted=unweighted, weighted=weighted)
