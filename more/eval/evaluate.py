"""Batched validation with the reference's columns (MORE_SPEC §5.1, §5.5).

Outputs, each scored from one confusion matrix accumulated on the device:
- ``cam``: multi-scale main CAM (training scales + flips), GT image labels, background threshold;
- ``aux_cam``: the same for the aux-layer CAM;
- ``lam``: single-scale LAM ("Score Map"), min-max normalised, GT labels;
- ``fused``: LAM x CAM, renormalised;
- ``seg``: decoder argmax (single scale, label-free).
Images are resized to a square (``eval.resize``) and predictions are resized back to each label's size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from more.config import MoReConfig, num_classes
from more.eval.metrics import ConfusionMatrix, Scores, classification_f1, scores
from more.eval.seeds import seed_from_maps
from more.model.heads import lam as lam_map
from more.pseudo.cam import minmax_normalize, multi_scale_cam

OUTPUTS = ("cam", "aux_cam", "lam", "fused", "seg")


@dataclass
class EvalResult:
    """Scores per output plus the classification F1; ``flat()`` gives tracking-ready metrics."""

    scores: dict[str, Scores]
    cls_f1: float
    num_images: int
    hists: dict[str, torch.Tensor] = field(default_factory=dict)

    def flat(self, prefix: str = "val/") -> dict[str, float]:
        out: dict[str, float] = {f"{prefix}cls_f1": self.cls_f1}
        for name, s in self.scores.items():
            out[f"{prefix}{name}/miou"] = 100.0 * s.miou
            out[f"{prefix}{name}/precision"] = 100.0 * s.mprecision
            out[f"{prefix}{name}/recall"] = 100.0 * s.mrecall
            out[f"{prefix}{name}/confusion"] = s.mconfusion
        return out


def _to_size(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def predict_batch(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, cfg: MoReConfig, autocast: bool = False
) -> dict[str, torch.Tensor]:
    """Score maps at the input resolution for every output: (B, C, R, R) maps in [0, 1], seg logits (B, C+1, R, R)."""
    size = tuple(images.shape[-2:])
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
        cam, cam_aux = multi_scale_cam(model.cams, images, cfg.pseudo.cam_scales)
        out = model(images)
    lam = minmax_normalize(_to_size(lam_map(out.features.float(), out.tokens.float(), mode=cfg.model.lam), size))
    cam, cam_aux = cam.float(), cam_aux.float()
    fused = minmax_normalize(lam * cam)
    return {
        "cam": cam,
        "aux_cam": cam_aux,
        "lam": lam,
        "fused": fused,
        "seg": _to_size(out.seg_logits.float(), size),
        "cls_logits": out.cls_logits.float(),
    }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    *,
    cfg: MoReConfig,
    device: torch.device,
    autocast: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Run the whole loader through the model and score every output (model is put in eval mode and restored)."""
    was_training = model.training
    model.eval()
    k = num_classes(cfg) + 1
    hists = {name: ConfusionMatrix(k, device=device) for name in OUTPUTS}
    logits, targets = [], []
    seen = 0
    total = len(loader.dataset) if hasattr(loader, "dataset") else 0
    try:
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            maps = predict_batch(model, images, labels, cfg=cfg, autocast=autocast)
            logits.append(maps["cls_logits"])
            targets.append(labels)
            for i, mask in enumerate(batch["mask"]):
                gt = mask.to(device, non_blocking=True)
                size = tuple(gt.shape[-2:])
                for name in ("cam", "aux_cam", "lam", "fused"):
                    seed = seed_from_maps(maps[name][i], labels[i], size=size, bkg_thre=cfg.eval.bkg_thre)
                    hists[name].update(seed.label, gt)
                hists["seg"].update(_to_size(maps["seg"][i : i + 1], size).argmax(1)[0], gt)
            seen += images.shape[0]
            if progress is not None:
                progress(seen, total)
    finally:
        model.train(was_training)
    f1 = classification_f1(torch.cat(logits), torch.cat(targets)) if logits else float("nan")
    return EvalResult(
        scores={name: scores(h.hist) for name, h in hists.items()},
        cls_f1=f1,
        num_images=seen,
        hists={name: h.hist.cpu() for name, h in hists.items()},
    )
