"""Batched validation with the reference's columns (MORE_SPEC §5.1, §5.5).

Outputs, each scored from one confusion matrix accumulated on the device:
- ``cam``: multi-scale main CAM (training scales + flips), GT image labels, background threshold;
- ``aux_cam``: the same for the aux-layer CAM;
- ``lam``: single-scale LAM ("Score Map"), min-max normalised, GT labels;
- ``fused``: LAM x CAM, renormalised;
- ``seg``: decoder argmax (single scale, label-free).
Images are resized to a square (``eval.resize``) for the network. As in the reference's
``engine/validatation_engine.py`` (MORE_SPEC §11.2) the CAM columns are normalised at that square and then resized
to each label's size, while the LAM and the decoder logits go from the token grid straight to the label's size;
the LAM (and the fused map) are min-max normalised there and the logits are argmaxed there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from more.config import MoReConfig, num_classes
from more.eval.metrics import ConfusionMatrix, Scores, classification_f1, scores
from more.model.heads import lam as lam_map
from more.pseudo.cam import cam_to_label, minmax_normalize, multi_scale_cam

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
            out[f"{prefix}{name}/miou_present"] = 100.0 * s.miou_present  # defined where a class is absent (NaN miou)
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
    """The network's maps of a batch, before any resize to label size (see :func:`columns_at`).

    Returns:
        ``cam`` and ``aux_cam`` (B, C, R, R) multi-scale CAMs in [0, 1) at the input size (§3.1); ``lam``
        (B, C, h, w) the raw LAM of §1.4 on the token grid; ``seg`` (B, C+1, h, w) decoder logits on the token grid;
        ``cls_logits`` (B, C). All float32.
    """
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
        cam, cam_aux = multi_scale_cam(model.cams, images, cfg.pseudo.cam_scales)
        out = model(images)
    return {
        "cam": cam.float(),
        "aux_cam": cam_aux.float(),
        "lam": lam_map(out.features.float(), out.tokens.float(), mode=cfg.model.lam),
        "seg": out.seg_logits.float(),
        "cls_logits": out.cls_logits.float(),
    }


def column_labels(name: str, column: torch.Tensor, present: torch.Tensor, *, bkg_thre: float) -> torch.Tensor:
    """(n, H, W) labels of one validation column at label size: the decoder's argmax for ``seg`` (label-free), else
    the GT image labels and the background threshold, no ignore band (§5.1)."""
    if name == "seg":
        return column.argmax(1)
    return cam_to_label(column, present, ignore_mid=False, bkg_thre=bkg_thre)


def columns_at(
    maps: dict[str, torch.Tensor], index: Sequence[int], size: tuple[int, int]
) -> Iterator[tuple[str, torch.Tensor]]:
    """The validation columns of the images ``index`` (which share the label size ``size``), one at a time.

    The order of resize and normalisation is the reference's (MORE_SPEC §11.2): ``cam`` / ``aux_cam`` are the
    normalised square maps resized to ``size``; ``lam`` is the token-grid LAM resized to ``size`` and min-max
    normalised there; ``fused`` is min-max(lam · cam) at ``size``; ``seg`` the token-grid logits resized to ``size``.
    Yielding column by column keeps only two label-size maps alive at once.

    Args:
        maps: the output of :func:`predict_batch`.
        index: batch positions of the images.
        size: (H, W), their label size.

    Yields:
        ``(name, map)``: (n, C, H, W) maps in [0, 1) for ``cam``, ``aux_cam``, ``lam``, ``fused``; (n, C+1, H, W)
        logits for ``seg``.
    """
    pick = torch.as_tensor(list(index), device=maps["cam"].device)
    yield "aux_cam", _to_size(maps["aux_cam"].index_select(0, pick), size)
    cam = _to_size(maps["cam"].index_select(0, pick), size)
    yield "cam", cam
    lam = minmax_normalize(_to_size(maps["lam"].index_select(0, pick), size))
    yield "lam", lam
    yield "fused", minmax_normalize(lam * cam)
    del cam, lam
    yield "seg", _to_size(maps["seg"].index_select(0, pick), size)


def _by_label_size(masks: Sequence[torch.Tensor]) -> dict[tuple[int, int], list[int]]:
    """Batch positions grouped by label size, so that images of equal size are resized together."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, mask in enumerate(masks):
        groups.setdefault(tuple(mask.shape[-2:]), []).append(i)
    return groups


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
            for size, index in _by_label_size(batch["mask"]).items():
                gt = torch.stack([batch["mask"][i] for i in index]).to(device, non_blocking=True)  # (n, H, W)
                present = labels[index]  # (n, C)
                for name, column in columns_at(maps, index, size):
                    hists[name].update(column_labels(name, column, present, bkg_thre=cfg.eval.bkg_thre), gt)
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
