"""``infer --task seg --split test --archive``: the archive the PASCAL VOC evaluation server takes
(``results/VOC2012/Segmentation/comp6_test_cls/<id>.png`` in a .tar.gz; palette PNGs at the original size)."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from more.__main__ import main
from more.data import VOC_PALETTE, write_mask
from more.eval.infer_archive import ARCHIVE_DIR, ARCHIVE_NAME, write_voc_archive
from more.outputs import OutputError


def test_seg_test_archive_layout_and_png_format(infer_ckpt, data_copy, tmp_path, capsys):
    names = (data_copy / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:4]
    (data_copy / "ImageSets" / "Segmentation" / "test.txt").write_text("".join(f"{n}\n" for n in names))
    out = tmp_path / "test_seg"
    code = main(["infer", "--no-tracking", str(infer_ckpt), "--task", "seg", "--crf", "--split", "test", "--archive",
                 "--out", str(out), f"data.root={data_copy}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "no ground truth" in captured.out and "evaluation server scores VOC2012's test split" in captured.err
    archive = out / ARCHIVE_NAME
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        files = sorted(n for n, m in members.items() if m.isfile())
        assert files == sorted(f"{ARCHIVE_DIR}/{n}.png" for n in names)
        assert {n for n, m in members.items() if m.isdir()} == {"results", "results/VOC2012",
                                                                 "results/VOC2012/Segmentation", ARCHIVE_DIR}
        for name in names:
            data = tar.extractfile(f"{ARCHIVE_DIR}/{name}.png").read()
            assert data == (out / "seg_crf" / f"{name}.png").read_bytes()  # the CRF output is what is packed
            with Image.open(io.BytesIO(data)) as im, Image.open(data_copy / "JPEGImages" / f"{name}.jpg") as jpg:
                assert im.format == "PNG" and im.mode == "P" and im.size == jpg.size
                assert bytes(im.getpalette()[:768]) == VOC_PALETTE.tobytes()
                assert int(np.asarray(im).max()) <= 3  # the tiny set's 3 classes
    again = write_voc_archive(out, "seg_crf", names, num_classes=3)  # same PNGs, same bytes (no times, sorted)
    assert again == archive and again.read_bytes() == archive.read_bytes()


def test_archive_refuses_missing_wrong_mode_wrong_size_and_out_of_range_pngs(tmp_path):
    folder = tmp_path / "seg_raw"
    folder.mkdir()
    with pytest.raises(OutputError, match="2 of 2 PNGs are missing"):
        write_voc_archive(tmp_path, "seg_raw", ["a", "b"], num_classes=20)
    write_mask(folder / "a.png", np.zeros((5, 7), dtype=np.uint8))
    Image.fromarray(np.zeros((5, 7, 3), dtype=np.uint8)).save(folder / "b.png")  # RGB, as the server refuses
    with pytest.raises(OutputError, match="expected a palette"):
        write_voc_archive(tmp_path, "seg_raw", ["a", "b"], num_classes=20)
    write_mask(folder / "b.png", np.full((5, 7), 21, dtype=np.uint8))
    with pytest.raises(OutputError, match="holds class 21"):
        write_voc_archive(tmp_path, "seg_raw", ["a", "b"], num_classes=20)
    write_mask(folder / "b.png", np.ones((5, 7), dtype=np.uint8))
    with pytest.raises(OutputError, match="differs from its image"):
        write_voc_archive(tmp_path, "seg_raw", ["a", "b"], num_classes=20, sizes={"a": (7, 5), "b": (8, 5)})
    assert not (tmp_path / ARCHIVE_NAME).exists()
    assert write_voc_archive(tmp_path, "seg_raw", ["a", "b"], num_classes=20, sizes={"b": (7, 5)}).is_file()


def test_archive_needs_the_seg_task(infer_ckpt, tmp_path, capsys):
    code = main(["infer", "--no-tracking", str(infer_ckpt), "--task", "seeds", "--archive", "--out",
                 str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "--archive" in err and "--task seg" in err and not (tmp_path / "x").exists()
