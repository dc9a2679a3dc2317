"""The whole training step at n = 0, 2500 and 12000: every loss term, the total, Y_ref and every gradient.

The reference side follows the body of ``scripts/train_voc.py``'s loop (which lives inside ``train()`` and cannot
be called piecewise) by calling the reference's own functions in the loop's order with the script's default
arguments: multi-scale CAM, ``cam_to_label``, ``refine_cams_with_bkg_v2`` with PAR, the forward, the four token
masks, ``CRELoss_neg`` / ``URELoss_neg`` / ``multi_cls_loss`` / ``get_seg_loss`` / ``get_energy_loss`` /
``get_masked_ptc_loss``, and the warm-up formula with ``0.0 * seg + 0.0 * reg``. Our side is
``more.train.step.training_step`` with the VOC preset (``fidelity=reference``). L_ure's draws are replayed.
"""

from __future__ import annotations

from unittest import mock

import torch
import torch.nn.functional as F

import more.train.step as step_module
from more.config import load_config
from more.pseudo.par import PAR
from more.train.step import TERMS, training_step
from tools.refcheck.build import SIZES, grads_by_our_name, paired, voc_args
from tools.refcheck.common import Reference, Row, approx, exact
from tools.refcheck.pseudo_checks import labels_for, smooth_images
from tools.refcheck.replay import ure_scores

URE_SEED = 1234
STAND_IN = "energy filter: exact-Gaussian stand-in for rloss"


def reference_step(ref: Reference, model: torch.nn.Module, inputs: torch.Tensor, cls_label: torch.Tensor, n: int,
                   args) -> dict[str, torch.Tensor]:  # noqa: ANN001 - the script's argparse namespace
    """One iteration of the authors' VOC loop body (no optimizer step); returns the terms, total and Y_ref."""
    cu, L = ref.camutils, ref.losses
    thresholds = dict(img_box=None, ignore_mid=True, bkg_thre=args.bkg_thre, ignore_index=args.ignore_index)
    image01 = ref.imutils.denormalize_img2(inputs.clone())
    cams, cams_aux = cu.multi_scale_cam2(model, inputs=inputs, scales=args.cam_scales)
    valid_cam, _ = cu.cam_to_label(cams.detach(), cls_label=cls_label, high_thre=args.high_thre,
                                   low_thre=args.low_thre, **thresholds)
    par = ref.PAR.PAR(num_iter=10, dilations=[1, 2, 4, 8, 12, 24])
    y_ref = cu.refine_cams_with_bkg_v2(par, image01, cams=valid_cam, cls_labels=cls_label, high_thre=args.high_thre,
                                       low_thre=args.low_thre, ignore_index=args.ignore_index, img_box=None)
    cls, segs, fmap, cls_aux, tokens, _ = model(inputs, with_gcr=args.with_gcr)

    grid = fmap.shape[2:]
    aux_small = F.interpolate(cams_aux, size=grid, mode="bilinear", align_corners=False).detach()
    main_small = F.interpolate(cams, size=grid, mode="bilinear", align_corners=False).detach()
    m_cle = cu.cam_to_label(aux_small, cls_label=cls_label, high_thre=0.5, low_thre=args.low_thre, **thresholds)[1]
    m_aux = cu.cam_to_label(aux_small, cls_label=cls_label, high_thre=args.high_thre, low_thre=args.low_thre,
                            **thresholds)[1]
    m_main = cu.cam_to_label(main_small, cls_label=cls_label, high_thre=0.6, low_thre=0.35, **thresholds)[1]
    mask_cle = m_cle if n <= 10000 else m_main  # the script's literal 10000 (it ignores --cam2mask)
    mask_une = m_aux if n <= 10000 else m_main
    terms = {"cre": L.CRELoss_neg(temp=0.5)(tokens, fmap, mask_cle, cls_label)}
    torch.manual_seed(URE_SEED)  # the draws our side replays
    terms["ure"] = L.URELoss_neg(temp=0.5)(tokens, fmap, mask_une, cls_label)
    terms["cls"] = F.multilabel_soft_margin_loss(cls, cls_label)
    terms["cls_aux"] = F.multilabel_soft_margin_loss(cls_aux, cls_label)
    terms["mct"] = L.multi_cls_loss(tokens, cls_label)
    segs_up = F.interpolate(segs, size=y_ref.shape[1:], mode="bilinear", align_corners=False)
    terms["seg"] = L.get_seg_loss(segs_up, y_ref.type(torch.long), ignore_index=args.ignore_index)
    layer = L.DenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5)
    terms["energy"] = L.get_energy_loss(img=inputs, logit=segs_up, label=y_ref, img_box=None, loss_layer=layer)[0]
    m_ptc = cu.cam_to_label(aux_small, cls_label=cls_label, high_thre=args.high_thre, low_thre=args.low_thre,
                            **{**thresholds, "bkg_thre": 0.65})[1]
    terms["ptc"] = L.get_masked_ptc_loss(fmap, cu.label_to_aff_mask(m_ptc))
    seg_weight, reg_weight = (0.0, 0.0) if n <= 2000 else (args.w_seg, args.w_reg)
    total = (terms["cls"] + terms["cls_aux"] + terms["mct"] + args.w_cle * terms["cre"] + args.w_une * terms["ure"]
             + args.w_ptc * terms["ptc"] + seg_weight * terms["seg"] + reg_weight * terms["energy"])
    return {"terms": terms, "total": total, "y_ref": y_ref.long(), "mask_une": mask_une}


def _step_rows(ref: Reference, n: int) -> list[Row]:
    ours, theirs = paired(ref, SIZES["small"], seed=n)
    images = smooth_images(2, 256, seed=n + 1)  # every CAM scale of 256 is a multiple of 16
    labels = labels_for(2, seed=n + 2)
    args = voc_args(ref)
    got = reference_step(ref, theirs, images, labels, n, args)
    got["total"].backward()

    scores = ure_scores(ref, got["mask_une"], seed=URE_SEED)
    real_ure = step_module.ure_loss
    cfg = load_config(None, [f"loss.energy_filter={'lattice' if ref.rloss else 'exact'}"])
    with mock.patch.object(step_module, "ure_loss", lambda **kw: real_ure(**{**kw, "scores": scores})):
        out = training_step(ours, PAR(), images, labels, cfg=cfg, n=n)
    out.total.backward()

    stand_in = "" if ref.rloss else STAND_IN
    rows = [exact(f"step n={n}: Y_ref", out.seg_target, got["y_ref"])]
    for term in TERMS:
        energy = term == "energy"
        rows.append(approx(f"step n={n}: L_{term}", out.unweighted[term], got["terms"][term].detach(), tol=1e-5,
                           note=stand_in if energy else ""))
    rows.append(approx(f"step n={n}: total loss", out.total.detach(), got["total"].detach(), tol=1e-5,
                       note=stand_in if n > 2000 else ""))
    a, b = grads_by_our_name(ours, theirs)
    rows.append(approx(f"step n={n}: gradients of all {len(a)} parameter tensors", list(a.values()),
                       list(b.values()), tol=1e-4, note=stand_in if n > 2000 else ""))
    return rows


def checks(ref: Reference) -> list[Row]:
    """Rows for three iterations: seg warm-up, seg on with aux-CAM masks, main-CAM masks."""
    rows = []
    for n in (0, 2500, 12000):
        rows += _step_rows(ref, n)
    return rows
