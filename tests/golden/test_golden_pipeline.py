"""Pipeline golden tests: our augmentation, COCO schedule, inference driver and DenseCRF against what the authors'
code computed (``tests/golden/pipeline_*.pt``, written by ``tools/check_reference.py --golden-out``; see their
``meta`` for the command and the reference commit). The reference itself is not needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from more.config import load_config, num_classes, resolved_top_k
from more.data import build_eval_dataset
from more.data.transforms import build_train_transform
from more.data.voc import read_mask
from more.eval.infer import InferOptions, LoadedRun, crf_kwargs, run_inference
from more.pseudo.crf import dense_crf
from more.train.optim import PolyWarmupAdamW
from more.train.step import loss_weights

pytest.importorskip("matplotlib")  # the test photograph ships with matplotlib (installed with mlflow)

from tools.refcheck.build import SIZES, build_ours  # noqa: E402
from tools.refcheck.pipeline import CRF_KEYS, unpack_labels, weights_digest  # noqa: E402
from tools.refcheck.pipeline_aug import to_uint8  # noqa: E402
from tools.refcheck.pipeline_data import photo, photo_digest, scene, voc_tree  # noqa: E402

HERE = Path(__file__).parent


def _load(name: str) -> dict:
    path = HERE / name
    if not path.is_file():
        pytest.fail(f"{path} missing: regenerate with tools/check_reference.py --ref MoRe --golden-out tests/golden")
    data = torch.load(path, weights_only=True)
    assert data["meta"]["photo_sha256"] == photo_digest(), (
        "matplotlib's grace_hopper.jpg decodes to other pixels here than where the fixtures were written")
    return data


@pytest.mark.parametrize("dataset", ["voc", "coco"])
def test_augmentation_replays_the_reference_crops(dataset):
    golden = _load("pipeline_aug.pt")[dataset]
    cfg = load_config(dataset)
    transform = build_train_transform(cfg)
    for item, expected in zip(golden["items"], golden["crops"]):
        w, h = item["size"]
        image = Image.fromarray(scene(w, h, item["scene_seed"], 20)[0])
        torch.manual_seed(item["torch_seed"])
        if dataset == "voc":
            transform(image)  # the reference trains on the second of two views drawn from the same RNG
        crop = to_uint8(transform(image), cfg.data.mean, cfg.data.std)[:, ::2, ::2]
        assert torch.equal(crop, expected), f"{dataset} {item}: {(crop != expected).float().mean():.2%} px differ"


def test_coco_schedule_is_train_coco():
    golden = _load("pipeline_coco.pt")
    cfg = load_config("coco")
    for n, expected in zip(golden["iterations"], golden["weights"]):
        assert loss_weights(cfg, n) == pytest.approx(expected, abs=1e-12), f"n = {n}"
    switch = [n > cfg.pseudo.mask_switch_iter for n in golden["iterations"]]
    assert switch == golden["use_main"]
    p = cfg.pseudo
    ours = {"par": (p.par_bg_high, p.par_bg_low), "cre": (p.cre_high, p.cre_low), "ure": (p.aux_high, p.aux_low),
            "main": (p.main_high, p.main_low), "ptc": (p.aux_high, p.aux_low)}
    for role, t in golden["thresholds"].items():
        assert ours[role] == pytest.approx((t["high_thre"], t["low_thre"])), role
    assert cfg.pseudo.cam_scales == pytest.approx(golden["cam_scales"])
    assert cfg.lir.cre_temperature == pytest.approx(golden["cre_tau"])
    assert (num_classes(cfg), resolved_top_k(cfg)) == (golden["class_tokens"], golden["class_tokens"] // 2)
    o = cfg.optim
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": o.lr * m}
              for m in (1.0, 1.0) + (o.head_lr_mult,) * 3]
    opt = PolyWarmupAdamW(groups, cfg=o, max_iters=cfg.train.max_iters)
    for t, expected in zip(golden["lr_steps"], golden["lr"]):
        opt.global_step = t
        opt.step()
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(expected.tolist(), rel=1e-9), f"t = {t}"


def test_dense_crf_matches_utils_dcrf():
    golden = _load("pipeline_infer.pt")["crf"]
    cfg = load_config("voc")
    ours = crf_kwargs(cfg)
    for tool, settings in golden["settings"].items():
        assert {k: ours[v] for k, v in CRF_KEYS.items()} == pytest.approx(settings), tool
    image = np.array(photo(), dtype=np.uint8)
    h, w = image.shape[:2]
    g = torch.Generator().manual_seed(golden["seed"])
    logits = F.interpolate(4.0 * torch.randn(1, 4, 6, 5, generator=g), size=(h, w), mode="bicubic",
                           align_corners=False)[0]
    probs = torch.softmax(logits, dim=0).numpy().astype(np.float32)
    np.testing.assert_array_equal(dense_crf(image, probs, **ours), unpack_labels(golden["labels"])[0])


CASES = [  # fixture key, task, source, multiscale
    ("cam seeds", "masks", "cam", False),
    ("lam seeds multi-scale", "masks", "lam", True),
    ("cam2seg (cam)", "cam2seg", "cam", False),
    ("seg", "seg", "cam", False),
]


@pytest.mark.parametrize(("key", "task", "source", "multiscale"), CASES, ids=[c[0] for c in CASES])
def test_inference_matches_the_reference_tools(tmp_path, key, task, source, multiscale):
    golden = _load("pipeline_infer.pt")
    weights = torch.load(HERE / "weights_micro.pt", weights_only=True)
    assert weights_digest(weights) == golden["weights_sha256"], "weights_micro.pt is not the fixture's network"
    tree = voc_tree(tmp_path / "voc", [tuple(s) for s in golden["sizes"]])
    assert list(tree.names) == golden["names"]
    cfg = load_config("voc", {"data.root": str(tree.root), "data.num_workers": 0, "eval.batch_size": 2})
    model = build_ours(SIZES["micro"])
    model.load_state_dict(weights)
    run = LoadedRun(cfg=cfg, model=model.eval(), checkpoint=HERE / "weights_micro.pt", iteration=0,
                    device=torch.device("cpu"), autocast=False)
    options = InferOptions(task=task, source=source, multiscale=multiscale, crf=True, workers=1)
    run_inference(run, build_eval_dataset(cfg, tree.split), options, tmp_path / "out", log=lambda _t: None)
    for output, field in zip(options.outputs, ("labels", "crf")):
        for name, expected in zip(tree.names, unpack_labels(golden[key][field])):
            got = read_mask(tmp_path / "out" / output / f"{name}.png")
            assert got.shape == expected.shape
            assert (got != expected).mean() == 0, f"{key} {output} {name}: {(got != expected).mean():.3%} px differ"
