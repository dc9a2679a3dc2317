"""``python -m more infer``: seeds, CRF masks, multi-scale segmentation and cam2seg (MORE_SPEC §5.2-5.4).

A tiny VOC-layout set with non-square images of several sizes (so every map is resized to its label size), a
randomly initialised vit_micro checkpoint, and metrics re-counted by hand from the written PNGs and the GT masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from more.__main__ import main
from more.config import load_config
from more.data import build_eval_dataset, eval_image, write_mask
from more.eval.infer import load_run, load_score_maps
from more.eval.seeds import predict_labels
from more.model import build_model
from more.pseudo.cam import multi_scale_cam
from more.train.checkpoint import save_checkpoint

K = 4  # 3 classes + background
VAL = {"val_0": (40, 56), "val_1": (64, 48), "val_2": (36, 36), "val_3": (50, 70)}  # name -> (H, W)
TEST = {"test_0": (44, 60), "test_1": (32, 48)}
CLASSES = {"val_0": [1], "val_1": [2, 3], "val_2": [3], "val_3": [1, 2], "test_0": [2], "test_1": [1, 3]}
OVERRIDES = [
    "data.synth_classes=3", "data.synth_generate=false", "data.crop_size=64", "lir.ure_kernel=2",
    "model.variant=vit_micro", "eval.resize=32", "eval.batch_size=3", "pseudo.cam_scales=[1.0, 0.5]",
    "eval.infer_cam_scales=[1.0]", "eval.infer_multiscale=[1.0, 1.5]", "eval.seg_scales=[1.0, 1.5]",
    "eval.crf_workers=1", "data.num_workers=0", "runtime.num_threads=1", "runtime.device=cpu",
]


def build_tree(root: Path) -> dict[str, np.ndarray]:
    """Images with 1-2 class rectangles (255 border) on noise; returns the GT masks by name."""
    rng = np.random.default_rng(0)
    masks = {}
    for name, (h, w) in {**VAL, **TEST}.items():
        image = rng.integers(40, 120, (h, w, 3)).astype(np.uint8)
        mask = np.zeros((h, w), dtype=np.uint8)
        for cls in CLASSES[name]:
            y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
            y1, x1 = y0 + h // 3 + 2, x0 + w // 3 + 2
            image[y0:y1, x0:x1] = np.array([[60, 200, 90], [220, 60, 60], [70, 90, 230]][cls - 1])
            mask[y0:y1, x0:x1] = 255
            mask[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = cls
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        if name in VAL:
            write_mask(root / "SegmentationClassAug" / f"{name}.png", mask)
            masks[name] = mask
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, names in (("val", VAL), ("test", TEST), ("train", VAL)):
        (lists / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return masks


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(checkpoint folder, checkpoint folder with a zeroed classifier, GT masks)."""
    tmp = tmp_path_factory.mktemp("infer")
    masks = build_tree(tmp / "data")
    cfg = load_config("synthetic", [*OVERRIDES, f"data.root={tmp / 'data'}"])
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = save_checkpoint(tmp / "run", iteration=7, model=model, optimizer=opt, data_state={"epoch": 0, "position": 0},
                           cfg=cfg, keep=1)
    with torch.no_grad():
        model.classifier.conv.weight.zero_()  # cls_logits == 0: the classifier predicts no class
    silent = save_checkpoint(tmp / "silent", iteration=7, model=model, optimizer=opt,
                             data_state={"epoch": 0, "position": 0}, cfg=cfg, keep=1)
    return ckpt, silent, masks


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "P"  # VOC palette
        return np.array(im)


def recount(folder: Path, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-class IoU / precision / recall (×100) from the PNGs and GT masks, counted here by hand."""
    hist = np.zeros((K, K), dtype=np.int64)
    for name, gt in masks.items():
        pred = read_png(folder / f"{name}.png").astype(np.int64)
        valid = gt < K
        hist += np.bincount(K * gt[valid].astype(np.int64) + pred[valid], minlength=K * K).reshape(K, K)
    tp = np.diag(hist).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"iou": 100 * tp / (hist.sum(0) + hist.sum(1) - tp), "precision": 100 * tp / hist.sum(0),
                "recall": 100 * tp / hist.sum(1)}


def assert_metrics_match(record: dict, folder: Path, masks: dict[str, np.ndarray]) -> None:
    expected = recount(folder, masks)
    for key, values in expected.items():
        got = np.array([np.nan if v is None else v for v in record[key].values()], dtype=float)
        np.testing.assert_allclose(got, values, rtol=1e-9, atol=1e-9, err_msg=f"{folder.name} {key}")
    assert record["miou"] == pytest.approx(float(np.mean(expected["iou"])), nan_ok=True)
    assert list(record["iou"]) == ["background", "boat", "plane", "disc"]


def run_infer(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["infer", "--no-tracking", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_masks_write_seeds_maps_and_crf_masks_with_hand_counted_metrics(setup, tmp_path, capsys):
    ckpt, _, masks = setup
    out = tmp_path / "masks"
    code, stdout, stderr = run_infer(capsys, str(ckpt), "--task", "masks", "--split", "val", "--out", str(out),
                                     "eval.bkg_thre=0.4")
    assert code == 0, stderr
    assert "infer masks 4/4 (100.0%)" in stderr and "seeds 4/4 masks 4/4" in stderr
    record = json.loads((out / "metrics.json").read_text())
    assert record["task"] == "masks" and record["iteration"] == 7 and record["num_images"] == 4
    assert record["bkg_thre"] == 0.4 and record["scales"] == [1.0] and record["ground_truth"] is True
    assert set(record["outputs"]) == {"seeds", "masks"}
    assert "\n| seeds |" in stdout and "\n| masks |" in stdout
    assert (out / "metrics.md").read_text().count("\n| masks |") == 1
    for name, gt in masks.items():
        present = np.unique(gt[(gt > 0) & (gt < K)])  # GT image labels
        scores, classes = load_score_maps(out / "maps" / f"{name}.npz")
        assert scores.dtype == np.float32 and scores.shape == (len(present), *gt.shape)
        np.testing.assert_array_equal(classes, present)
        assert 0.0 <= scores.min() and scores.max() <= 1.0
        np.testing.assert_array_equal(np.rint(scores * 255) / 255, scores)  # stored as uint8 steps of 1/255
        seed, mask = read_png(out / "seeds" / f"{name}.png"), read_png(out / "masks" / f"{name}.png")
        assert seed.shape == mask.shape == gt.shape
        assert set(np.unique(seed)) <= {0, *present} and set(np.unique(mask)) <= {0, *present}
        # the seed is argmax + 1 over the present classes, background where the max is <= bkg_thre
        s = scores.astype(np.float32)
        expected = np.where(s.max(0) <= 0.4, 0, classes[s.argmax(0)])
        gap = np.diff(np.sort(s, axis=0)[-2:], axis=0)[0] if len(s) > 1 else np.full(gt.shape, np.inf)
        clear = (np.abs(s.max(0) - 0.4) > 3e-3) & (gap > 3e-3)  # away from the 1/510 quantisation error
        np.testing.assert_array_equal(seed[clear], expected[clear])
    assert_metrics_match(record["outputs"]["seeds"], out / "seeds", masks)
    assert_metrics_match(record["outputs"]["masks"], out / "masks", masks)

    # the map of the 2nd image of the first batch equals a single-image CAM upsampled to its label size
    run = load_run(ckpt)
    item = build_eval_dataset(run.cfg, "val")[1]
    cam, _ = multi_scale_cam(run.model.cams, item["image"][None], [1.0])
    cam = F.interpolate(cam, size=item["mask"].shape, mode="bilinear", align_corners=False)[0]  # (C, H, W)
    scores, classes = load_score_maps(out / "maps" / "val_1.npz")
    np.testing.assert_allclose(scores, cam[classes - 1].numpy(), atol=1 / 510 + 1e-6)


def test_seg_multiscale_flip_fusion_and_crf(setup, tmp_path, capsys):
    ckpt, _, masks = setup
    out = tmp_path / "seg"
    code, stdout, stderr = run_infer(capsys, str(ckpt), "--task", "seg", "--crf", "--workers", "1", "--split", "val",
                                     "--out", str(out))
    assert code == 0, stderr
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["outputs"]) == {"seg_raw", "seg_crf"} and record["scales"] == [1.0, 1.5]
    assert not (out / "maps").exists()
    for name, gt in masks.items():
        for folder in ("seg_raw", "seg_crf"):
            pred = read_png(out / folder / f"{name}.png")
            assert pred.shape == gt.shape and pred.max() < K
    assert_metrics_match(record["outputs"]["seg_raw"], out / "seg_raw", masks)
    assert_metrics_match(record["outputs"]["seg_crf"], out / "seg_crf", masks)

    # §5.3 by hand for the 2nd image of a batch: per scale, the original image resized to int(32 s)² (not the 32²
    # square resized again), one forward each for x and flip(x), logits upsampled to the label size, the flipped one
    # flipped back and added; element-wise max over scales; argmax
    run = load_run(ckpt)
    item = build_eval_dataset(run.cfg, "val")[1]
    x, size, fused = item["image"][None], tuple(item["mask"].shape), None
    with torch.no_grad():
        for s in (1.0, 1.5):
            xs = x if s == 1.0 else eval_image(item["orig"], int(32 * s), run.cfg.data.mean, run.cfg.data.std)[None]
            a = F.interpolate(run.model(xs).seg_logits, size=size, mode="bilinear", align_corners=False)
            b = F.interpolate(run.model(xs.flip(-1)).seg_logits, size=size, mode="bilinear", align_corners=False)
            summed = (a + b.flip(-1))[0]
            fused = summed if fused is None else torch.maximum(fused, summed)
    top2 = fused.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-4).numpy()
    pred = read_png(out / "seg_raw" / "val_1.png")
    np.testing.assert_array_equal(pred[clear], fused.argmax(0).numpy()[clear])


def test_predict_labels_classifier_first_then_decoder_classes_by_hand():
    cls = torch.tensor([[-1.0, 0.5, -2.0], [-1.0, -0.1, 0.0], [-3.0, -3.0, -3.0]])  # images 1, 2: nothing > 0
    argmax = torch.tensor([
        [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
        [[2, 2, 2], [2, 2, 3], [3, 0, 0]],  # class 2: 5 px, class 3: 2 px, background: 2 px
        [[1, 1, 1], [1, 1, 3], [3, 3, 3]],  # no background: class 1: 5 px, class 3: 4 px
    ])
    seg = F.one_hot(argmax, K).permute(0, 3, 1, 2).float()  # (3, K, 3, 3) logits whose argmax is `argmax`
    got = predict_labels(cls, seg, min_pixels=5)
    assert got.labels.tolist() == [[0, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert got.from_decoder.tolist() == [False, True, True]
    assert predict_labels(cls, seg, min_pixels=2).labels.tolist() == [[0, 1, 0], [0, 1, 1], [1, 0, 1]]


def test_cam2seg_falls_back_to_decoder_classes_without_ground_truth(setup, tmp_path, capsys):
    _, silent, _ = setup
    out = tmp_path / "c2s"
    code, stdout, stderr = run_infer(capsys, str(silent), "--task", "cam2seg", "--source", "lam", "--multiscale",
                                     "--crf", "--split", "test", "--out", str(out))
    assert code == 0, stderr
    record = json.loads((out / "metrics.json").read_text())
    assert record["decoder_label_images"] == 2 and record["ground_truth"] is False and record["outputs"] == {}
    assert record["scales"] == [1.0, 1.5] and record["source"] == "lam"
    assert not (out / "metrics.md").exists() and "no ground truth" in stdout
    run = load_run(silent)
    dataset = build_eval_dataset(run.cfg, "test")
    for i, (name, shape) in enumerate(TEST.items()):
        item = dataset[i]
        with torch.no_grad():
            out_i = run.model(item["image"][None])
        assert (out_i.cls_logits <= 0).all()  # the zeroed classifier predicts nothing
        counts = np.bincount(out_i.seg_logits[0].argmax(0).flatten().numpy(), minlength=K)
        decoder_classes = [c for c in range(1, K) if counts[c] >= run.cfg.eval.cam2seg_min_pixels]
        _, classes = load_score_maps(out / "maps" / f"{name}.npz")
        assert classes.tolist() == decoder_classes
        for folder in ("cam2seg", "cam2seg_crf"):
            pred = read_png(out / folder / f"{name}.png")
            assert pred.shape == shape and set(np.unique(pred)) <= {0, *decoder_classes}


def test_default_output_folder_and_seeds_default_to_train(setup, capsys):
    ckpt, _, masks = setup
    code, _, stderr = run_infer(capsys, str(ckpt.parent.parent), "--task", "seeds", "--source", "lam")  # run folder
    assert code == 0, stderr
    out = ckpt / "infer_seeds_lam_train"
    assert json.loads((out / "metrics.json").read_text())["split"] == "train"
    assert sorted(p.stem for p in (out / "seeds").iterdir()) == sorted(masks)
    assert not list(out.rglob("*.tmp"))  # nothing half-written


def test_command_task_list_matches_the_engine():
    from more.commands import infer as command
    from more.eval import infer as engine

    assert command.TASKS == engine.TASKS
