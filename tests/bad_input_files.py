"""The files the bad-input table (``tests/test_bad_input.py``) builds in each case's folder: configs, specs,
search specs, checkpoints and the harness's results, each small and each wrong in one way when asked."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml
from tiny_config import TINY

from more.tracking.store import free_port


@dataclass(frozen=True)
class Assets:
    data: Path  # the tiny synthetic dataset (read only)
    run: Path  # a run folder with one checkpoint (copied into a case before use)


def closed_port() -> int:
    return free_port()  # nothing listens there once its probe socket is closed


# ------------------------------------------------------------------------------------------ file builders


def config(d: Path, a: Assets, *extra: str, name: str = "cfg.yaml", text: str | None = None) -> str:
    """A config file of the tiny recipe on the tiny data, writing under ``d/runs``; ``extra`` are more overrides."""
    path = d / name
    path.write_text(text if text is not None else yaml.safe_dump({
        "preset": "synthetic",
        "overrides": [*TINY, f"data.root={a.data}", f"runtime.out_dir={d / 'runs'}", *extra]}))
    return str(path)


def spec(d: Path, a: Assets, *cfg_extra: str, text: str | None = None, **fields: object) -> str:
    """An ablation spec over :func:`config` with one condition and one seed; ``fields`` replace spec keys."""
    path = d / "spec.yaml"
    if text is None:
        data = {"name": "demo", "experiment": {"config": config(d, a, *cfg_extra)}, "conditions": {"more": {}},
                "seeds": [0], "resources": {"cpus": 1, "gpus": 0}}
        data.update(fields)
        text = yaml.safe_dump(data)
    path.write_text(text)
    return str(path)


def training_search(d: Path, a: Assets, *cfg_extra: str, **fields: object) -> str:
    path = d / "search.yaml"
    body = {"name": "tsearch", "kind": "training", "experiment": {"config": config(d, a, *cfg_extra)},
            "space": {"eval.bkg_thre": {"type": "float", "low": 0.2, "high": 0.5}}, "trials": 2}
    body.update(fields)
    path.write_text(yaml.safe_dump({"search": body}))
    return str(path)


def cached_search(d: Path, **fields: object) -> str:
    path = d / "cached.yaml"
    body = {"name": "csearch", "kind": "cached", "tuning_split": "train", "report_split": "val",
            "space": {"eval.bkg_thre": {"type": "float", "low": 0.1, "high": 0.9}}, "trials": 3}
    body.update(fields)
    path.write_text(yaml.safe_dump({"search": body}))
    return str(path)


def run_copy(d: Path, a: Assets) -> Path:
    """The asset run, copied into the case folder (so the hash covers it)."""
    shutil.copytree(a.run, d / "run")
    return d / "run"


def ckpt(d: Path, a: Assets) -> str:
    return str(run_copy(d, a) / "checkpoints" / "iter_000003" / "checkpoint.pt")


def text_file(d: Path, name: str, content: str = "my notes\n") -> str:
    path = d / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return str(path)


def folder(d: Path, name: str) -> str:
    (d / name).mkdir(parents=True)
    return str(d / name)


def refused_pickle(d: Path) -> str:
    """A checkpoint holding a Python object that ``weights_only=True`` refuses."""
    import argparse

    import torch

    path = d / "evil" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save({"model": {}, "payload": argparse.Namespace(x=1)}, path)
    return str(path)


def bad_saved_config(d: Path, a: Assets) -> str:
    run = run_copy(d, a)
    saved = run / "checkpoints" / "iter_000003" / "config.yaml"
    data = yaml.safe_load(saved.read_text())
    data["optim"]["lr"] = -1.0
    saved.write_text(yaml.safe_dump(data))
    return str(saved.parent)


def results_with_classes(d: Path, a: Assets, out: str | None = None) -> list[str]:
    """A spec and the harness's results.json with per-class IoU (the report's fallback source)."""
    from more.harness.spec import expand, load_spec, spec_hash

    path = spec(d, a)
    parsed = load_spec(path)
    trials = expand(parsed)
    folder_ = d / "storage" / f"demo-{spec_hash(parsed, trials)}"
    folder_.mkdir(parents=True)
    metrics = {"iter": 6.0, "val/seg/miou": 50.0, "val/seg/iou/background": 80.0, "val/seg/iou/disc": 40.0}
    folder_.joinpath("results.json").write_text(json.dumps([{
        "trial": t.name, "condition": t.condition, "seed": t.seed, "sweep": t.sweep, "overrides": t.overrides,
        "status": "TERMINATED", "error": "", "metrics": metrics, "config": {}, "run_dir": ""} for t in trials]))
    return ["report", path, "--storage", str(d / "storage"), "--no-log", "--out", out or str(d / "report"),
            "--tracking-uri", f"sqlite:///{d / 'storage'}/absent.db"]


def no_root(d: Path) -> tuple[str, str]:
    """Overrides naming a dataset root that does not exist (and is not generated on first use)."""
    return f"data.root={d}/nope", "data.synth_generate=false"


# ------------------------------------------------------------------ split lists, labels, weights, outputs (i18)


def data_copy(d: Path, a: Assets, *, empty_split: str | None = None) -> Path:
    """The tiny dataset copied into the case folder (so the hash covers it); ``empty_split`` gets an empty list."""
    root = d / "data"
    shutil.copytree(a.data, root, ignore=shutil.ignore_patterns(".more_cache"))
    if empty_split:
        (root / "ImageSets" / "Segmentation" / f"{empty_split}.txt").write_text("")
    return root


def train_names(a: Assets) -> list[str]:
    return (a.data / "ImageSets" / "Segmentation" / "train.txt").read_text().split()


def labels_file(d: Path, a: Assets, kind: str) -> str:
    """A labels file of the tiny set that is wrong in one way (``kind``)."""
    names = train_names(a)
    path = d / ("labels.txt" if kind == "text-line" else "labels.bin" if kind == "binary" else "labels.json")
    if kind == "not-json":
        path.write_text("{not json")
    elif kind == "not-a-mapping":
        path.write_text(json.dumps([[1], [2]]))
    elif kind == "text-line":
        path.write_text(f"{names[0]} 1 one\n")
    elif kind == "binary":
        path.write_bytes(bytes(range(128, 256)))
    elif kind == "class-out-of-range":
        path.write_text(json.dumps({n: [99] for n in names}))
    elif kind == "missing-images":
        path.write_text(json.dumps({names[0]: [1]}))
    elif kind == "few-labelled":  # every image listed, only two with a class: fewer than one batch of 4
        path.write_text(json.dumps({n: ([1] if i < 2 else []) for i, n in enumerate(names)}))
    else:
        raise ValueError(kind)
    return f"data.labels_file={path}"


def labels_override(d: Path, a: Assets, kind: str) -> dict[str, str]:
    """A wrong labels file as a spec's ``experiment.overrides`` mapping."""
    key, value = labels_file(d, a, kind).split("=", 1)
    return {key: value}


def weights_file(d: Path, kind: str) -> str:
    """A ``model.pretrained`` file that does not load into vit_micro (``kind`` says how)."""
    import torch

    suffix = {"safetensors-garbage": ".safetensors", "npz-garbage": ".npz"}.get(kind, ".pth")
    path = d / f"weights{suffix}"
    if kind in ("garbage", "safetensors-garbage", "npz-garbage"):
        path.write_bytes(b"not weights at all")
    elif kind == "not-a-state-dict":
        torch.save([1, 2, 3], path)
    elif kind == "no-vit-keys":
        torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    elif kind == "other-width":  # a ViT of another width (vit_tiny's 192 against vit_micro's 64)
        torch.save({"cls_token": torch.zeros(1, 1, 192), "pos_embed": torch.zeros(1, 17, 192),
                    "blocks.0.norm1.weight": torch.zeros(192)}, path)
    else:
        raise ValueError(kind)
    return f"model.pretrained={path}"


def user_folder(d: Path, name: str) -> str:
    """A folder of the user's: it holds a file more did not write."""
    (d / name).mkdir(parents=True, exist_ok=True)
    (d / name / "notes.txt").write_text("mine\n")
    return str(d / name)

