"""Image-level classification loss L_cls (paper Eq. (10), MORE_SPEC §2.1).

Used for both the main classifier (final patch tokens) and the aux classifier (block-10 patch tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(*, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label soft margin loss: per-class sigmoid BCE averaged over classes and images.

    Args:
        logits: image logits after global max pooling and the 1x1 classifier, shape (B, C).
        labels: image-level labels in {0, 1} (float), shape (B, C); no background entry.

    Returns:
        Scalar loss (fp32).
    """
    return F.multilabel_soft_margin_loss(logits.float(), labels.float())
