"""One MoRe training step: pseudo labels from the current weights, then every loss (MORE_SPEC §2.8, §3).

Order per iteration n (0-based):
1. multi-scale CAM and aux CAM without gradients (§3.1);
2. the segmentation target Y_ref: PAR-refined main CAM (reference) or LAM (paper, §7.7), both threshold variants
   batched (§3.3);
3. the token-level masks M_cre, M_ure, M_ptc at the patch grid (§3.4), aux CAM until the mask switch;
4. the training forward and every loss term, weighted by the phase schedule (§2.8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from more.config import MoReConfig
from more.losses import (
    classification_loss,
    cre_loss,
    energy_loss,
    mct_loss,
    ptc_loss,
    seg_loss,
    total_loss,
    ure_loss,
)
from more.losses.lir import ure_crop_shape
from more.model.heads import lam as lam_map
from more.pseudo.cam import minmax_normalize, multi_scale_cam, token_masks
from more.pseudo.par import refine_cams_with_bkg

TERMS = ("cls", "cls_aux", "mct", "cre", "ure", "ptc", "seg", "energy")


@dataclass
class StepOutput:
    """The loss terms of one step and the pseudo labels they were computed from."""

    total: torch.Tensor  # scalar with grad
    unweighted: dict[str, torch.Tensor]  # detached scalars, every term even when its weight is 0
    weighted: dict[str, torch.Tensor]
    seg_target: torch.Tensor  # (B, H, W) long, Y_ref


def denormalize(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """Network input back to float RGB on the 0-255 scale, no clipping (§2.7 step 2, §3.3).

    The per-channel constants ``std·255`` and ``mean·255`` are formed in double precision and rounded once to the
    images' dtype: for the ImageNet statistics these are the reference's literal constants (58.395, 57.12, 57.375;
    123.675, 116.28, 103.53 in ``utils/imutils.py``), bit for bit. Forming them in float32 instead gives
    57.1200027 for 57.12, one ulp, which flips a grey level of the uint8-truncated PAR image on some pixels
    (MORE_SPEC §11.3). The image is then ``x·s + m``, a multiply and an add, as the reference computes it.
    """
    s = torch.tensor([v * 255.0 for v in std], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    m = torch.tensor([v * 255.0 for v in mean], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return images * s + m


def loss_weights(cfg: MoReConfig, n: int) -> dict[str, float]:
    """Weight of every term at 0-based iteration ``n``: a term is on when ``n > start`` (§2.8)."""
    lc = cfg.loss
    lir_on = n > lc.lir_start
    seg_on = n > lc.seg_start
    ptc_on = n > lc.ptc_start
    return {
        "cls": lc.cls_weight,
        "cls_aux": lc.cls_aux_weight,
        "mct": lc.mct_weight,
        "cre": cfg.lir.cre_weight if lir_on else 0.0,
        "ure": cfg.lir.ure_weight if lir_on else 0.0,
        "ptc": (lc.ptc_weight_late if lir_on and lc.lir_start >= 0 else lc.ptc_weight) if ptc_on else 0.0,
        "seg": lc.seg_weight if seg_on else 0.0,
        "energy": lc.energy_weight if seg_on else 0.0,
    }


def seg_target(
    cfg: MoReConfig,
    par: torch.nn.Module,
    image255: torch.Tensor,  # (B, 3, H, W)
    labels: torch.Tensor,  # (B, C)
    cams: torch.Tensor,  # (B, C, H, W) in [0, 1)
    lam_small: torch.Tensor | None,  # (B, C, h, w) LAM of the training forward, for the paper's §7.7 variant
) -> torch.Tensor:
    """Y_ref: foreground from the high-background PAR variant, background where both agree, else 255 (§3.3)."""
    source = cams
    if cfg.loss.seg_target == "lam" and lam_small is not None:  # §7.7: the paper supervises the decoder with LAM
        lam_up = F.interpolate(lam_small.float(), size=cams.shape[-2:], mode="bilinear", align_corners=False)
        source = minmax_normalize(lam_up)
    return refine_cams_with_bkg(
        par, image255, source * labels[:, :, None, None], labels, high=cfg.pseudo.par_bg_high,
        low=cfg.pseudo.par_bg_low,
        channels=cfg.pseudo.par_channels,
    )


def training_step(
    model: torch.nn.Module,
    par: torch.nn.Module,
    images: torch.Tensor,  # (B, 3, H, W), normalised
    labels: torch.Tensor,  # (B, C) float
    *,
    cfg: MoReConfig,
    n: int,
    generator: torch.Generator | None = None,
    autocast: bool = False,
    share: tuple[int, int] | None = None,
) -> StepOutput:
    """Compute every loss of iteration ``n`` (no backward, no optimizer step).

    ``model`` may be wrapped (``torch.compile``, DistributedDataParallel): its one gradient forward goes through
    the wrapper.

    Args:
        share: ``(first, total)``: these images are rows ``first ..`` of the step's global batch of ``total``
            images (a DDP process's or an accumulation micro-step's shard). L_ure's random scores are drawn from
            ``generator`` for the whole global batch and this shard's rows are used, so the draws of an image do not
            depend on how the global batch is split. None: the images are the whole global batch.
    """
    device_type = images.device.type
    # the CAMs need no gradient sync: under DistributedDataParallel they come from the wrapped model itself
    plain = getattr(model, "module", model)
    with torch.no_grad(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        cams, cams_aux = multi_scale_cam(plain.cams, images, cfg.pseudo.cam_scales)  # (B, C, H, W) x2
    cams, cams_aux = cams.float(), cams_aux.float()
    image255 = denormalize(images, cfg.data.mean, cfg.data.std)

    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        out = model(images)
    grid = tuple(out.features.shape[-2:])
    use_main = cfg.pseudo.lir_mask_source == "main" or n > cfg.pseudo.mask_switch_iter
    masks = token_masks(
        cams,
        cams_aux,
        labels,
        grid=grid,
        cre_high=cfg.pseudo.cre_high,
        cre_low=cfg.pseudo.cre_low,
        aux_high=cfg.pseudo.aux_high,
        aux_low=cfg.pseudo.aux_low,
        main_high=cfg.pseudo.main_high,
        main_low=cfg.pseudo.main_low,
        use_main=use_main,
    )
    lam_small = None
    if cfg.loss.seg_target == "lam":
        with torch.no_grad():
            lam_small = lam_map(out.features.float(), out.tokens.float(), mode=cfg.model.lam)
    y_ref = seg_target(cfg, par, image255, labels, cams, lam_small)

    features = out.features.float()
    tokens = out.tokens.float()
    lir = cfg.lir
    first, total = share if share is not None else (0, images.shape[0])
    crop = ure_crop_shape(*grid, lir.ure_kernel)
    ure_scores = torch.rand((total, *crop), generator=generator, device=images.device)[first : first + len(images)]
    terms = {
        "cls": classification_loss(logits=out.cls_logits.float(), labels=labels),
        "cls_aux": classification_loss(logits=out.cls_aux_logits.float(), labels=labels),
        "mct": mct_loss(tokens=tokens, temperature=cfg.loss.mct_temperature),
        "cre": cre_loss(
            tokens=tokens,
            features=features,
            mask=masks.cre,
            labels=labels,
            temperature=lir.cre_temperature,
            norm=lir.cre_norm,
            normalize_patches=lir.cre_normalize_patches,
        ),
        "ure": ure_loss(
            tokens=tokens,
            features=features,
            mask=masks.ure,
            labels=labels,
            kernel=lir.ure_kernel,
            phi=lir.ure_phi,
            num_tokens=lir.ure_num_tokens,
            strict=lir.ure_strict,
            use_abs=lir.ure_abs,
            fallback=lir.ure_fallback,
            token_offset=lir.ure_token_offset,
            scores=ure_scores,
        ),
        "ptc": ptc_loss(features=features, mask=masks.ptc),
        "seg": seg_loss(logits=out.seg_logits.float(), target=y_ref),
        "energy": energy_loss(
            seg_logits=out.seg_logits.float(),
            image=image255,
            target=y_ref,
            sigma_rgb=cfg.loss.energy_sigma_rgb,
            sigma_xy=cfg.loss.energy_sigma_xy,
            scale_factor=cfg.loss.energy_scale_factor,
            weight=cfg.loss.energy_scale,
            filter=cfg.loss.energy_filter,
            tile=cfg.loss.energy_tile,
        ),
    }
    result = total_loss(terms=terms, weights=loss_weights(cfg, n))
    return StepOutput(total=result.total, unweighted=result.unweighted, weighted=result.weighted, seg_target=y_ref)

