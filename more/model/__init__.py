"""The MoRe network: multi-class-token ViT backbone, GCR, CAM heads, LAM and the LargeFOV decoder (MORE_SPEC §1)."""

from more.model.backbone import BackboneOutput, MultiClassTokenViT
from more.model.build import build_model
from more.model.decoder import LargeFOV
from more.model.gcr import GCR
from more.model.heads import CamClassifier, lam
from more.model.more import CamOutput, MoRe, MoReOutput
from more.model.weights import LoadReport, WeightsError, load_pretrained

__all__ = [
    "BackboneOutput", "CamClassifier", "CamOutput", "GCR", "LargeFOV", "LoadReport", "MoRe", "MoReOutput",
    "MultiClassTokenViT", "WeightsError", "build_model", "lam", "load_pretrained",
]
