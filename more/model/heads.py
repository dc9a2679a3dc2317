"""Classification heads (CAM) and the token-similarity localization map LAM (MORE_SPEC §1.3, §1.4).

* :class:`CamClassifier`: a 1×1 conv D -> C without bias. Image logits pool first (global *max* over space of the
  feature map), then classify; the CAM is the same conv applied at every position (no ReLU here).
* :func:`lam`: class-token / patch-token similarity per position, a plain dot product in the reference (§1.4) or
  a cosine similarity as the paper describes (§7.6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LAM_MODES = ("dot", "cosine")


class CamClassifier(nn.Module):
    """1×1 conv classifier over a (B, D, h, w) feature map (PyTorch default init, like the reference).

    Args:
        dim: feature width D.
        num_classes: C foreground classes.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, num_classes, kernel_size=1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Image logits: global max pooling of the features, then the 1×1 conv (§1.3: pool first).

        Args:
            features: (B, D, h, w).

        Returns:
            (B, C) logits.
        """
        pooled = F.adaptive_max_pool2d(features, 1)  # (B, D, 1, 1)
        return self.conv(pooled).flatten(1)  # (B, C)

    def cam(self, features: torch.Tensor) -> torch.Tensor:
        """Class activation maps: the 1×1 conv at every position, no ReLU (§1.3). (B, D, h, w) -> (B, C, h, w)."""
        return self.conv(features)


def lam(features: torch.Tensor, tokens: torch.Tensor, mode: str = "dot") -> torch.Tensor:
    """Localization map from class tokens and patch features.

    Args:
        features: (B, D, h, w) final patch tokens (F4).
        tokens: (B, C, D) class tokens (after GCR when it is enabled).
        mode: ``dot`` (reference, §1.4: Σ_d F4·Q, unnormalised) or ``cosine`` (paper, §7.6: L2-normalised both).

    Returns:
        (B, C, h, w), before any min-max normalisation.
    """
    if mode == "cosine":  # §7.6: the paper's cosine similarity
        features = F.normalize(features, dim=1)
        tokens = F.normalize(tokens, dim=-1)
    elif mode != "dot":
        raise ValueError(f"lam mode={mode!r}: must be one of {', '.join(LAM_MODES)}")
    return torch.einsum("bdhw,bcd->bchw", features, tokens)
