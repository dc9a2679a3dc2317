"""Class-token diversity loss L_mct (paper Eq. (10), MORE_SPEC §2.2; MCTformer+ token contrast).

Every class token is its own positive and every other class token a negative. It is applied to all C tokens
whatever the image labels are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mct_loss(*, tokens: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Cross-entropy of cosine similarities between class tokens with target "token i <-> itself".

    # §7.8: only the token-contrast part of MCTformer+ is used; the token-mean classification term is disabled.

    Args:
        tokens: post-GCR class tokens, shape (B, C, D).
        temperature: softmax temperature (0.07 in the reference, hard-coded there).

    Returns:
        Scalar loss averaged over B*C (ln C when all tokens are identical).
    """
    with torch.autocast(device_type=tokens.device.type, enabled=False):
        q = F.normalize(tokens.float(), dim=-1)  # (B, C, D)
        sim = q @ q.transpose(1, 2) / temperature  # (B, C, C), symmetric
        b, c, _ = tokens.shape
        target = torch.arange(c, device=tokens.device).expand(b, c)  # (B, C)
        # The reference passes (B, C, C) with the class axis at dim 1; S is symmetric so this is the row-wise CE.
        return F.cross_entropy(sim, target)
