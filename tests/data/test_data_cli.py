"""``python -m more data synth|check`` through ``more.__main__.main``."""

from __future__ import annotations

from more.__main__ import main
from more.data import read_split


def test_synth_refuses_to_overwrite_and_force_replaces(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["data", "synth", "--out", str(out), "--classes", "3", "--train", "6", "--val", "3", "--size", "48"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "synth: train 6/6" in printed and "images: train 6, val 3, test 2" in printed
    train = out / "ImageSets" / "Segmentation" / "train.txt"
    assert len(read_split(train)) == 6
    (out / "extra.txt").write_text("mine")
    assert main([*args[:-4], "--train", "4", "--size", "48"]) == 2  # bad input: --out is not empty
    assert "not empty" in capsys.readouterr().err
    assert len(read_split(train)) == 6 and (out / "extra.txt").is_file()  # untouched
    assert main([*args[:-4], "--train", "4", "--size", "48", "--force"]) == 0
    assert len(read_split(train)) == 4 and not (out / "extra.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # no temporary siblings left


def test_synth_into_an_empty_folder(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    args = ["data", "synth", "--out", str(out), "--classes", "2", "--train", "2", "--val", "2", "--size", "48"]
    assert main(args) == 0
    assert (out / "README.txt").is_file()


def test_check_ok_and_failing(synth_root, voc_root, capsys):
    assert main(["data", "check", str(synth_root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{synth_root} (synthetic, 3 classes)\n")  # detected from its dataset.yaml
    assert out.endswith(f"ok: {synth_root} (synthetic, 3 classes): train 8, train_aug 8, val 4, test 2\n")
    assert main(["data", "check", str(synth_root), "--dataset", "synthetic", "--splits", "val", "--classes", "3"]) == 0
    assert capsys.readouterr().out.endswith(f"ok: {synth_root} (synthetic, 3 classes): val 4\n")
    lists = voc_root / "ImageSets" / "Segmentation"
    (lists / "val.txt").rename(lists / "v.txt")
    assert main(["data", "check", str(voc_root), "--splits", "train", "val"]) == 1
    captured = capsys.readouterr()
    assert captured.out.endswith(f"{lists / 'val.txt'}: list file missing\n") and "1 problem(s)" in captured.err
    (lists / "v.txt").rename(lists / "val.txt")
    (voc_root / "JPEGImages" / "2007_000129.jpg").write_bytes(b"not a jpeg")
    assert main(["data", "check", str(voc_root), "--splits", "train"]) == 0  # the broken image is a val image
    capsys.readouterr()
    assert main(["data", "check", str(voc_root)]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if not line.startswith((str(voc_root) + " ",
                                                                                              "  "))]
    assert problems[0].startswith(f"{voc_root / 'JPEGImages' / '2007_000129.jpg'}: unreadable image")
