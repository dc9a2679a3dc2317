"""``data prepare voc`` on a miniature VOC 2012 + SBD release the test writes (PNG masks with void borders, SBD
``.mat`` files in SBD's structure), as folders and as the downloaded archives; the masks are compared with the arrays
the test drew, never with the converter's own helpers."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image
from tmpfs import mounted_tmpfs

from more.__main__ import main
from more.data.check import inspect_dataset
from more.data.classes import VOC_PALETTE
from more.data.prepare.common import PrepareError
from more.data.prepare.sources import SourceError
from more.data.prepare.voc import prepare_voc
from more.outputs import OutputError

A, B, C, D, E, F, G, H = ("2007_000032", "2007_000039", "2007_000063", "2007_000129", "2008_000002", "2008_000003",
                          "2009_000001", "2009_000077")
VOC_TRAIN, VOC_VAL = [B, A], [C, D]  # unsorted on purpose: the lists come out sorted
SBD_TRAIN, SBD_VAL = [B, E, F, C], [G, A]  # A and B also have VOC masks (VOC wins); C is VOC val (left out)
TRAIN_AUG = [A, B, E, F, G]  # VOC train ∪ SBD train ∪ SBD val − VOC val


def _boxes(seed: int, h: int, w: int) -> np.ndarray:
    """A (h, w) class map with two rectangles of random classes 1..20."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((h, w), dtype=np.uint8)
    for _ in range(2):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        seg[y0 : y0 + rng.integers(4, h // 2), x0 : x0 + rng.integers(4, w // 2)] = rng.integers(1, 21)
    return seg


def _with_void_border(seg: np.ndarray) -> np.ndarray:
    """VOC style: a 255 band where the class changes between 4-neighbours."""
    out = seg.copy()
    edge = np.zeros(seg.shape, dtype=bool)
    edge[:, 1:] |= seg[:, 1:] != seg[:, :-1]
    edge[1:, :] |= seg[1:, :] != seg[:-1, :]
    out[edge] = 255
    return out


def _png(mask: np.ndarray) -> bytes:
    im = Image.fromarray(mask, mode="P")
    im.putpalette(VOC_PALETTE.tobytes())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _write_sbd_mat(path: Path, seg: np.ndarray) -> None:
    """SBD's cls/NAME.mat: a struct GTcls with Segmentation, Boundaries (a cell of sparse maps) and
    CategoriesPresent."""
    present = np.unique(seg[seg > 0]).astype(np.uint8)
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = scipy.sparse.csc_matrix((seg == k + 1).astype(np.float64))
    scipy.io.savemat(path, {"GTcls": {"Segmentation": seg, "Boundaries": boundaries,
                                      "CategoriesPresent": present.reshape(-1, 1)}})


def build_release(tmp: Path) -> dict:
    """VOCdevkit/VOC2012 and benchmark_RELEASE/dataset folders; returns the expected masks and paths."""
    voc = tmp / "VOCdevkit" / "VOC2012"
    sbd = tmp / "benchmark_RELEASE" / "dataset"
    sizes = {n: (24 + 2 * i, 30 + 3 * i) for i, n in enumerate([A, B, C, D, E, F, G, H])}
    expected = {}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        rgb = np.random.default_rng(100 + i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        for folder in (voc / "JPEGImages", sbd / "img"):
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(folder / f"{name}.jpg", quality=90)
        if name in (A, B, C, D):  # VOC's own masks, with void borders
            mask = _with_void_border(_boxes(i, h, w))
            (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            (voc / "SegmentationClass" / f"{name}.png").write_bytes(_png(mask))
            expected[name] = mask
        if name in SBD_TRAIN + SBD_VAL:  # SBD: a different annotation of the same image, no border
            seg = _boxes(50 + i, h, w)
            (sbd / "cls").mkdir(parents=True, exist_ok=True)
            _write_sbd_mat(sbd / "cls" / f"{name}.mat", seg)
            expected.setdefault(name, seg)
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, names in (("train", VOC_TRAIN), ("val", VOC_VAL), ("trainval", VOC_TRAIN + VOC_VAL)):
        (lists / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    (sbd / "train.txt").write_text("".join(f"{n}\n" for n in SBD_TRAIN))
    (sbd / "val.txt").write_text("".join(f"{n}\n" for n in SBD_VAL))
    return {"voc": voc, "sbd": sbd, "devkit": tmp / "VOCdevkit", "release": tmp / "benchmark_RELEASE",
            "expected": expected}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime: a source must come out unchanged."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def release(tmp_path: Path) -> dict:
    return build_release(tmp_path / "src")


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


def test_folders_to_train_aug_tree(release, tmp_path):
    before = snapshot(release["devkit"].parent)
    out = tmp_path / "out"
    outcome = prepare_voc(release["devkit"], release["release"], out, workers=2)
    lists = out / "ImageSets" / "Segmentation"
    assert (lists / "train_aug.txt").read_text().split() == TRAIN_AUG
    assert (lists / "train.txt").read_text().split() == sorted(VOC_TRAIN)
    assert (lists / "val.txt").read_text().split() == VOC_VAL
    for name in TRAIN_AUG + VOC_VAL:
        assert np.array_equal(_read_png(out / "SegmentationClassAug" / f"{name}.png"), release["expected"][name]), name
    for name in (A, B, C, D):  # VOC's own PNG, byte for byte, wins over SBD
        voc_png = (release["voc"] / "SegmentationClass" / f"{name}.png").read_bytes()
        assert (out / "SegmentationClassAug" / f"{name}.png").read_bytes() == voc_png
    assert sorted(p.name for p in (out / "SegmentationClassAug").iterdir()) == sorted(f"{n}.png" for n in
                                                                                      TRAIN_AUG + VOC_VAL)
    image = out / "JPEGImages" / f"{E}.jpg"
    assert image.is_symlink() and image.resolve() == (release["voc"] / "JPEGImages" / f"{E}.jpg").resolve()
    assert not (out / "JPEGImages" / f"{H}.jpg").exists()  # not listed
    labels = json.loads((out / "cls_labels.json").read_text())
    for name in TRAIN_AUG + VOC_VAL:
        present = sorted(set(np.unique(release["expected"][name]).tolist()) - {0, 255})
        assert labels[name] == present
    record = json.loads((out / "prepare.json").read_text())
    assert record["complete"] and record["counts"] == {"train_aug": 5, "train": 2, "val": 2}
    assert record["mask_sources"] == {"voc": 4, "sbd": 3} and record["images"] == "link"
    assert record["count_check"][0] == ("train_aug: 5 images, differs by -10577 from the published 10582 of "
                                        "VOC 2012 + SBD")
    assert record["content_hash"] == outcome.content_hash and record["content_hash"].startswith("sha256:")
    assert (out / ".more-output.json").is_file()
    assert snapshot(release["devkit"].parent) == before  # nothing written inside the sources
    report = inspect_dataset(out)
    assert report.problems == [] and report.counts == {"train_aug": 5, "train": 2, "val": 2}


def _tar(folder: Path, archive: Path, mode: str) -> Path:
    with tarfile.open(archive, mode) as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def test_archives_give_the_same_tree_with_copied_images(release, tmp_path, capsys):
    by_folder = prepare_voc(release["voc"], release["sbd"], tmp_path / "a")
    voc_tar = _tar(release["devkit"], tmp_path / "VOCtrainval_11-May-2012.tar", "w")
    sbd_tgz = _tar(release["release"], tmp_path / "benchmark.tgz", "w:gz")
    out = tmp_path / "b"
    assert main(["data", "prepare", "voc", "--voc", str(voc_tar), "--sbd", str(sbd_tgz), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "copied out of it" in printed and by_folder.content_hash in printed
    image = out / "JPEGImages" / f"{G}.jpg"
    assert not image.is_symlink() and image.read_bytes() == (release["voc"] / "JPEGImages" / f"{G}.jpg").read_bytes()
    for name in TRAIN_AUG + VOC_VAL:
        assert (out / "SegmentationClassAug" / f"{name}.png").read_bytes() == (
            tmp_path / "a" / "SegmentationClassAug" / f"{name}.png").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["VOCtrainval_11-May-2012.tar", "a", "b", "benchmark.tgz", "src"]


def test_interrupted_run_continues_and_a_finished_tree_is_only_verified(release, tmp_path, monkeypatch):
    import more.data.prepare.common as common

    out = tmp_path / "out"
    real_save, calls = common.atomic_save, []

    def interrupted_save(path, data):
        calls.append(path)
        if len(calls) == 5:  # prepare.json, then three masks; Ctrl-C during the fourth mask
            raise KeyboardInterrupt
        real_save(path, data)

    monkeypatch.setattr(common, "atomic_save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        prepare_voc(release["voc"], release["sbd"], out, workers=1)
    monkeypatch.setattr(common, "atomic_save", real_save)
    first = {p.name: p.stat().st_mtime_ns for p in (out / "SegmentationClassAug").iterdir()}
    assert 3 <= len(first) < 7 and not json.loads((out / "prepare.json").read_text())["complete"]
    assert not (out / "ImageSets").exists()  # lists are written last: a half-built tree is not trainable
    (out / "SegmentationClassAug" / f".{E}.png.x1.tmp").write_bytes(b"left by a killed run")
    with pytest.raises(PrepareError, match="was started with .*'images': 'link'.*not .*'images': 'copy'"):
        prepare_voc(release["voc"], release["sbd"], out, images="copy")
    done = prepare_voc(release["voc"], release["sbd"], out, workers=1)
    assert done.skipped == len(first) and done.written == 7 - len(first) + 7  # the other masks, every image link
    assert {n: t for n, t in ((p.name, p.stat().st_mtime_ns) for p in (out / "SegmentationClassAug").iterdir())
            if n in first} == first  # not rewritten
    assert not list((out / "SegmentationClassAug").glob(".*"))
    fresh = prepare_voc(release["voc"], release["sbd"], tmp_path / "fresh")
    assert done.content_hash == fresh.content_hash
    files = snapshot(out)
    again = prepare_voc(release["voc"], release["sbd"], out)
    assert again.verified_only and again.content_hash == done.content_hash and snapshot(out) == files
    mask = out / "SegmentationClassAug" / f"{A}.png"
    mask.write_bytes((out / "SegmentationClassAug" / f"{B}.png").read_bytes())
    with pytest.raises(PrepareError, match="changed since it was prepared"):
        prepare_voc(release["voc"], release["sbd"], out)


def test_bad_sources_and_outputs_are_refused_before_anything_is_written(release, tmp_path, capsys):
    voc, sbd = release["voc"], release["sbd"]
    cases = [
        (dict(voc=voc, sbd=sbd, out=voc / "aug"), OutputError, "is inside --voc"),
        (dict(voc=voc, sbd=sbd, out=sbd.parent), OutputError, "is inside --sbd|holds files more did not create"),
        (dict(voc=tmp_path / "nope", sbd=sbd, out=tmp_path / "o1"), SourceError, "--voc .*nope: does not exist"),
        (dict(voc=sbd, sbd=sbd, out=tmp_path / "o2"), SourceError, "--voc .*no ImageSets/Segmentation/train.txt"),
        (dict(voc=voc, sbd=voc, out=tmp_path / "o3"), SourceError, "--sbd .*no train.txt .*cls/"),
        (dict(voc=voc / "ImageSets" / "Segmentation" / "train.txt", sbd=sbd, out=tmp_path / "o4"), SourceError,
         "a file, but not an archive"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            prepare_voc(**kwargs)
    with pytest.raises(OutputError, match="is inside --voc"):
        prepare_voc(voc, sbd, voc / "aug", force=True)  # --force never allows writing into a source
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar archive at all" * 100)
    with pytest.raises(SourceError, match="broken.tar: cannot read the archive"):
        prepare_voc(broken, sbd, tmp_path / "o5")
    (voc / "SegmentationClass" / f"{D}.png").unlink()
    with pytest.raises(PrepareError, match=r"no mask for 1 val image\(s\), e.g. \['2007_000129'\]"):
        prepare_voc(voc, sbd, tmp_path / "o6")
    (sbd / "cls" / f"{E}.mat").write_bytes(b"MATLAB 5.0 MAT-file, but broken")
    (release["voc"] / "SegmentationClass" / f"{D}.png").write_bytes(_png(release["expected"][D]))
    with pytest.raises(PrepareError, match=f"{E}.mat: not an SBD class segmentation"):
        prepare_voc(voc, sbd, tmp_path / "o7")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("o") and p.name != "o7"]
    capsys.readouterr()
    assert main(["data", "prepare", "voc", "--voc", str(voc), "--sbd", str(sbd), "--out", str(voc / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out ") and "inside --voc" in err[0]


def test_sbd_mat_structure_is_what_scipy_reads(tmp_path):
    """The .mat files the tests write have SBD's layout (a GTcls struct with the three fields)."""
    seg = _boxes(0, 12, 10)
    _write_sbd_mat(tmp_path / "x.mat", seg)
    gt = scipy.io.loadmat(tmp_path / "x.mat", struct_as_record=False, squeeze_me=True)["GTcls"]
    assert set(gt._fieldnames) == {"Segmentation", "Boundaries", "CategoriesPresent"}
    assert np.array_equal(gt.Segmentation, seg)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 40 kB tmpfs (ten pages) mounted at a folder of the test (root only; skipped where mount is refused)."""
    with mounted_tmpfs(tmp_path / "small", "40k") as mnt:
        yield mnt


def test_a_full_disk_is_one_line_and_the_next_run_finishes(release, small_fs, capsys):
    import subprocess

    args = ["data", "prepare", "voc", "--voc", str(release["voc"]), "--sbd", str(release["sbd"]), "--out",
            str(small_fs / "voc"), "--images", "copy", "--workers", "1"]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("prepare voc ")]
    assert len(err) == 1 and err[0].startswith("error: disk full: writing ") and "free on" in err[0]
    assert not [p for p in (small_fs / "voc").rglob(".*.tmp")]  # the failed write left nothing half-written
    written = {p.relative_to(small_fs) for p in (small_fs / "voc").rglob("*") if p.suffix in (".png", ".jpg")}
    assert 0 < len(written) < 2 * len(TRAIN_AUG + VOC_VAL)  # it filled up half-way (masks, then images)
    subprocess.run(["mount", "-o", "remount,size=2m", str(small_fs)], check=True)
    assert main(args) == 0
    assert "already there" in capsys.readouterr().out
    assert written < {p.relative_to(small_fs) for p in (small_fs / "voc").rglob("*") if p.suffix in (".png", ".jpg")}
    assert json.loads((small_fs / "voc" / "prepare.json").read_text())["complete"]
