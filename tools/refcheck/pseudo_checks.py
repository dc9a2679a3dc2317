"""Pseudo labels: ``cam_to_label`` variants, the token-grid masks, the PAR module, the PAR image and Y_ref."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from more.pseudo.cam import cam_to_label, token_masks
from more.pseudo.par import PAR, refine_cams_with_bkg
from more.train.step import denormalize
from tools.refcheck.common import Reference, Row, approx, exact

C = 20
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def smooth_images(batch: int, size: int, seed: int) -> torch.Tensor:
    """Normalised network input from a smooth random uint8 RGB image (values the reference's uint8 cast keeps)."""
    g = torch.Generator().manual_seed(seed)
    rgb = F.interpolate(torch.rand(batch, 3, 8, 8, generator=g) * 255, size=(size, size), mode="bicubic",
                        align_corners=False).clamp(0, 255).round() / 255.0
    rgb = rgb + torch.rand(rgb.shape, generator=g) * 0.02  # texture, so that PAR's colour affinities vary
    return (rgb.clamp(0, 1) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def smooth_cams(batch: int, size: int, seed: int) -> torch.Tensor:
    """(B, C, size, size) CAMs in [0, 1) with blob structure, min-max normalised as the reference's."""
    g = torch.Generator().manual_seed(seed)
    cam = F.interpolate(torch.rand(batch, C, 6, 6, generator=g), size=(size, size), mode="bilinear",
                        align_corners=False) ** 2
    cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + 1e-5)


def labels_for(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(batch, C)
    for b in range(batch):
        labels[b, torch.randperm(C, generator=g)[: 1 + b % 3]] = 1
    return labels


def checks(ref: Reference) -> list[Row]:
    """Rows for the pseudo-label pipeline."""
    cu = ref.camutils
    labels = labels_for(2, 1)
    cams, cams_aux = smooth_cams(2, 224, 2), smooth_cams(2, 224, 3)
    rows = []
    _, r_mid = cu.cam_to_label(cams, cls_label=labels, ignore_mid=True, bkg_thre=0.5, high_thre=0.7, low_thre=0.25,
                               ignore_index=255)
    rows.append(exact("cam_to_label ignore_mid (0.7 / 0.25; bkg_thre ignored)",
                      cam_to_label(cams, labels, high=0.7, low=0.25, ignore_mid=True), r_mid))
    _, r_bkg = cu.cam_to_label(cams, cls_label=labels, bkg_thre=0.5, high_thre=0.7, low_thre=0.25, ignore_index=255)
    rows.append(exact("cam_to_label bkg_thre 0.5 (validation / seeds)",
                      cam_to_label(cams, labels, ignore_mid=False, bkg_thre=0.5), r_bkg))
    valid, _ = cu.cam_to_label(cams, cls_label=labels, ignore_mid=True, bkg_thre=0.5, high_thre=0.7, low_thre=0.25,
                               ignore_index=255)
    rows.append(exact("valid CAM (cam · y)", cams * labels[:, :, None, None], valid))

    grid = (14, 14)
    aux_small = F.interpolate(cams_aux, size=grid, mode="bilinear", align_corners=False)
    main_small = F.interpolate(cams, size=grid, mode="bilinear", align_corners=False)

    def ref_label(small: torch.Tensor, high: float, low: float, bkg: float = 0.5) -> torch.Tensor:
        return cu.cam_to_label(small, cls_label=labels, ignore_mid=True, bkg_thre=bkg, high_thre=high, low_thre=low,
                               ignore_index=255)[1]

    kwargs = dict(grid=grid, cre_high=0.5, cre_low=0.25, aux_high=0.7, aux_low=0.25, main_high=0.6, main_low=0.35)
    early = token_masks(cams, cams_aux, labels, use_main=False, **kwargs)
    late = token_masks(cams, cams_aux, labels, use_main=True, **kwargs)
    rows.append(exact("token masks n <= 10000: M_cle / M_aux / PTC (aux CAM)", (early.cre, early.ure, early.ptc),
                      (ref_label(aux_small, 0.5, 0.25), ref_label(aux_small, 0.7, 0.25),
                       ref_label(aux_small, 0.7, 0.25, bkg=0.65))))
    rows.append(exact("token masks n > 10000: M_main (main CAM 0.6 / 0.35) / PTC", (late.cre, late.ure, late.ptc),
                      (ref_label(main_small, 0.6, 0.35), ref_label(main_small, 0.6, 0.35),
                       ref_label(aux_small, 0.7, 0.25, bkg=0.65))))

    x = smooth_images(2, 224, 4)
    image255 = denormalize(x, MEAN, STD)
    r_img = ref.imutils.denormalize_img2(x.clone())
    rows.append(exact("PAR image (de-normalise, uint8 truncation, /255)",
                      image255.float().clamp(0, 255).to(torch.uint8) / 255.0, r_img))

    ref_par = ref.PAR.PAR(num_iter=10, dilations=[1, 2, 4, 8, 12, 24])
    small_img = F.interpolate(r_img, size=(112, 112), mode="bilinear", align_corners=False)
    masks = torch.softmax(torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(8)) * 3, dim=1)
    rows.append(approx("PAR module (10 iterations, dilations 1..24)", PAR()(small_img, masks),
                       ref_par(small_img, masks)))
    r_yref = cu.refine_cams_with_bkg_v2(ref_par, r_img, cams=valid, cls_labels=labels, high_thre=0.7, low_thre=0.25,
                                        ignore_index=255, img_box=None)
    for mode in ("all", "present"):
        ours = refine_cams_with_bkg(PAR(), image255, cams * labels[:, :, None, None], labels, high=0.7, low=0.25,
                                    channels=mode)
        rows.append(exact(f"Y_ref (PAR refinement, bg 0.7 / 0.25, channels={mode})", ours, r_yref.long()))
    return rows
