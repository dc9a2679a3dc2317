"""The MoRe network, composed from built parts (reference ``model/model_mal.py``, MORE_SPEC §1.3).

``MoRe(backbone, gcr, classifier, aux_classifier, decoder, lam_mode)``: the backbone gives class tokens, final
patch tokens (F4) and block-``aux_layer`` patch tokens (Faux); the classifiers give image logits (max pool, then
1×1 conv) and CAMs; GCR turns the class tokens into the tokens Q used by the LIR losses and LAM; the LargeFOV
decoder segments F4.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from more.model.backbone import MultiClassTokenViT
from more.model.decoder import LargeFOV
from more.model.gcr import GCR
from more.model.heads import LAM_MODES, CamClassifier, lam


class MoReOutput(NamedTuple):
    """Training forward of MoRe."""

    cls_logits: torch.Tensor  # (B, C) main classifier on max-pooled F4
    cls_aux_logits: torch.Tensor  # (B, C) aux classifier on max-pooled Faux
    seg_logits: torch.Tensor  # (B, C+1, h, w) decoder on F4
    features: torch.Tensor  # (B, D, h, w) F4: final patch tokens
    aux_features: torch.Tensor  # (B, D, h, w) Faux: block-aux_layer patch tokens (no final LN)
    tokens: torch.Tensor  # (B, C, D) GCR output, or the raw class tokens when GCR is off ("w/o GCR")


class CamOutput(NamedTuple):
    """The ``cam_only`` path: CAMs of both classifiers, detached, no ReLU."""

    cam: torch.Tensor  # (B, C, h, w) main classifier on F4
    cam_aux: torch.Tensor  # (B, C, h, w) aux classifier on Faux


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, L, D) row-major patch tokens -> (B, D, h, w)."""
    batch, _, dim = tokens.shape
    return tokens.transpose(1, 2).reshape(batch, dim, *grid)


class MoRe(nn.Module):
    """MoRe: multi-class-token ViT + GCR + CAM classifiers + LargeFOV decoder.

    Args:
        backbone: the multi-class-token ViT.
        gcr: the GCR module, or None for "w/o GCR" (tokens are then the raw class tokens).
        classifier: main CAM classifier on F4.
        aux_classifier: aux CAM classifier on Faux.
        decoder: segmentation decoder on F4.
        lam_mode: ``dot`` (reference) or ``cosine`` (paper, §7.6).
    """

    def __init__(
        self,
        *,
        backbone: MultiClassTokenViT,
        gcr: GCR | None,
        classifier: CamClassifier,
        aux_classifier: CamClassifier,
        decoder: LargeFOV,
        lam_mode: str = "dot",
    ) -> None:
        super().__init__()
        if lam_mode not in LAM_MODES:
            raise ValueError(f"lam_mode={lam_mode!r}: must be one of {', '.join(LAM_MODES)}")
        self.backbone = backbone
        self.gcr = gcr
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.decoder = decoder
        self.lam_mode = lam_mode

    @property
    def num_classes(self) -> int:
        """C, the number of foreground classes / class tokens."""
        return self.backbone.num_class_tokens

    def forward(self, x: torch.Tensor) -> MoReOutput:
        """Training / evaluation forward.

        Args:
            x: (B, 3, H, W) normalised images, H and W multiples of 16.
        """
        out = self.backbone(x)
        features = tokens_to_map(out.patch_tokens, out.grid)  # (B, D, h, w)
        aux_features = tokens_to_map(out.aux_patch_tokens, out.grid)  # (B, D, h, w)
        tokens = out.class_tokens if self.gcr is None else self.gcr(out.class_tokens, out.patch_tokens)  # (B, C, D)
        return MoReOutput(
            cls_logits=self.classifier(features),
            cls_aux_logits=self.aux_classifier(aux_features),
            seg_logits=self.decoder(features),
            features=features,
            aux_features=aux_features,
            tokens=tokens,
        )

    def cams(self, x: torch.Tensor) -> CamOutput:
        """CAMs only: backbone and the two 1×1 classifiers, no GCR and no decoder (the reference ``cam_only``)."""
        out = self.backbone(x)
        cam = self.classifier.cam(tokens_to_map(out.patch_tokens, out.grid))
        cam_aux = self.aux_classifier.cam(tokens_to_map(out.aux_patch_tokens, out.grid))
        return CamOutput(cam=cam.detach(), cam_aux=cam_aux.detach())

    def lam_from(self, output: MoReOutput) -> torch.Tensor:
        """LAM (B, C, h, w) from a forward's features and tokens with the configured mode (§1.4 / §7.6)."""
        return lam(output.features, output.tokens, self.lam_mode)

    def lam(self, x: torch.Tensor) -> torch.Tensor:
        """LAM (B, C, h, w) of images ``x`` (runs the full forward)."""
        return self.lam_from(self(x))

    def param_groups(self, lr: float, head_lr_mult: float, weight_decay: float) -> list[dict]:
        """The reference's five optimizer groups (MORE_SPEC §4.1).

        0 ``encoder``: backbone parameters whose name has no "norm" (patch embed, cls_token, pos_embed, blocks);
        1 ``encoder_norm``: backbone parameters whose name contains "norm"; 2 ``classifiers``: both classifiers;
        3 ``gcr`` (empty when GCR is off); 4 ``decoder``. Groups 2-4 use ``lr * head_lr_mult``.

        Returns:
            a list of dicts with ``params``, ``lr``, ``weight_decay``, ``lr_mult`` and ``name``.
        """
        encoder, encoder_norm = [], []
        for name, param in self.backbone.named_parameters():
            (encoder_norm if "norm" in name else encoder).append(param)
        classifiers = [*self.classifier.parameters(), *self.aux_classifier.parameters()]
        gcr = [] if self.gcr is None else list(self.gcr.parameters())
        groups = [("encoder", encoder, 1.0), ("encoder_norm", encoder_norm, 1.0),
                  ("classifiers", classifiers, head_lr_mult), ("gcr", gcr, head_lr_mult),
                  ("decoder", list(self.decoder.parameters()), head_lr_mult)]
        return [{"name": name, "params": params, "lr": lr * mult, "lr_mult": mult, "weight_decay": weight_decay}
                for name, params, mult in groups]
