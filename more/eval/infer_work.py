"""The network pass of one batch: seeds or cam2seg from CAM / LAM maps, or segmentation (MORE_SPEC §5.2-5.4).

:func:`net_batch` is a pure function of a restored model and a batch of :class:`more.data.EvalDataset` items: it
returns one :class:`~more.eval.infer_items.ImageWork` per image (encoded files, confusion counts, CRF job) and
writes nothing, so the in-process driver and a Ray worker run the very same code.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from more.config import num_classes
from more.eval.infer_items import CrfJob, ImageWork, encode_maps, encode_mask, sparse_hist
from more.eval.seeds import predict_labels, score_maps, seed_from_maps
from more.eval.seg_infer import fuse_seg_logits, scaled_inputs, seg_logits_per_scale

if TYPE_CHECKING:
    from more.eval.infer import InferOptions, LoadedRun


def _autocast(run: LoadedRun) -> torch.autocast:
    return torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.autocast)


def _gt(mask: torch.Tensor) -> np.ndarray:
    return mask.numpy().astype(np.uint8)  # (H, W): 0..C and 255 (ignore, or no ground truth)


@torch.no_grad()
def net_batch(run: LoadedRun, batch: dict[str, Any], options: InferOptions, *, maps: str = "uint8",
              write: Container[str] | None = None, crf: Container[str] | None = None) -> list[ImageWork]:
    """Run the network on one batch and return each image's outputs as values.

    Args:
        run: the restored model and config.
        batch: ``collate_eval`` of eval items (images, masks, labels, originals, names).
        options: the task and its switches.
        maps: how score maps are stored (``uint8``, ``float16``, ``none``); seg stores none.
        write: names whose first-output files are wanted (None: all); the others come back without files
            (a resumed batch whose image was already recorded).
        crf: names that still need their CRF output (None: all, when ``options.crf``).

    Returns:
        one :class:`ImageWork` per image, in batch order.
    """
    want_crf = options.crf and crf is None
    crf_names = set(batch["name"]) if want_crf else (set(crf or ()) if options.crf else set())
    write_names = set(batch["name"]) if write is None else set(write)
    images = batch["image"].to(run.device, non_blocking=True)
    if options.task == "seg":
        return _seg_batch(run, batch, images, write_names, crf_names)
    return _seed_batch(run, batch, images, options, maps, write_names, crf_names)


def _seed_batch(run: LoadedRun, batch: dict[str, Any], images: torch.Tensor, options: InferOptions, maps: str,
                write: set[str], crf: set[str]) -> list[ImageWork]:
    """Seeds (GT labels) or cam2seg (predicted labels): the seed PNG, the present classes' maps, the CRF job."""
    cfg, model, device = run.cfg, run.model, run.device
    k = num_classes(cfg) + 1
    first, second = options.outputs[0], (options.outputs[1] if options.crf else "")
    scales = cfg.eval.infer_multiscale if options.multiscale else cfg.eval.infer_cam_scales
    with _autocast(run):
        if options.task == "cam2seg":
            output = model(images)
            predicted = predict_labels(output.cls_logits.float(), output.seg_logits.float(),
                                       min_pixels=cfg.eval.cam2seg_min_pixels)
            labels, from_decoder = predicted.labels, predicted.from_decoder.cpu().tolist()
        else:
            labels, from_decoder = batch["labels"].to(device), [False] * images.shape[0]
        score = score_maps(model, images, source=options.source, scales=scales, lam_mode=cfg.model.lam)
    labels_host = labels.cpu()  # the present classes name the stored maps and the CRF channels
    works = []
    for i, name in enumerate(batch["name"]):
        gt = _gt(batch["mask"][i])
        seed = seed_from_maps(score[i].float(), labels[i], size=gt.shape, bkg_thre=cfg.eval.bkg_thre)
        label = seed.label.cpu().numpy().astype(np.uint8)  # (H, W)
        present = torch.nonzero(labels_host[i]).flatten()  # (n,) 0-based classes
        fg = seed.scores[present.to(device)].cpu().numpy()  # (n, H, W) float32
        class_ids = (present + 1).numpy()
        files = {}
        if name in write:
            files[f"{first}/{name}.png"] = encode_mask(label)
            if maps != "none":
                files[f"maps/{name}.npz"] = encode_maps(fg, class_ids, maps)
        job = None
        if name in crf:
            orig = np.ascontiguousarray(batch["orig"][i].numpy())  # (H, W, 3) uint8
            lookup = np.concatenate([[0], class_ids]).astype(np.int64)  # CRF channel -> class id
            job = CrfJob(name, second, (orig, np.ascontiguousarray(fg), tuple(range(len(class_ids)))), gt, lookup)
        works.append(ImageWork(name, first, files, sparse_hist(label, gt, k), bool(from_decoder[i]), job))
    return works


def _seg_batch(run: LoadedRun, batch: dict[str, Any], images: torch.Tensor, write: set[str],
               crf: set[str]) -> list[ImageWork]:
    """Multi-scale segmentation: the raw argmax PNG, and a CRF job on the softmax of the fused logits."""
    cfg = run.cfg
    k = num_classes(cfg) + 1
    inputs = scaled_inputs(images, batch["orig"], cfg.eval.seg_scales, mean=cfg.data.mean, std=cfg.data.std)
    with _autocast(run):
        per_scale = seg_logits_per_scale(run.model, inputs)
    works = []
    for i, name in enumerate(batch["name"]):
        gt = _gt(batch["mask"][i])
        fused = fuse_seg_logits(per_scale, i, size=gt.shape)  # (C+1, H, W)
        label = fused.argmax(dim=0).cpu().numpy().astype(np.uint8)
        files = {f"seg_raw/{name}.png": encode_mask(label)} if name in write else {}
        job = None
        if name in crf:
            probs = torch.softmax(fused, dim=0).cpu().numpy()  # (C+1, H, W) float32
            job = CrfJob(name, "seg_crf", (np.ascontiguousarray(batch["orig"][i].numpy()), probs), gt)
        works.append(ImageWork(name, "seg_raw", files, sparse_hist(label, gt, k), crf=job))
    return works
