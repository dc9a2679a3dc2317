"""``python -m more eval``: eval.json / eval.md from a checkpoint, and clear errors for bad checkpoints."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from more.__main__ import main
from more.config import load_config
from more.data import build_eval_dataset, collate_eval
from more.data.synth import SynthOptions, generate_dataset
from more.eval.evaluate import OUTPUTS, evaluate
from more.eval.infer import load_run
from more.model import build_model
from more.train.checkpoint import save_checkpoint

OVERRIDES = [
    "data.synth_classes=3", "data.crop_size=64", "lir.ure_kernel=2", "model.variant=vit_micro", "eval.resize=32",
    "eval.batch_size=4", "pseudo.cam_scales=[1.0, 0.5]", "data.num_workers=0", "runtime.num_threads=1",
    "runtime.device=cpu",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A checkpoint folder of a randomly initialised vit_micro on a tiny synthetic set (3 classes, 8+4 images)."""
    tmp = tmp_path_factory.mktemp("evalcmd")
    generate_dataset(tmp / "data", SynthOptions(classes=3, train=8, val=4, size=64, seed=0), progress=lambda _: None)
    cfg = load_config("synthetic", [*OVERRIDES, f"data.root={tmp / 'data'}"])
    torch.manual_seed(0)
    model = build_model(cfg)
    return save_checkpoint(tmp / "run", iteration=5, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                           data_state={"epoch": 0, "position": 0}, cfg=cfg, keep=1)


def test_eval_writes_json_and_markdown_with_all_outputs(ckpt, capsys):
    code = main(["eval", str(ckpt), "--split", "val", "eval.max_images=3", "eval.batch_size=2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = ckpt / "eval_val"
    record = json.loads((out / "eval.json").read_text())
    assert record["checkpoint"] == str(ckpt / "checkpoint.pt") and record["iteration"] == 5
    assert record["split"] == "val" and record["num_images"] == 3  # the overrides were applied
    assert set(record["outputs"]) == set(OUTPUTS) == {"cam", "aux_cam", "lam", "fused", "seg"}
    assert 0.0 <= record["cls_f1"] <= 1.0
    for row in record["outputs"].values():
        assert {"miou", "mprecision", "mrecall", "mconfusion", "iou", "precision", "recall", "confusion"} <= set(row)
        assert list(row["iou"]) == ["background", "boat", "plane", "disc"]
        ious = [v for v in row["iou"].values() if v is not None]
        if len(ious) == 4:
            assert row["miou"] == pytest.approx(sum(ious) / 4)
        else:
            assert row["miou"] is None  # a NaN mean is written as null (strict JSON)
    markdown = (out / "eval.md").read_text()
    for label in ("CAM", "aux_CAM", "Score Map", "Fused", "Seg_Pred"):
        assert f"\n| {label} |" in markdown and f"\n| {label} |" in captured.out
    assert "eval val 3/3" in captured.err  # progress

    # the same numbers as the evaluator run directly on the same model and images
    run = load_run(ckpt, ["eval.max_images=3"])
    loader = torch.utils.data.DataLoader(build_eval_dataset(run.cfg, "val"), batch_size=3, collate_fn=collate_eval)
    direct = evaluate(run.model, loader, cfg=run.cfg, device=run.device)
    for name, s in direct.scores.items():
        for cls, value in zip(record["outputs"][name]["iou"], s.iou):
            got = record["outputs"][name]["iou"][cls]
            assert (got is None and math.isnan(value)) or got == pytest.approx(100 * value), (name, cls)
    assert record["cls_f1"] == pytest.approx(direct.cls_f1)


@pytest.mark.parametrize("command", [["eval"], ["infer", "--task", "seg"]])
def test_missing_corrupt_or_configless_checkpoint_exits_2_naming_the_path(ckpt, tmp_path, capsys, command):
    missing = tmp_path / "nowhere" / "iter_000001"
    assert main([command[0], str(missing), *command[1:]]) == 2
    assert str(missing) in capsys.readouterr().err

    corrupt = tmp_path / "corrupt"
    shutil.copytree(ckpt, corrupt)
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main([command[0], str(corrupt), *command[1:]]) == 2
    err = capsys.readouterr().err
    assert str(corrupt / "checkpoint.pt") in err and "cannot read checkpoint" in err

    configless = tmp_path / "configless"
    shutil.copytree(ckpt, configless)
    (configless / "config.yaml").unlink()
    assert main([command[0], str(configless), *command[1:]]) == 2
    assert "no config.yaml" in capsys.readouterr().err


def test_bad_override_or_unknown_split_exits_2(ckpt, capsys):
    assert main(["eval", str(ckpt), "eval.bkg_thre=high"]) == 2
    assert "eval.bkg_thre" in capsys.readouterr().err
    assert main(["infer", str(ckpt), "--task", "seg", "--split", "nosuch"]) == 2
    assert "dataset.yaml: splits: no split 'nosuch'" in capsys.readouterr().err  # the set's dataset.yaml (i19)
