"""Graph Category Representation (GCR): paper Eq. (1)-(5), reference ``model/GCA.py`` (MORE_SPEC §1.5).

Each class token is a head node; tails are candidate nodes (class tokens and detached patch tokens in the
reference, detached patches only in the paper). Every head keeps its top-K tails as neighbours, builds edge
embeddings between head and neighbour (Eq. 3), weights the neighbours through a tanh gate (Eq. 4), aggregates them
and fuses the result with the head (Eq. 5). The whole module is batched: one ``topk`` and one gather, no loops.

Eq. (4) scores neighbour j by the dot product t_jᵀσ(h_i + e_ij) in the paper. The reference's einsum
(``'ijkl,ijkm->ijk'``) has different last letters, so it computes the product of two sums,
(Σ_D t_j)·(Σ_D σ(h_i + e_ij)) (MORE_SPEC §1.5 step 7, §7.17): ``weighting="sum_product"`` reproduces it,
``weighting="dot"`` is the paper's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CANDIDATES = ("classes_and_patches", "patches")
SIMILARITIES = ("dot", "cosine")
FUSIONS = ("reference", "paper")
WEIGHTINGS = ("sum_product", "dot")


class GCR(nn.Module):
    """Graph Category Representation.

    Args:
        dim: token width D.
        top_k: K neighbours per head; clamped to the number of candidates at run time.
        candidates: ``classes_and_patches`` (reference, §7.4) or ``patches`` (paper).
        similarity: ``dot`` (reference, (Eh/√D)·Etᵀ, §7.3) or ``cosine`` (paper).
        fusion: ``reference`` (0.1-scaled residual fusion + LayerNorm, §7.5) or ``paper`` (Eq. 5 as written).
        weighting: ``sum_product`` (reference, (Σ_D t_j)·(Σ_D gate), §7.17) or ``dot`` (paper's Eq. 4, Σ_D t_j ⊙ gate).
        negative_slope: LeakyReLU slope of δ1 and δ2.
    """

    def __init__(
        self,
        dim: int,
        *,
        top_k: int,
        candidates: str = "classes_and_patches",
        similarity: str = "dot",
        fusion: str = "reference",
        weighting: str = "sum_product",
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        for name, value, choices in (("candidates", candidates, CANDIDATES), ("similarity", similarity, SIMILARITIES),
                                     ("fusion", fusion, FUSIONS), ("weighting", weighting, WEIGHTINGS)):
            if value not in choices:
                raise ValueError(f"GCR {name}={value!r}: must be one of {', '.join(choices)}")
        if top_k < 1:
            raise ValueError(f"GCR top_k={top_k}: must be >= 1")
        self.top_k = top_k
        self.candidates = candidates
        self.similarity = similarity
        self.fusion = fusion
        self.weighting = weighting
        self.negative_slope = negative_slope
        self.scale = 1.0 / math.sqrt(dim)
        self.head_proj = nn.Linear(dim, dim)
        self.tail_proj = nn.Linear(dim, dim)
        self.linear1 = nn.Linear(dim, dim)  # w1 of Eq. (5)
        self.linear2 = nn.Linear(dim, dim)  # w2 of Eq. (5)
        # §7.5: the reference ends with a LayerNorm (eps 1e-5, affine); the paper has none.
        self.norm = nn.LayerNorm(dim, eps=1e-5) if fusion == "reference" else None

    def extra_repr(self) -> str:
        return (f"top_k={self.top_k}, candidates={self.candidates}, similarity={self.similarity}, "
                f"fusion={self.fusion}, weighting={self.weighting}")

    def forward(self, class_tokens: torch.Tensor, patch_tokens: torch.Tensor) -> torch.Tensor:
        """Graph-regularized class tokens.

        Args:
            class_tokens: (B, C, D) class tokens after the final LN.
            patch_tokens: (B, L, D) patch tokens after the final LN; used detached (no gradient through the tails).

        Returns:
            (B, C, D) the tokens Q.
        """
        batch, _, dim = class_tokens.shape
        patches = patch_tokens.detach()
        # §7.4: the reference's tails include the class tokens themselves (with each head's own token).
        tails_in = torch.cat((class_tokens, patches), dim=1) if self.candidates == "classes_and_patches" else patches
        heads = self.head_proj(class_tokens)  # (B, C, D) h_i
        tails = self.tail_proj(tails_in)  # (B, M, D) t_j
        num_candidates = tails.shape[1]

        if self.similarity == "dot":  # §7.3: scaled dot product in the reference
            scores = (heads * self.scale) @ tails.transpose(1, 2)  # (B, C, M)
        else:
            scores = F.normalize(heads, dim=-1) @ F.normalize(tails, dim=-1).transpose(1, 2)  # (B, C, M)
        k = min(self.top_k, num_candidates)
        top_scores, top_index = scores.topk(k, dim=-1)  # (B, C, k)  Eq. (2): neighbours N_i
        rel = top_scores.softmax(dim=-1)  # (B, C, k)  Eq. (1): r_i

        # Gather the neighbour tails t_j, j in N_i, as one index_select over the flattened batch.
        offsets = torch.arange(batch, device=top_index.device).view(batch, 1, 1) * num_candidates
        neighbours = tails.reshape(-1, dim).index_select(0, (top_index + offsets).reshape(-1))
        neighbours = neighbours.view(batch, -1, k, dim)  # (B, C, k, D)

        heads_k = heads.unsqueeze(2)  # (B, C, 1, D)
        rel_k = rel.unsqueeze(-1)  # (B, C, k, 1)
        edges = (1 - rel_k) * heads_k + rel_k * neighbours  # (B, C, k, D)  Eq. (3): e_ij
        gate = torch.tanh(heads_k + edges)  # (B, C, k, D)  Eq. (4): σ(h_i + e_ij)
        if self.weighting == "sum_product":  # §7.17: the reference's einsum multiplies the two sums over D
            omega = neighbours.sum(dim=-1) * gate.sum(dim=-1)  # (B, C, k)
        else:
            omega = (neighbours * gate).sum(dim=-1)  # (B, C, k)  Eq. (4): t_jᵀσ(h_i + e_ij)
        weight = omega.softmax(dim=-1)  # (B, C, k)  Eq. (4): S(h_i, e_ij, t_j)
        knowledge = torch.einsum("bck,bckd->bcd", weight, neighbours)  # (B, C, D)  a_i = Σ_j S t_j

        if self.fusion == "reference":
            # §7.5: 0.1 scaling and a residual of the raw tokens inside the linears, then LayerNorm.
            summed = F.leaky_relu(self.linear1(0.1 * (heads + knowledge) + class_tokens), self.negative_slope)
            product = F.leaky_relu(self.linear2(0.1 * (heads * knowledge) + class_tokens), self.negative_slope)
            return self.norm(summed + product)  # (B, C, D)
        summed = F.leaky_relu(self.linear1(heads + knowledge), self.negative_slope)  # Eq. (5): δ1(w1(h_i + a_i))
        product = F.leaky_relu(self.linear2(knowledge * heads), self.negative_slope)  # Eq. (5): δ2(w2(a_i ⊙ h_i))
        return summed + product  # (B, C, D)
