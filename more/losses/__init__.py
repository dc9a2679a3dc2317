"""MoRe losses as keyword-only pure functions of tensors (MORE_SPEC §2; paper Eq. (6)-(10)).

| term | function | module |
|---|---|---|
| L_cls, L_cls_aux | :func:`classification_loss` | classification |
| L_mct | :func:`mct_loss` | mct |
| L_cre (Eq. 7) | :func:`cre_loss` | lir |
| L_ure (Eq. 8-9) | :func:`ure_loss` | lir |
| PTC (ToCo) | :func:`ptc_loss`, :func:`ptc_affinity_mask` | ptc |
| L_seg | :func:`seg_loss` | seg |
| dense energy | :func:`energy_loss`, :func:`bilateral_filter` | energy |
| weighted sum | :func:`total_loss` -> :class:`LossTerms` | total |
"""

from more.losses.classification import classification_loss
from more.losses.energy import bilateral_features, bilateral_filter, energy_loss
from more.losses.lir import UncertainSelection, cre_loss, select_uncertain_tokens, ure_loss, ure_roi
from more.losses.mct import mct_loss
from more.losses.ptc import ptc_affinity_mask, ptc_loss
from more.losses.seg import seg_loss
from more.losses.total import LossTerms, total_loss

__all__ = [
    "LossTerms",
    "UncertainSelection",
    "bilateral_features",
    "bilateral_filter",
    "classification_loss",
    "cre_loss",
    "energy_loss",
    "mct_loss",
    "ptc_affinity_mask",
    "ptc_loss",
    "select_uncertain_tokens",
    "seg_loss",
    "total_loss",
    "ure_loss",
    "ure_roi",
]
