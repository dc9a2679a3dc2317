"""Content keys: what decides a trial's result changes its key, runtime-only fields and path spellings do not."""

from __future__ import annotations

import subprocess

from loopback_cluster import tiny_overrides, write_spec

from more.config import load_config
from more.harness.identity import (
    code_identity,
    dataset_identity,
    file_identity,
    spec_identities,
    trial_identity,
)
from more.harness.spec import expand, load_spec


def key(overrides: dict, *, stop: dict | None = None, code: str = "c0") -> str:
    cfg = load_config("synthetic", overrides)
    return trial_identity(cfg, stop=stop or {}, scheduler=None, metric="val/seg/miou", mode="max", code=code).key


def test_runtime_fields_and_the_synthetic_root_path_do_not_change_the_key(tmp_path):
    base = {"data.root": str(tmp_path / "a"), "train.max_iters": 6}
    k = key(base)
    for extra in ({"runtime.num_threads": 3}, {"runtime.out_dir": "/elsewhere"}, {"data.num_workers": 0},
                  {"runtime.device": "cpu"}, {"train.keep_ckpts": 9}, {"eval.num_vis": 0},
                  {"data.root": str(tmp_path / "b")}):  # a generated set is identified by its generator options
        assert key({**base, **extra}) == k, extra
    for extra in ({"lir.cre_weight": 0.1}, {"train.seed": 1}, {"train.max_iters": 7}, {"data.synth_seed": 3}):
        assert key({**base, **extra}) != k, extra
    assert key(base, code="c1") != k
    cfg = load_config("synthetic", base)
    a = trial_identity(cfg, stop={}, scheduler=None, metric="m", mode="max", code="c0")
    b = trial_identity(cfg, stop={}, scheduler=None, metric="m", mode="max", code="c1")
    assert a.config_key == b.config_key and a.key != b.key


def test_the_stop_iteration_is_a_target_not_part_of_the_key_and_other_stop_rules_are(tmp_path):
    base = {"data.root": str(tmp_path), "train.max_iters": 12}
    cfg = load_config("synthetic", base)
    short = trial_identity(cfg, stop={"iter": 6}, scheduler=None, metric="m", mode="max", code="c")
    full = trial_identity(cfg, stop={}, scheduler=None, metric="m", mode="max", code="c")
    assert (short.key, short.target_iters, full.target_iters) == (full.key, 6, 12)
    assert key(base, stop={"val/seg/miou": 50.0}) != key(base)


def test_dataset_identity_follows_list_files_and_tree_not_the_path(tmp_path):
    def tree(root):
        (root / "ImageSets" / "Segmentation").mkdir(parents=True)
        (root / "JPEGImages").mkdir()
        (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("a\nb\n")
        (root / "ImageSets" / "Segmentation" / "val.txt").write_text("c\n")
        for name in "abc":
            (root / "JPEGImages" / f"{name}.jpg").write_bytes(b"x" * 10)
        return root

    one, two = tree(tmp_path / "one"), tree(tmp_path / "two")
    ident = lambda root: dataset_identity(load_config("voc", {"data.root": str(root)}))  # noqa: E731
    assert ident(one) == ident(two)
    (two / "ImageSets" / "Segmentation" / "val.txt").write_text("c\nd\n")
    assert ident(one)["lists"]["val"] != ident(two)["lists"]["val"]
    (one / "JPEGImages" / "d.jpg").write_bytes(b"y")
    assert ident(one)["tree"] != ident(tree(tmp_path / "three"))["tree"]


def test_weights_are_identified_by_content_with_a_cached_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    w = tmp_path / "w.pth"
    w.write_bytes(b"\0" * 1000)
    first = file_identity(w)
    assert first["size"] == 1000 and len(first["sha256"]) == 64
    assert str(w) in (tmp_path / "cache" / "more" / "file_hashes.json").read_text()
    copy = tmp_path / "copy.pth"
    copy.write_bytes(w.read_bytes())
    assert file_identity(copy) == first  # another path, the same weights
    w.write_bytes(b"\1" * 1000)  # same size, new content, new mtime: hashed again
    assert file_identity(w)["sha256"] != first["sha256"]
    base = {"data.root": str(tmp_path / "d")}
    assert key({**base, "model.pretrained": str(copy)}) != key({**base, "model.pretrained": str(w)})


def test_code_identity_is_the_commit_plus_a_hash_of_the_dirty_tree(tmp_path, monkeypatch):
    monkeypatch.delenv("MORE_CODE_ID", raising=False)
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "m.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert code_identity(tmp_path) == sha
    (tmp_path / "notes.txt").write_text("outside more/: not code")
    assert code_identity(tmp_path) == sha
    (tmp_path / "more" / "m.py").write_text("x = 2\n")
    dirty = code_identity(tmp_path)
    assert dirty.startswith(f"{sha}+dirty.")
    (tmp_path / "more" / "m.py").write_text("x = 3\n")
    assert code_identity(tmp_path) not in (dirty, sha)  # two different dirty trees never share an identity
    monkeypatch.setenv("MORE_CODE_ID", "build-7")
    assert code_identity(tmp_path) == "build-7"


def test_spec_identities_cover_every_trial(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", "s", {"a": {}, "b": {"lir.cre_weight": 0.0}},
                      overrides=tiny_overrides(tmp_path / "synth"), seeds=[0, 1], stop={"iter": 3})
    loaded = load_spec(spec)
    ids = spec_identities(loaded, expand(loaded), code="c")
    assert sorted(ids) == ["a-s0", "a-s1", "b-s0", "b-s1"] and len({i.key for i in ids.values()}) == 4
    assert {i.target_iters for i in ids.values()} == {3}


def test_the_scheduler_is_part_of_the_key(tmp_path):
    """ASHA ends trials early depending on the others: its results are not those of the same config run alone."""
    cfg = load_config("synthetic", {"data.root": str(tmp_path)})
    keys = {trial_identity(cfg, stop={}, scheduler=s, metric="m", mode="max", code="c").key
            for s in (None, {"type": "asha", "time_attr": "iter"}, {"type": "asha", "time_attr": "iter", "max_t": 9})}
    assert len(keys) == 3
