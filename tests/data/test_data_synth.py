"""The synthetic generator: determinism, layout, mask conventions, class/context statistics, loaders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from more.data import build_eval_dataset, build_train_dataset, check_dataset, read_mask, read_split, render_sample
from more.data.synth import STYLES, SynthOptions, generate_dataset

TINY = SynthOptions(classes=3, train=8, val=4, size=64, seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(synth_root, tmp_path):
    again = tmp_path / "again"
    generate_dataset(again, TINY, progress=lambda _: None)
    assert _files(synth_root) == _files(again)


def test_render_is_a_function_of_seed_and_index():
    a, b = render_sample(TINY, 3), render_sample(TINY, 3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    other_seed = render_sample(SynthOptions(classes=3, train=8, val=4, size=64, seed=1), 3)
    assert not np.array_equal(a.image, other_seed.image)
    assert not np.array_equal(a.image, render_sample(TINY, 4).image)


def test_layout(synth_root):
    lists = synth_root / "ImageSets" / "Segmentation"
    train, val, test = (read_split(lists / f"{s}.txt") for s in ("train", "val", "test"))
    assert len(train) == 8 and len(val) == 4 and len(test) == 2
    assert read_split(lists / "train_aug.txt") == train
    assert all(re.fullmatch(r"2026_\d{6}", n) for n in train + val + test)
    assert len(set(train + val + test)) == 14
    for name in train + val + test:
        with Image.open(synth_root / "JPEGImages" / f"{name}.jpg") as im:
            assert im.format == "JPEG" and im.size == (64, 64)
    for name in train + val:
        with Image.open(synth_root / "SegmentationClassAug" / f"{name}.png") as im:
            assert im.mode == "P" and im.size == (64, 64)
    assert not any((synth_root / "SegmentationClassAug" / f"{n}.png").exists() for n in test)
    readme = (synth_root / "README.txt").read_text()
    assert "seed=0" in readme and "classes=3" in readme and "boat" in readme
    meta = json.loads((synth_root / "synth.json").read_text())
    assert meta["classes"] == 3 and meta["seed"] == 0 and meta["class_names"] == ["background", "boat", "plane", "disc"]


def test_masks_follow_voc_conventions(synth_root):
    names = read_split(synth_root / "ImageSets" / "Segmentation" / "train.txt")
    for name in names:
        mask = read_mask(synth_root / "SegmentationClassAug" / f"{name}.png")
        values = set(np.unique(mask).tolist())
        assert values <= {0, 1, 2, 3, 255} and values & {1, 2, 3}  # every training image has a foreground class
        assert 255 in values  # the ignore band along object borders
        band = mask == 255
        fg = (mask > 0) & ~band
        # The band separates classes: no foreground pixel touches background horizontally.
        touching = (fg[:, 1:] & (mask[:, :-1] == 0)) | (fg[:, :-1] & (mask[:, 1:] == 0))
        assert not touching.any()
    assert check_dataset(synth_root) == []


def test_objects_classes_and_contexts_statistics():
    options = SynthOptions(classes=6, train=0, val=0, size=40, seed=3)
    samples = [render_sample(options, i) for i in range(100)]
    counts = np.array([len(s.classes) for s in samples])
    assert counts.min() >= 1 and counts.max() <= 3 and (counts >= 2).mean() > 0.3  # several objects, overlapping
    per_class = np.zeros(7)
    for s in samples:
        per_class[list(s.classes)] += 1
    assert (per_class[1:] >= 10).all()  # every class is well represented
    for name, cls in (("boat", 1), ("plane", 2)):
        with_class = [s for s in samples if cls in s.classes]
        without = [s for s in samples if cls not in s.classes]
        context = STYLES[name].context
        rate_with = np.mean([context in s.contexts for s in with_class])
        rate_without = np.mean([context in s.contexts for s in without])
        assert rate_with > 0.7 and rate_without < 0.3  # a strong, but not perfect, co-occurrence cue


def test_classes_differ_in_colour():
    options = SynthOptions(classes=6, train=0, val=0, size=64, seed=5)
    means: dict[int, list[np.ndarray]] = {c: [] for c in range(1, 7)}
    for i in range(60):
        s = render_sample(options, i)
        for c in s.classes:
            means[c].append(s.image[s.mask == c].mean(axis=0))
    centres = np.stack([np.mean(means[c], axis=0) for c in range(1, 7)])  # (6, 3)
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(6, 1)]
    assert distances.min() > 15


def test_loaders_read_the_synthetic_set(synth_root, trees):
    cfg = trees.small_cfg(synth_root, "synthetic", **{"data.synth_classes": 3, "data.synth_generate": False})
    train = build_train_dataset(cfg)
    assert len(train) == 8 and train[0]["image"].shape == (3, 64, 64) and train.labels.shape == (8, 3)
    assert (train.labels.sum(1) >= 1).all()
    val = build_eval_dataset(cfg)
    assert len(val) == 4 and val[0]["mask"].shape == (64, 64)


def test_too_many_classes_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="1..8"):
        generate_dataset(tmp_path / "x", SynthOptions(classes=9, train=1, val=1, size=32, seed=0))
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []
