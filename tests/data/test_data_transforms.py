"""Training transforms: output shapes, normalisation, zero padding and reproducibility from torch's RNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from more.data import build_train_dataset, build_train_transform, eval_image, normalize


def _image(h: int = 50, w: int = 70) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("augmentation", ["voc", "coco"])
def test_shape_and_determinism_under_a_seed(trees, tmp_path, augmentation):
    cfg = trees.small_cfg(tmp_path, **{"data.augmentation": augmentation})
    transform = build_train_transform(cfg)
    img = _image()
    torch.manual_seed(0)
    a = transform(img)
    torch.manual_seed(0)
    b = transform(img)
    torch.manual_seed(1)
    c = transform(img)
    assert a.shape == (3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_normalize_values():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    out = normalize(x, [0.5, 0.2, 1.0], [0.5, 0.1, 2.0])
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([(0 - 0.5) / 0.5, (0.2 - 0.2) / 0.1, (1 - 1) / 2.0]))


def test_eval_image_resizes_to_a_square():
    orig = torch.full((10, 30, 3), 255, dtype=torch.uint8)
    out = eval_image(orig, 16, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    assert out.shape == (3, 16, 16)
    torch.testing.assert_close(out, torch.ones(3, 16, 16))


def test_coco_pads_small_images_with_black(trees, tmp_path):
    # Scale fixed at 0.5: a 40x40 white image becomes 20x20 inside a 64x64 crop of black padding.
    cfg = trees.small_cfg(tmp_path, "coco", **{"data.scale_min": 0.5, "data.scale_max": 0.5, "data.jitter_prob": 0.0})
    mean, std = torch.tensor(cfg.data.mean), torch.tensor(cfg.data.std)
    torch.manual_seed(0)
    out = build_train_transform(cfg)(Image.new("RGB", (40, 40), (255, 255, 255)))  # (3, 64, 64)
    pixels = out * std.view(3, 1, 1) + mean.view(3, 1, 1)  # back to [0, 1]
    white = (pixels > 0.99).all(dim=0)
    black = (pixels.abs() < 0.01).all(dim=0)
    assert int(white.sum()) == 20 * 20 and int(black.sum()) == 64 * 64 - 20 * 20
    ys, xs = torch.nonzero(white, as_tuple=True)
    assert int(ys.max() - ys.min()) == 19 and int(xs.max() - xs.min()) == 19  # one contiguous square


def test_voc_crop_respects_the_scale_range(trees, tmp_path):
    # scale=(1, 1), ratio=(1, 1) on a square image: the crop is the whole image, so a flip is the only change.
    cfg = trees.small_cfg(tmp_path, **{"data.scale_min": 1.0, "data.ratio_min": 1.0, "data.ratio_max": 1.0,
                                       "data.jitter_prob": 0.0, "data.hflip_prob": 1.0})
    img = _image(64, 64)
    out = build_train_transform(cfg)(img)
    expected = normalize(torch.from_numpy(np.array(img)).permute(2, 0, 1).flip(-1), cfg.data.mean, cfg.data.std)
    torch.testing.assert_close(out, expected)


def test_seeded_dataloader_with_workers_is_reproducible(voc_root, trees):
    ds = build_train_dataset(trees.small_cfg(voc_root))

    def epoch(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(ds, batch_size=3, shuffle=True, num_workers=2, generator=generator)
        return torch.cat([batch["image"] for batch in loader])

    first, again, other = epoch(0), epoch(0), epoch(1)
    assert first.shape == (3, 3, 64, 64)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_normalize_uint8_is_the_reference_formula_on_the_255_scale():
    # (x - 255·mean) / (255·std) in float64, then float32, with the ImageNet constants on the 0-255 scale
    mean255, std255 = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 256).expand(3, 1, 256)
    out = normalize(values, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert out.dtype == torch.float32
    for c in range(3):
        expected = ((np.arange(256, dtype=np.float64) - mean255[c]) / std255[c]).astype(np.float32)
        np.testing.assert_array_equal(out[c, 0].numpy(), expected)
