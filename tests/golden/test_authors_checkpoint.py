"""A checkpoint in the authors' format evaluates in ``python -m more eval`` to the numbers the reference computed.

``authors_checkpoint.pt`` (written by ``tools/check_reference.py --modules 'checkpoint*' --golden-out tests/golden``,
see its ``meta``) holds a reduced-width state dict the reference network produced and saved as
``scripts/train_voc.py`` does (names behind ``module.``), four synthetic images and masks as their file bytes, and
the reference's ``build_validation`` numbers on them. The reference itself is not needed here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from more.__main__ import main
from more.eval.infer import load_run
from more.train.checkpoint import CheckpointError, load_checkpoint

HERE = Path(__file__).parent
COLUMNS = ("seg", "cam", "lam", "fused")


@pytest.fixture(scope="module")
def golden() -> dict:
    path = HERE / "authors_checkpoint.pt"
    if not path.is_file():
        pytest.fail(f"{path} missing: regenerate with tools/check_reference.py --ref MoRe --modules 'checkpoint*' "
                    f"--golden-out tests/golden")
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def root(golden, tmp_path_factory) -> Path:
    """The synthetic val split, byte for byte as the reference read it."""
    root = tmp_path_factory.mktemp("authors") / "data"
    images = golden["images"]
    for folder in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    for name, jpeg, png in zip(images["names"], images["jpeg"], images["png"]):
        (root / "JPEGImages" / f"{name}.jpg").write_bytes(jpeg.numpy().tobytes())
        (root / "SegmentationClassAug" / f"{name}.png").write_bytes(png.numpy().tobytes())
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{n}\n" for n in images["names"]))
    return root


def config_args(golden: dict, root: Path) -> list[str]:
    return ["--config", golden["config"], *golden["overrides"], f"data.root={root}"]


def save_as_train_voc(golden: dict, folder: Path) -> Path:
    path = folder / golden["checkpoint_name"]
    torch.save(golden["state_dict"], path)
    return path


def save_as_train_coco(golden: dict, folder: Path) -> Path:
    """``utils/pyutils.save_train``'s layout: the state dict beside the optimizer's, the step and the lr."""
    path = folder / "model_iter_latest.pth"
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
                 "param_groups": [{"lr": 6e-5, "weight_decay": 0.01, "params": [0]}]}
    torch.save({"step": 2000, "model_state_dict": golden["state_dict"], "optimizer_state_dict": optimizer,
                "lr": 5.4e-05}, path)
    return path


@pytest.mark.parametrize("layout", [save_as_train_voc, save_as_train_coco])
def test_eval_of_the_authors_checkpoint_gives_the_reference_numbers(golden, root, tmp_path, capsys, layout):
    ckpt = layout(golden, tmp_path)
    code = main(["eval", str(ckpt), "--split", "val", "--out", str(tmp_path / "out"), *config_args(golden, root)])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert record["iteration"] == 2000 and record["num_images"] == 4
    assert record["cls_f1"] == pytest.approx(golden["numbers"]["cls_f1"], abs=1e-12)
    for column in COLUMNS:
        ours, theirs = record["outputs"][column], golden["numbers"][column]
        for key in ("iou", "precision", "recall", "confusion"):
            scale = 1.0 if key == "confusion" else 100.0  # eval.json is in the table's units
            for got, want in zip(ours[key].values(), theirs[key].tolist(), strict=True):
                if math.isfinite(want):
                    assert got == pytest.approx(scale * want, rel=1e-9, abs=1e-9), (column, key)
                else:
                    assert got is None, (column, key)  # strict JSON: an infinite FP/TP is null
    assert any(v > 0 for c in COLUMNS for v in golden["numbers"][c]["iou"].tolist())  # not a degenerate fixture


def test_the_authors_checkpoint_needs_a_config_and_cannot_resume_training(golden, tmp_path, capsys):
    ckpt = save_as_train_voc(golden, tmp_path)
    assert main(["eval", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "authors' format (zwyang6/MoRe), which carries no config: give the one it was trained with" in err
    with pytest.raises(CheckpointError, match="authors' format .* cannot resume training"):
        load_checkpoint(ckpt)


def _edited(golden: dict, tmp_path: Path, edit) -> Path:
    state = dict(golden["state_dict"])
    edit(state)
    path = tmp_path / "model_iter_5.pth"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("edit, overrides, message", [
    (lambda s: s.pop("module.decoder.conv8.weight"), [], "missing: decoder.conv8.weight"),
    (lambda s: s.update({"module.encoder.extra_scale": torch.ones(1)}), [], "unexpected: encoder.extra_scale"),
    (lambda s: s.update({"module.proj.weight": torch.ones(1)}), [], "unexpected: module.proj.weight"),
    (lambda s: None, ["model.decoder_channels=16"], "shape (file vs config): decoder.conv6.weight (32, 64, 3, 3) vs "
                                                    "(16, 64, 3, 3)"),
    (lambda s: None, ["gcr.enabled=false"], "unexpected: graph_layer."),
    (lambda s: None, ["model.num_registers=0"], "shape (file vs config): encoder.cls_token (1, 7, 64) vs (1, 3, 64), "
                                                "encoder.pos_embed (1, 203, 64) vs (1, 199, 64)"),
])
def test_weights_that_do_not_fit_the_config_are_named(golden, root, tmp_path, edit, overrides, message):
    ckpt = _edited(golden, tmp_path, edit)
    with pytest.raises(CheckpointError) as info:
        load_run(ckpt, [*golden["overrides"], f"data.root={root}", *overrides], config=golden["config"])
    text = str(info.value)
    assert str(ckpt) in text and "the authors' weights do not fit the model of this config" in text
    assert message in text


def test_infer_reads_the_authors_checkpoint(golden, root, tmp_path, capsys):
    ckpt = save_as_train_voc(golden, tmp_path)
    code = main(["infer", str(ckpt), "--task", "seg", "--split", "val", "--out", str(tmp_path / "seg"),
                 *config_args(golden, root)])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "seg" / "metrics.json").read_text())
    assert record["iteration"] == 2000 and record["num_images"] == 4
    assert sorted(p.name for p in (tmp_path / "seg" / "seg_raw").iterdir()) == sorted(
        f"{n}.png" for n in golden["images"]["names"])
