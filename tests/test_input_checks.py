"""more.input_checks on inputs that are right (the wrong ones are rows of tests/test_bad_input.py): what passes, the
counts it reports, and the cases that must not be refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_config import TINY

from more.config import load_config
from more.input_checks import DataInputError, check_device, check_splits, check_weights, dataset_inputs


def tiny(root: Path, *extra: str):
    return load_config("synthetic", [*TINY, f"data.root={root}", *extra])


def names(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def test_the_tiny_set_passes_with_its_counts(tiny_root):
    assert dataset_inputs(tiny(tiny_root)) == ["data.train_split train (16 images)", "data.val_split val (6 images)"]
    # eval reads eval.max_images of the split it scores
    assert check_splits(tiny(tiny_root, "eval.max_images=2"), {"--split": "val"}) == ["--split val (2 images)"]


def test_a_labels_file_covering_what_is_read_passes(tiny_root, tmp_path):
    train, val = names(tiny_root, "train"), names(tiny_root, "val")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({**{n: [1] for n in train}, **{n: [2] for n in val[:2]}}))
    cfg = tiny(tiny_root, f"data.labels_file={labels}", "eval.max_images=2")
    assert dataset_inputs(cfg)[1] == "data.val_split val (2 images)"
    with pytest.raises(DataInputError, match=r"no labels for 4 image\(s\) of data.val_split='val'"):
        dataset_inputs(tiny(tiny_root, f"data.labels_file={labels}"))


def test_a_synthetic_set_to_generate_is_judged_by_its_options(tmp_path):
    cfg = tiny(tmp_path / "fresh", "data.synth_train=40")
    assert dataset_inputs(cfg) == ["data.train_split train (40 images)", "data.val_split val (6 images)"]
    assert not (tmp_path / "fresh").exists()  # judged, not generated


def test_weights_that_fit_load_on_the_meta_device(tiny_root, tmp_path):
    from more.model.build import build_backbone

    cfg = tiny(tiny_root)
    path = tmp_path / "w.pth"
    torch.save(build_backbone(cfg).state_dict(), path)
    cfg = tiny(tiny_root, f"model.pretrained={path}")
    assert check_weights(cfg) == f"weights {path} (load into vit_micro)"
    assert check_weights(tiny(tiny_root)) == ""  # random init: nothing to check


def test_timm_weights_are_checked_by_name_without_importing_torch(tiny_root):
    import subprocess
    import sys

    code = ("import sys\n"
            "from more.config import load_config\n"
            "from more.input_checks import DataInputError, check_weights\n"
            "cfg = load_config('synthetic', ['model.variant=vit_tiny', 'model.pretrained=timm'])\n"
            "assert check_weights(cfg) == ''\n"
            "try:\n"
            "    check_weights(load_config('synthetic', ['model.variant=vit_micro', 'model.pretrained=timm']))\n"
            "except DataInputError as exc:\n"
            "    print(exc)\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["model.pretrained='timm': no timm weights are known for variant vit_micro",
                                       "False"]


def test_devices_of_trials_follow_their_reservation():
    assert check_device("cpu") == "runtime.device cpu"
    assert check_device("cuda", gpus=0.5).startswith("runtime.device cuda")  # two trials per GPU still see cuda:0
    assert check_device("cuda:1", gpus=2).startswith("runtime.device cuda:1")
    with pytest.raises(DataInputError, match="resources.gpus=1"):
        check_device("cuda:1", gpus=1)
