"""Golden fixtures: small inputs, reduced-width weights and the reference's outputs, for tests that run without it.

``write(ref, out_dir, command=...)`` writes, atomically (temp file + rename):

* ``weights_micro.pt``: our state dict of the ``micro`` paired build (D = 64, depth 3, decoder width 32, C = 20);
* ``reference_outputs.pt``: the inputs (uint8 RGB, labels, masks) and what the authors' code computed from them;
* ``MANIFEST.json``: the command, the reference commit (or "unverified" without a .git), date, torch version.

Everything is saved as plain tensors / numbers so that ``torch.load(weights_only=True)`` reads it.
``tests/golden/test_golden.py`` recomputes our side and compares.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from more.data.transforms import normalize
from tools.refcheck.build import SIZES, grads_by_our_name, paired, ref_name, voc_args
from tools.refcheck.common import EXPECTED_COMMIT, Reference, tensor_stats
from tools.refcheck.eval_checks import _recording
from tools.refcheck.replay import ure_scores
from tools.refcheck.step_checks import URE_SEED, reference_step

C = 20
SIDE = 192  # every CAM scale (1, .5, .75, 1.5) of 192 is a multiple of 16; token grid 12x12
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
STEPS = (0, 2500, 12000)
POOL = 12  # multi-scale CAMs are stored average-pooled 12x12 (the test pools its own the same way)


def normalise(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> the network input (ImageNet mean/std); the test uses the same ops."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (rgb.float() / 255.0 - mean) / std


def golden_rgb(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    """A smooth random uint8 RGB batch with some texture (PAR's colour affinities need variation)."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(batch, 3, 6, 6, generator=g), size=(height, width), mode="bicubic",
                         align_corners=False)
    noisy = base + 0.03 * torch.rand(batch, 3, height, width, generator=g)
    return (noisy.clamp(0, 1) * 255).to(torch.uint8)


def golden_labels() -> torch.Tensor:
    labels = torch.zeros(2, C)
    labels[0, [2, 7, 14]] = 1
    labels[1, [11]] = 1
    return labels


def _save(obj: Any, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix == ".json":
            Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")
        else:
            torch.save(obj, tmp)
        os.replace(tmp, path)
        os.chmod(path, 0o644)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path.stat().st_size


def _forward(ref: Reference, theirs: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    with torch.no_grad():
        r_cls, r_patch, r_aux, _ = theirs.encoder.forward_features(x)
        cls, seg, x4, cls_aux, tokens, _ = theirs(x)
        cam_aux, cam = theirs(x, cam_only=True)
    cams, cams_aux = ref.camutils.multi_scale_cam2(theirs, inputs=x, scales=(1.0, 0.5, 0.75, 1.5))
    lam_ms = ref.camutils.multi_scale_lam2(theirs, x, (1.0, 0.5, 1.5))
    assert torch.equal(r_patch.transpose(1, 2).reshape(x4.shape), x4)  # features = patch tokens as a map
    return {"class_tokens": r_cls, "aux_patch_tokens": r_aux, "cls": cls,
            "cls_aux": cls_aux, "seg": seg, "features": x4, "tokens": tokens, "cam": cam, "cam_aux": cam_aux,
            "lam": torch.einsum("bchw,bkc->bkhw", x4, tokens),
            "ms_cam": F.avg_pool2d(cams, POOL), "ms_cam_aux": F.avg_pool2d(cams_aux, POOL),
            "ms_lam": F.avg_pool2d(lam_ms, POOL)}


def _losses(ref: Reference, fwd: dict[str, Any], labels: torch.Tensor) -> dict[str, Any]:
    """Each loss and its input gradient on the forward's own features / tokens and masks from its CAMs."""
    L, cu = ref.losses, ref.camutils
    tokens, features = fwd["tokens"], fwd["features"]
    grid = features.shape[-2:]
    up = F.interpolate(fwd["cam_aux"].relu(), size=grid, mode="bilinear", align_corners=False)
    up = up - up.amin(dim=(-2, -1), keepdim=True)
    up = up / (up.amax(dim=(-2, -1), keepdim=True) + 1e-5)
    m_cre = cu.cam_to_label(up, cls_label=labels, ignore_mid=True, bkg_thre=0.5, high_thre=0.5, low_thre=0.25,
                            ignore_index=255)[1]
    m_aux = cu.cam_to_label(up, cls_label=labels, ignore_mid=True, bkg_thre=0.5, high_thre=0.7, low_thre=0.25,
                            ignore_index=255)[1]
    out: dict[str, Any] = {"mask_cre": m_cre.to(torch.uint8), "mask_aux": m_aux.to(torch.uint8), "map": up}

    def run(name: str, fn, *inputs: torch.Tensor, grad_of: int = 0) -> None:  # noqa: ANN001
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        value = fn(*leaves)
        value.backward()
        out[name] = value.detach().reshape(())
        out[name + "_grad"] = leaves[grad_of].grad  # the input the loss trains (the other one is detached)

    run("mct", lambda t: L.multi_cls_loss(t, labels), tokens)
    run("cre", lambda t, f: L.CRELoss_neg(temp=0.5)(t, f, m_cre, labels), tokens, features, grad_of=0)
    out["ure_scores"] = ure_scores(ref, m_aux, seed=URE_SEED)

    def ure(t: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(URE_SEED)
        return L.URELoss_neg(temp=0.5)(t, f, m_aux, labels)

    run("ure", ure, tokens, features, grad_of=1)
    run("ptc", lambda f: L.get_masked_ptc_loss(f, cu.label_to_aff_mask(m_aux)), features)
    return out


def _steps(ref: Reference, ours: torch.nn.Module, theirs: torch.nn.Module, x: torch.Tensor,
           labels: torch.Tensor) -> dict[str, Any]:
    out: dict[str, Any] = {}
    args = voc_args(ref)
    for n in STEPS:
        theirs.zero_grad(set_to_none=True)
        got = reference_step(ref, theirs, x, labels, n, args)
        got["total"].backward()
        _, grads = grads_by_our_name(ours, theirs)
        record: dict[str, Any] = {name: value.detach().reshape(()) for name, value in got["terms"].items()}
        record["total"] = got["total"].detach().reshape(())
        record["ure_scores"] = ure_scores(ref, got["mask_une"], seed=URE_SEED)
        record["grad_stats"] = tensor_stats(list(grads.values()))  # in our parameter order
        out[f"n{n}"] = record
        out["y_ref"] = got["y_ref"].to(torch.uint8)  # the same weights and images at every n
    theirs.zero_grad(set_to_none=True)
    return out


def _optimizer(ref: Reference, ours: torch.nn.Module, theirs: torch.nn.Module) -> dict[str, Any]:
    """lr of every group at chosen steps; six AdamW steps (seg warm-up ends after step 2) from seeded gradients."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(5)]
    optim = ref.optimizer_engine.build_optimizer(voc_args(ref), [[p] for p in params])
    probe = [0, 1, 1499, 1500, 1501, 10000, 19999, 20000, 20004]
    lrs = []
    for t in range(max(probe) + 1):
        optim.step()
        if t in probe:
            lrs.append([g["lr"] for g in optim.param_groups])
    adam = ref.optimizer_engine.build_optimizer(voc_args(ref, lr=1e-3, warmup_iters=2, max_iters=6),
                                                theirs.get_param_groups())
    ref_params = dict(theirs.named_parameters())
    g = torch.Generator().manual_seed(77)
    for n in range(6):
        adam.zero_grad()
        for name, param in ours.named_parameters():
            grad = torch.randn(param.shape, generator=g)
            # the warm-up: the reference's 0.0 * seg gives the decoder zero gradients while n <= 2
            ref_params[ref_name(name)].grad = torch.zeros_like(grad) if name.startswith("decoder.") and n <= 2 \
                else grad
        adam.step()
    after = [ref_params[ref_name(k)].detach().clone() for k, _ in ours.named_parameters()]
    return {"lr_steps": torch.tensor(probe), "lr": torch.tensor(lrs, dtype=torch.float64),
            "adamw_stats": tensor_stats(after),
            "adamw_decoder": {k: ref_params[ref_name(k)].detach().clone() for k, _ in ours.named_parameters()
                              if k.startswith("decoder.")}}


def _validation(ref: Reference, theirs: torch.nn.Module) -> dict[str, Any]:
    g = torch.Generator().manual_seed(41)
    images, masks, labels = [], [], []
    for i, (h, w) in enumerate(((120, 160), (150, 100))):
        rgb = golden_rgb(1, h, w, seed=50 + i)
        lab = torch.zeros(1, C)
        lab[0, torch.randperm(C, generator=g)[:2]] = 1
        mask = torch.zeros(1, h, w, dtype=torch.long)
        mask[:, h // 4: 3 * h // 4, w // 3:] = int(lab[0].nonzero()[0]) + 1
        mask[:, :3] = 255
        images.append(rgb)
        masks.append(mask)
        labels.append(lab)
    # the input our side builds with eval_image: the reference's float64 normalize_img route (data.transforms)
    loader = [(f"img{i}", normalize(rgb[0], MEAN, STD)[None], mask, lab)
              for i, (rgb, mask, lab) in enumerate(zip(images, masks, labels))]
    import contextlib
    import io

    with _recording(ref) as calls, contextlib.redirect_stderr(io.StringIO()):
        f1, _ = ref.validatation_engine.build_validation(model=theirs, data_loader=loader,
                                                         args=voc_args(ref, crop_size=128))
    theirs.train()
    columns = {}
    for key, (preds, scores) in zip(("seg", "cam", "lam", "fused"), calls):
        columns[key] = {"labels": [torch.from_numpy(p.astype(np.uint8)) for p in preds],
                        "iou": torch.tensor(list(scores["iou"].values()), dtype=torch.float64)}
    return {"rgb": [im[0] for im in images], "mask": [m[0].to(torch.uint8) for m in masks], "labels": labels,
            "resize": 128, "cls_f1": float(f1), "columns": columns}


def write(ref: Reference, out_dir: Path, *, command: str) -> str:
    """Writes the fixtures into ``out_dir``; returns a one-line summary (files and sizes)."""
    out_dir = Path(out_dir)
    ours, theirs = paired(ref, SIZES["micro"], seed=0)
    rgb = golden_rgb(2, SIDE, SIDE, seed=3)
    x = normalise(rgb)
    labels = golden_labels()
    fwd = _forward(ref, theirs, x)
    outputs = {"rgb": rgb, "labels": labels, "forward": fwd, "losses": _losses(ref, fwd, labels),
               "steps": _steps(ref, ours, theirs, x, labels), "validation": _validation(ref, theirs)}
    outputs["optimizer"] = _optimizer(ref, ours, theirs)  # last: its AdamW steps change the reference's weights
    sizes = {"weights_micro.pt": _save(ours.state_dict(), out_dir / "weights_micro.pt"),
             "reference_outputs.pt": _save(outputs, out_dir / "reference_outputs.pt")}
    manifest = {
        "command": command,
        "reference": "zwyang6/MoRe",
        "reference_commit": ref.commit or f"unverified (no .git at {ref.root}; expected {EXPECTED_COMMIT})",
        "energy_filter": "rloss bilateralfilter" if ref.rloss else "exact-Gaussian stand-in for rloss",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "size": vars(SIZES["micro"]) | {"num_classes": C, "num_registers": 4, "aux_layer": -3},
        "files": sizes,
    }
    _save(manifest, out_dir / "MANIFEST.json")
    return ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items())
