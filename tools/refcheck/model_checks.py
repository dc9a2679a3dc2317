"""Backbone (registers, position-embedding resize), heads, CAM path, GCR, LAM and multi-scale maps, with gradients.

Both networks carry the same weights (``build.paired``) and see the same inputs; they run in train mode as in the
reference's loop (dropout and drop-path are 0, so train and eval compute the same).
"""

from __future__ import annotations

import torch

from more.model.heads import lam as lam_map
from more.pseudo.cam import multi_scale_cam, multi_scale_lam
from tools.refcheck.build import SIZES, Size, grads_by_our_name, paired
from tools.refcheck.common import Reference, Row, approx

CAM_SCALES = (1.0, 0.5, 0.75, 1.5)


def _images(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=g)


def _forward_rows(ref: Reference, size: Size, tag: str, shapes: list[tuple[int, int]]) -> list[Row]:
    ours, theirs = paired(ref, size)
    rows = []
    for height, width in shapes:
        x = _images(2, height, width, seed=height + width)
        where = f"{tag} {height}x{width}"
        with torch.no_grad():
            out = ours.backbone(x)
            r_cls, r_patch, r_aux, _ = theirs.encoder.forward_features(x)
        rows.append(approx(f"backbone {where}: class tokens (registers dropped)", out.class_tokens, r_cls))
        rows.append(approx(f"backbone {where}: patch tokens", out.patch_tokens, r_patch))
        rows.append(approx(f"backbone {where}: aux-layer patch tokens", out.aux_patch_tokens, r_aux))
        with torch.no_grad():
            o = ours(x)
            cls, seg, x4, cls_aux, tokens, _ = theirs(x)
            cam, cam_aux = ours.cams(x)
            r_cam_aux, r_cam = theirs(x, cam_only=True)
        rows.append(approx(f"heads {where}: cls / cls_aux logits", (o.cls_logits, o.cls_aux_logits), (cls, cls_aux)))
        rows.append(approx(f"heads {where}: decoder logits", o.seg_logits, seg))
        rows.append(approx(f"heads {where}: CAM / aux CAM (cam_only)", (cam, cam_aux), (r_cam, r_cam_aux)))
        rows.append(approx(f"GCR {where}: output tokens", o.tokens, tokens))
        # the LAM of validation and inference: einsum of F4 with the GCR tokens (engine/validatation_engine.py)
        r_lam = torch.einsum("bchw,bkc->bkhw", x4, tokens)
        rows.append(approx(f"LAM {where}", lam_map(o.features, o.tokens), r_lam))
    return rows


def _gradient_rows(ref: Reference, size: Size, tag: str) -> list[Row]:
    """One backward of a random linear functional of every training output; every parameter's gradient."""
    ours, theirs = paired(ref, size)
    x = _images(2, 224, 224, seed=7)
    o = ours(x)
    cls, seg, x4, cls_aux, tokens, _ = theirs(x)
    g = torch.Generator().manual_seed(11)
    weights = [torch.randn(t.shape, generator=g) for t in (o.cls_logits, o.seg_logits, o.features, o.cls_aux_logits,
                                                          o.tokens)]
    ours_sum = sum((w * t).sum() for w, t in zip(weights, (o.cls_logits, o.seg_logits, o.features, o.cls_aux_logits,
                                                             o.tokens)))
    ref_sum = sum((w * t).sum() for w, t in zip(weights, (cls, seg, x4, cls_aux, tokens)))
    ours_sum.backward()
    ref_sum.backward()
    a, b = grads_by_our_name(ours, theirs)
    rows = []
    for part in ("backbone.", "gcr.", "classifier.", "aux_classifier.", "decoder."):
        keys = [k for k in a if k.startswith(part)]
        rows.append(approx(f"gradients {tag}: {part.rstrip('.')} ({len(keys)} tensors)", [a[k] for k in keys],
                           [b[k] for k in keys], tol=2e-4))
    return rows


def _multiscale_rows(ref: Reference, size: Size) -> list[Row]:
    ours, theirs = paired(ref, size)
    x = _images(2, 256, 256, seed=5)  # every scale a multiple of 16 (ours refuses a partial patch)
    cam, cam_aux = multi_scale_cam(ours.cams, x, CAM_SCALES)
    r_cam, r_cam_aux = ref.camutils.multi_scale_cam2(theirs, inputs=x, scales=CAM_SCALES)
    rows = [approx("multi-scale CAM (1, .5, .75, 1.5) + flips: main / aux", (cam, cam_aux), (r_cam, r_cam_aux))]
    lam = multi_scale_lam(ours.lam, x, (1.0, 0.5, 1.5))
    r_lam = ref.camutils.multi_scale_lam2(theirs, x, (1.0, 0.5, 1.5))
    rows.append(approx("multi-scale LAM (1, .5, 1.5) + flips", lam, r_lam))
    return rows


def checks(ref: Reference) -> list[Row]:
    """Rows for the network components."""
    small = SIZES["small"]
    rows = _forward_rows(ref, small, "D=96", [(224, 224), (448, 448), (224, 320)])
    rows += _gradient_rows(ref, small, "D=96")
    rows += _multiscale_rows(ref, small)
    rows += _forward_rows(ref, SIZES["vit_b16"], "ViT-B/16", [(224, 224)])
    return rows
