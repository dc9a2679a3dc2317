"""The values one image's inference produces: sparse confusion counts, compact score maps, palette PNGs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from more.data import VOC_PALETTE, write_mask
from more.eval.infer_items import add_sparse, decode_maps, encode_maps, encode_mask, sparse_hist
from more.eval.infer_store import batch_grid, settings_differences


def test_sparse_hist_by_hand():
    pred = np.array([[0, 1, 2], [2, 2, 0]])
    gt = np.array([[0, 1, 1], [2, 255, 0]])  # 255 is ignored
    # pairs (gt, pred): (0,0) x2, (1,1), (1,2), (2,2) -> flat gt*3+pred: 0 x2, 4, 5, 8
    assert sparse_hist(pred, gt, 3).tolist() == [[0, 2], [4, 1], [5, 1], [8, 1]]
    dense = np.zeros(9, dtype=np.int64)
    add_sparse(dense, [[0, 2], [4, 1]])
    add_sparse(dense, sparse_hist(pred, gt, 3))
    assert dense.tolist() == [4, 0, 0, 0, 2, 1, 0, 0, 1]
    assert sparse_hist(pred, np.full_like(gt, 255), 3).shape == (0, 2)  # no ground truth: no counts


def test_uint8_maps_round_to_steps_of_1_255():
    scores = np.array([[[0.0, 0.5, 0.49 / 255, 1.0], [0.2, 0.999, 1.2, -0.1]]], dtype=np.float32)  # (1, 2, 4)
    data = encode_maps(scores, np.array([3]), "uint8")
    with np.load(io.BytesIO(data)) as npz:
        assert npz["scores"].dtype == np.uint8
        # 0.5 * 255 = 127.5 rounds half to even -> 128; 0.2 * 255 = 51; values outside [0, 1] are clipped
        assert npz["scores"].tolist() == [[[0, 128, 0, 255], [51, 255, 255, 0]]]
    decoded, classes = decode_maps(data)
    assert decoded.dtype == np.float32 and classes.tolist() == [3]
    assert np.abs(decoded - np.clip(scores, 0, 1)).max() <= 0.5 / 255 + 1e-7


def test_float16_maps():
    scores = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    decoded, classes = decode_maps(encode_maps(scores, np.array([1, 4]), "float16"))
    assert classes.tolist() == [1, 4]
    assert np.abs(decoded - scores).max() <= 2.0**-11  # half precision below 1
    with pytest.raises(ValueError, match="uint8 or float16"):
        encode_maps(scores, np.array([1, 4]), "int4")


def test_encoded_mask_is_the_voc_palette_png_write_mask_writes(tmp_path):
    label = np.random.default_rng(1).integers(0, 21, (9, 13)).astype(np.uint8)
    label[0, 0] = 255
    write_mask(tmp_path / "a.png", label)
    data = encode_mask(label)
    assert data == (tmp_path / "a.png").read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "P" and im.size == (13, 9)
        np.testing.assert_array_equal(np.array(im), label)
        assert bytes(im.getpalette()[:768]) == VOC_PALETTE.tobytes()


def test_batch_grid_and_settings_differences():
    assert batch_grid(5, 2) == [[0, 1], [2, 3], [4]]
    assert batch_grid(0, 4) == []
    before = {"task": "seeds", "scales": [1.0], "config": {"eval.bkg_thre": 0.5}, "images": {"count": 4}}
    now = {"task": "masks", "scales": [1.0], "config": {"eval.bkg_thre": 0.4}, "images": {"count": 4}}
    assert settings_differences(before, now) == ['eval.bkg_thre: 0.5 then, 0.4 now', 'task: "seeds" then, "masks" now']
    assert settings_differences(before, before) == []
