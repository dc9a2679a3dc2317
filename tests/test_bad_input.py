"""Bad input across every command: exit code 2, one line naming the culprit, no traceback, no Ray, no file touched.

Each case builds its files in its own folder, runs ``more.__main__.main(argv)`` in-process with that folder as the
working directory, and hashes the folder before and after. ``ray.init``, the harness's Ray start and any ``ray`` or
``mlflow`` subprocess fail the test if reached. The kinds follow issue 14: checked too late (``late``), touching the
user's files (``touch``), a traceback for a user error (``trace``), accepted but wrong (``accept``), naming the
wrong thing (``name``).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_input_files import (
    Assets,
    bad_saved_config,
    cached_search,
    ckpt,
    closed_port,
    config,
    data_copy,
    folder,
    labels_file,
    labels_override,
    no_root,
    refused_pickle,
    results_with_classes,
    spec,
    text_file,
    training_search,
    user_folder,
    weights_file,
)
from tiny_config import TINY

from more.__main__ import main


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    build: Callable[[Path, Assets], list[str]]
    expect: str  # a piece of the one stderr line: the flag, file, key or value at fault


@pytest.fixture(scope="module")
def assets(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Assets:
    """A run folder with an untrained checkpoint of the tiny config (no training needed to test refusals)."""
    from more.config import load_config, save_config
    from more.model import build_model
    from more.train.checkpoint import save_checkpoint
    from more.train.optim import PolyWarmupAdamW

    run = tmp_path_factory.mktemp("bad_input") / "run"
    cfg = load_config("synthetic", [*TINY, f"data.root={tiny_root}", f"runtime.out_dir={run.parent}"])
    model = build_model(cfg, load_weights=False)
    groups = model.param_groups(lr=cfg.optim.lr, head_lr_mult=cfg.optim.head_lr_mult,
                                weight_decay=cfg.optim.weight_decay)
    optimizer = PolyWarmupAdamW(groups, cfg=cfg.optim, max_iters=cfg.train.max_iters)
    save_checkpoint(run, iteration=3, model=model, optimizer=optimizer, data_state={"epoch": 0, "position": 0},
                    cfg=cfg, keep=1)
    save_config(cfg, run / "config.yaml")
    return Assets(tiny_root, run)


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way this process could start Ray (or a server) records the attempt and fails."""
    import ray

    import more.harness.local_ray as local_ray
    import more.tracking.store as store

    calls: list[str] = []

    def refuse(what: str) -> Callable[..., None]:
        def call(*_args: object, **_kwargs: object) -> None:
            calls.append(what)
            raise AssertionError(f"{what} was called for bad input")

        return call

    monkeypatch.setattr(ray, "init", refuse("ray.init"))
    monkeypatch.setattr(local_ray, "ray_runtime", refuse("ray_runtime"))
    monkeypatch.setattr(store, "start_server", refuse("start_server"))
    real_popen = subprocess.Popen

    class GuardedPopen(real_popen):  # a subclass, so code that checks isinstance(p, Popen) still works
        def __init__(self, args: object, *rest: object, **kwargs: object) -> None:
            text = " ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args)
            if re.search(r"\bray\b|raylet|gcs_server|mlflow", text):
                calls.append(text)
                raise AssertionError(f"subprocess {text} for bad input")
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", GuardedPopen)
    return calls


def tree_hash(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content hash (folders and links too)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + str(p.readlink())
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------------------------------------ cases

P = closed_port  # evaluated when a case runs: a port nothing listens on
LABEL_KINDS = ("not-json", "not-a-mapping", "text-line", "binary", "class-out-of-range", "missing-images")
WEIGHT_KINDS = ("garbage", "safetensors-garbage", "npz-garbage", "not-a-state-dict", "no-vit-keys", "other-width")
SEARCH_NO_TRACK = ("--no-tracking",)

CASES = [
    # --- checked too late: paths, URIs, storages and resources before Ray, a study or a file
    Case("late", "ablate-missing-data-root", lambda d, a: ["ablate", spec(d, a, *no_root(d))],
         "data.root"),
    Case("late", "ablate-dry-run-missing-data-root",
         lambda d, a: ["ablate", spec(d, a, *no_root(d)), "--dry-run"], "data.root"),
    Case("late", "ablate-missing-weights",
         lambda d, a: ["ablate", spec(d, a, f"model.pretrained={d}/weights.pth"), "--no-tracking"],
         "model.pretrained"),
    Case("late", "ablate-file-tracking-uri", lambda d, a: ["ablate", spec(d, a), "--tracking-uri", "file:///x"],
         "file"),
    Case("late", "ablate-tracking-server-closed",
         lambda d, a: ["ablate", spec(d, a), "--tracking-uri", f"http://127.0.0.1:{P()}"], "did not answer"),
    Case("late", "ablate-unknown-tracking-scheme",
         lambda d, a: ["ablate", spec(d, a), "--tracking-uri", "ftp://host/x"], "ftp"),
    Case("late", "ablate-address-closed",
         lambda d, a: ["ablate", spec(d, a), "--no-tracking", "--address", f"127.0.0.1:{P()}"], "--address"),
    Case("late", "ablate-address-no-port",
         lambda d, a: ["ablate", spec(d, a), "--no-tracking", "--address", "somehost"], "--address"),
    Case("late", "ablate-resources-no-node-holds",
         lambda d, a: ["ablate", spec(d, a, resources={"cpus": 100000, "gpus": 0}), "--no-tracking"], "resources"),
    Case("late", "ablate-storage-is-a-file",
         lambda d, a: ["ablate", spec(d, a), "--no-tracking", "--storage", text_file(d, "store.txt")], "--storage"),
    Case("late", "ablate-max-concurrent-0",
         lambda d, a: ["ablate", spec(d, a), "--no-tracking", "--max-concurrent", "0"], "--max-concurrent"),
    Case("late", "ablate-tracking-db-not-sqlite",
         lambda d, a: ["ablate", spec(d, a), "--tracking-uri", text_file(d, "mlflow.db")], "not a sqlite"),
    Case("late", "train-missing-data-root", lambda d, a: ["train", config(d, a, *no_root(d))],
         "data.root"),
    Case("late", "train-missing-weights", lambda d, a: ["train", config(d, a, f"model.pretrained={d}/w.pth")],
         "model.pretrained"),
    Case("late", "train-run-dir-is-a-file",
         lambda d, a: ["train", config(d, a), "--run-dir", text_file(d, "run.txt")], "--run-dir"),
    Case("late", "train-missing-labels-file",
         lambda d, a: ["train", config(d, a, f"data.labels_file={d}/labels.npy")], "data.labels_file"),
    Case("late", "train-absent-cuda-device", lambda d, a: ["train", config(d, a, "runtime.device=cuda:63")],
         "runtime.device"),
    Case("late", "eval-out-is-a-file",
         lambda d, a: ["eval", ckpt(d, a), "--out", text_file(d, "eval.txt")], "--out"),
    Case("late", "infer-out-is-a-file",
         lambda d, a: ["infer", ckpt(d, a), "--task", "seeds", "--out", text_file(d, "infer.txt")], "--out"),
    Case("late", "search-storage-is-a-folder",
         lambda d, a: ["search", training_search(d, a), *SEARCH_NO_TRACK, "--storage", folder(d, "journals")],
         "is a folder"),
    Case("late", "search-storage-unknown-driver",
         lambda d, a: ["search", training_search(d, a), *SEARCH_NO_TRACK, "--storage", "nosuchdb://x/y"],
         "nosuchdb"),
    Case("late", "search-storage-driver-not-installed",
         lambda d, a: ["search", training_search(d, a), *SEARCH_NO_TRACK, "--storage",
                       "postgresql+nosuchdriver://u@127.0.0.1/db"], "postgresql+nosuchdriver"),
    Case("late", "search-cached-without-checkpoint", lambda d, a: ["search", cached_search(d), *SEARCH_NO_TRACK],
         "--checkpoint"),
    Case("late", "search-training-with-checkpoint",
         lambda d, a: ["search", training_search(d, a), *SEARCH_NO_TRACK, "--checkpoint", ckpt(d, a)],
         "--checkpoint"),
    Case("late", "search-trials-0", lambda d, a: ["search", training_search(d, a), *SEARCH_NO_TRACK, "--trials", "0"],
         "--trials"),
    Case("late", "search-training-missing-data-root",
         lambda d, a: ["search", training_search(d, a, *no_root(d)), *SEARCH_NO_TRACK], "data.root"),
    Case("late", "search-tracking-server-closed",
         lambda d, a: ["search", training_search(d, a), "--tracking-uri", f"http://127.0.0.1:{P()}"],
         "did not answer"),
    Case("late", "search-address-closed",
         lambda d, a: ["search", training_search(d, a), *SEARCH_NO_TRACK, "--address", f"127.0.0.1:{P()}"],
         "--address"),
    Case("late", "search-out-is-a-file",
         lambda d, a: ["search", training_search(d, a), *SEARCH_NO_TRACK, "--out", text_file(d, "out.txt")],
         "--out"),
    Case("late", "search-resources-no-node-holds",
         lambda d, a: ["search", training_search(d, a, resources={"cpus": 1, "gpus": 64}), *SEARCH_NO_TRACK],
         "resources"),
    Case("late", "search-cached-split-missing",
         lambda d, a: ["search", cached_search(d, tuning_split="nosuchsplit"), *SEARCH_NO_TRACK, "--checkpoint",
                       ckpt(d, a), "--out", str(d / "out")], "nosuchsplit"),
    # --- touches the user's files: refuse first, write nothing
    Case("touch", "train-resume-unreadable-checkpoint",
         lambda d, a: ["train", config(d, a), "--resume", text_file(d, "x/y/z/checkpoint.pt", "not a checkpoint")],
         "cannot read checkpoint"),
    Case("touch", "train-resume-stray-checkpoint-file",
         lambda d, a: ["train", config(d, a), "--resume", str(Path(shutil.copy(ckpt(d, a), d / "copy.pt")))],
         "--run-dir"),
    Case("touch", "train-resume-override-does-not-fit",
         lambda d, a: ["train", config(d, a, "model.decoder_channels=48"), "--resume", ckpt(d, a)],
         "does not fit"),
    Case("touch", "search-storage-is-a-text-file",
         lambda d, a: ["search", training_search(d, a), *SEARCH_NO_TRACK, "--storage", text_file(d, "notes.txt")],
         "not an Optuna journal"),
    Case("touch", "search-cached-storage-is-a-text-file",
         lambda d, a: ["search", cached_search(d), *SEARCH_NO_TRACK, "--checkpoint", ckpt(d, a), "--storage",
                       text_file(d, "notes.txt")], "not an Optuna journal"),
    Case("touch", "search-storage-sqlite-not-a-database",
         lambda d, a: ["search", training_search(d, a), *SEARCH_NO_TRACK, "--storage",
                       f"sqlite:///{text_file(d, 'study.db')}"], "not a sqlite"),
    Case("touch", "data-synth-out-not-empty",
         lambda d, a: (text_file(d, "ds/mine.txt"), ["data", "synth", "--out", str(d / "ds"), "--size", "48"])[1],
         "not empty"),
    Case("touch", "data-synth-out-is-a-file",
         lambda d, a: ["data", "synth", "--out", text_file(d, "ds.txt"), "--size", "48"], "--out"),
    Case("touch", "eval-refused-pickle-no-unsafe-advice", lambda d, a: ["eval", refused_pickle(d)],
         "not loaded for safety"),
    Case("touch", "report-out-is-a-file", lambda d, a: results_with_classes(d, a, text_file(d, "r.txt")), "--out"),
    # --- a traceback where a line belongs
    Case("trace", "train-resume-missing-path",
         lambda d, a: ["train", config(d, a), "--resume", str(d / "nope")], "no checkpoint"),
    Case("trace", "train-device-typo", lambda d, a: ["train", config(d, a, "runtime.device=cudaa")],
         "runtime.device='cudaa'"),
    Case("trace", "ui-port-out-of-range", lambda d, a: ["ui", "--port", "70000"], "--port"),
    Case("trace", "ui-tracking-server-closed",
         lambda d, a: ["ui", "--tracking-uri", f"http://127.0.0.1:{P()}"], "did not answer"),
    Case("trace", "report-file-uri", lambda d, a: ["report", spec(d, a), "--tracking-uri", "file:///x"], "file"),
    Case("trace", "ablate-paper-not-numeric",
         lambda d, a: ["ablate", spec(d, a, paper={"rows": {"more": {"miou": "high"}}}), "--dry-run"],
         "paper.rows.more.miou"),
    Case("trace", "report-paper-not-numeric",
         lambda d, a: ["report", spec(d, a, paper={"rows": {"more": {"miou": "high"}}}), "--no-log"],
         "paper.rows.more.miou"),
    Case("trace", "eval-missing-checkpoint", lambda d, a: ["eval", str(d / "nope")], "no checkpoint"),
    Case("trace", "eval-garbage-checkpoint",
         lambda d, a: ["eval", text_file(d, "ck/checkpoint.pt", "garbage")], "cannot read checkpoint"),
    Case("trace", "config-missing-file", lambda d, a: ["config", "show", str(d / "nope.yaml")], "nope.yaml"),
    Case("trace", "config-invalid-yaml",
         lambda d, a: ["config", "show", config(d, a, text="train: [1,\n")], "not valid YAML"),
    Case("trace", "config-unknown-preset", lambda d, a: ["config", "show", config(d, a, text="preset: vocc\n")],
         "preset='vocc'"),
    Case("trace", "infer-negative-workers",
         lambda d, a: ["infer", ckpt(d, a), "--task", "seeds", "--workers", "-1"], "--workers"),
    Case("trace", "infer-neither-checkpoint-nor-spec", lambda d, a: ["infer", "--task", "seeds"], "--spec"),
    Case("trace", "infer-checkpoint-and-spec",
         lambda d, a: ["infer", ckpt(d, a), "--spec", spec(d, a), "--task", "seeds"], "not both"),
    Case("trace", "infer-spec-with-out",
         lambda d, a: ["infer", "--spec", spec(d, a), "--task", "seeds", "--out", str(d / "o")], "--out"),
    Case("trace", "infer-spec-with-config",
         lambda d, a: ["infer", "--spec", spec(d, a), "--task", "seeds", "--config", "synthetic"], "--config"),
    Case("trace", "infer-spec-never-launched",
         lambda d, a: ["infer", "--spec", spec(d, a), "--task", "seeds", "--storage", str(d / "st")],
         "no experiment of spec 'demo'"),
    Case("trace", "infer-spec-missing", lambda d, a: ["infer", "--spec", str(d / "nope.yaml"), "--task", "seeds"],
         "nope.yaml"),
    Case("trace", "infer-trials-without-spec",
         lambda d, a: ["infer", ckpt(d, a), "--task", "seeds", "--trials", "more-s0"], "--trials"),
    Case("trace", "infer-storage-without-spec",
         lambda d, a: ["infer", ckpt(d, a), "--task", "seeds", "--storage", str(d)], "--storage"),
    Case("trace", "eval-unknown-split",
         lambda d, a: ["eval", ckpt(d, a), "--split", "nosuchsplit", "--out", str(d / "ev")], "nosuchsplit"),
    Case("trace", "search-missing-spec", lambda d, a: ["search", str(d / "nope.yaml")], "nope.yaml"),
    Case("trace", "ablate-missing-spec", lambda d, a: ["ablate", str(d / "nope.yaml")], "nope.yaml"),
    # --- accepted, but wrong
    Case("accept", "config-lr-nan", lambda d, a: ["config", "check", "synthetic", "optim.lr=nan"], "optim.lr"),
    Case("accept", "config-lr-inf", lambda d, a: ["config", "check", "synthetic", "optim.lr=inf"], "finite"),
    Case("accept", "config-hue-nan-in-file",
         lambda d, a: ["config", "check", config(d, a, text="preset: synthetic\ndata:\n  jitter_hue: .nan\n")],
         "data.jitter_hue"),
    Case("accept", "config-crf-negative", lambda d, a: ["config", "check", "synthetic", "eval.crf_bi_sxy=-1"],
         "eval.crf_bi_sxy"),
    Case("accept", "config-crf-compat-negative",
         lambda d, a: ["config", "check", "synthetic", "eval.crf_gauss_compat=-0.5"], "eval.crf_gauss_compat"),
    Case("accept", "ablate-scheduler-misspelt-key",
         lambda d, a: ["ablate", spec(d, a, scheduler={"type": "asha", "grace_perod": 2}), "--dry-run"],
         "grace_perod"),
    Case("accept", "ablate-scheduler-time-attr",
         lambda d, a: ["ablate", spec(d, a, scheduler={"type": "asha", "time_attr": "epochs"}), "--dry-run"],
         "scheduler.time_attr"),
    Case("accept", "ablate-tracking-misspelt-key",
         lambda d, a: ["ablate", spec(d, a, tracking={"experimnt": "x"}), "--dry-run"], "tracking.experimnt"),
    Case("accept", "ablate-stop-iter-0", lambda d, a: ["ablate", spec(d, a, stop={"iter": 0}), "--dry-run"],
         "stop.iter"),
    Case("accept", "ablate-stop-threshold-nan",
         lambda d, a: ["ablate", spec(d, a, stop={"val/seg/miou": float("nan")}), "--dry-run"], "stop.val/seg/miou"),
    Case("accept", "config-duplicate-key",
         lambda d, a: ["config", "show", config(d, a, text="preset: synthetic\noptim:\n  lr: 0.1\n  lr: 0.2\n")],
         "duplicate key 'lr'"),
    Case("accept", "config-empty-file", lambda d, a: ["config", "show", config(d, a, text="")], "empty"),
    Case("accept", "ablate-conditions-without-value",
         lambda d, a: ["ablate", spec(d, a, text=f"name: demo\nexperiment: {{config: {config(d, a)}}}\nconditions:\n"),
                       "--dry-run"], "conditions"),
    Case("accept", "ablate-sweep-over-seed-with-seeds",
         lambda d, a: ["ablate", spec(d, a, sweeps={"train.seed": [1, 2]}), "--dry-run"], "train.seed"),
    Case("accept", "ablate-duplicate-condition",
         lambda d, a: ["ablate", spec(d, a, text=f"name: demo\nexperiment: {{config: {config(d, a)}}}\n"
                                                 "conditions:\n  more: {}\n  more: {}\n"), "--dry-run"],
         "duplicate key 'more'"),
    Case("accept", "report-classes-misspelt",
         lambda d, a: [*results_with_classes(d, a), "--classes", "dics"], "dics"),
    Case("accept", "data-synth-size-too-small",
         lambda d, a: ["data", "synth", "--out", str(d / "ds"), "--size", "16"], "--size"),
    Case("accept", "data-synth-too-many-classes",
         lambda d, a: ["data", "synth", "--out", str(d / "ds"), "--classes", "9"], "--classes"),
    Case("accept", "search-space-bound-inf",
         lambda d, a: ["search", training_search(d, a, space={"eval.bkg_thre": {"type": "float", "low": 0.1,
                                                                                "high": float("inf")}})],
         "eval.bkg_thre"),
    Case("accept", "search-tracking-misspelt-key",
         lambda d, a: ["search", training_search(d, a, tracking={"experimnt": "x"})], "tracking.experimnt"),
    # --- i18: what train meets only once it builds the dataset or the model, every command that takes a device,
    # and outputs that would write over the user's files or into a dataset the command reads
    *[Case("late", f"train-labels-{kind}", lambda d, a, kind=kind: ["train", config(d, a, labels_file(d, a, kind))],
           "data.labels_file") for kind in LABEL_KINDS],
    *[Case("late", f"train-weights-{kind}", lambda d, a, kind=kind: ["train", config(d, a, weights_file(d, kind))],
           "does not load") for kind in WEIGHT_KINDS],
    Case("late", "train-missing-train-split", lambda d, a: ["train", config(d, a, "data.train_split=nosuch")],
         "data.train_split='nosuch'"),
    Case("late", "train-missing-val-split", lambda d, a: ["train", config(d, a, "data.val_split=nosuch")],
         "data.val_split='nosuch'"),
    Case("late", "train-val-split-without-masks", lambda d, a: ["train", config(d, a, "data.val_split=test")],
         "data.val_split='test'"),
    Case("late", "train-train-split-without-masks", lambda d, a: ["train", config(d, a, "data.train_split=test")],
         "set data.labels_file"),
    Case("late", "train-empty-split-list",
         lambda d, a: ["train", config(d, a, f"data.root={data_copy(d, a, empty_split='val')}")], "names no image"),
    Case("late", "train-unknown-split-of-synthetic-set-to-generate",
         lambda d, a: ["train", config(d, a, f"data.root={d}/fresh", "data.train_split=nosuch")],
         "data.train_split='nosuch'"),
    Case("late", "train-split-smaller-than-a-batch", lambda d, a: ["train", config(d, a, "train.batch_size=64")],
         "train.batch_size=64"),
    Case("late", "train-split-smaller-than-an-accumulated-batch",
         lambda d, a: ["train", config(d, a, "train.accum_steps=64")], "train.accum_steps=64"),
    Case("late", "train-labelled-images-fewer-than-a-batch",
         lambda d, a: ["train", config(d, a, labels_file(d, a, "few-labelled"))], "fewer than one batch"),
    Case("late", "train-cuda-without-gpu", lambda d, a: ["train", config(d, a, "runtime.device=cuda")],
         "runtime.device='cuda'"),
    Case("late", "eval-cuda-without-gpu", lambda d, a: ["eval", ckpt(d, a), "runtime.device=cuda"],
         "runtime.device='cuda'"),
    Case("late", "eval-split-without-masks",
         lambda d, a: ["eval", ckpt(d, a), "--split", "test", "--out", str(d / "ev")], "--split='test'"),
    Case("late", "eval-config-split-missing", lambda d, a: ["eval", ckpt(d, a), "eval.split=nosuch"],
         "eval.split='nosuch'"),
    Case("late", "eval-labels-not-json", lambda d, a: ["eval", ckpt(d, a), labels_file(d, a, "not-json")],
         "data.labels_file"),
    Case("late", "infer-cuda-without-gpu",
         lambda d, a: ["infer", ckpt(d, a), "--task", "seeds", "runtime.device=cuda"], "runtime.device='cuda'"),
    Case("late", "search-cached-cuda-without-gpu",
         lambda d, a: ["search", cached_search(d, experiment={"overrides": {"runtime.device": "cuda"}}),
                       *SEARCH_NO_TRACK, "--checkpoint", ckpt(d, a)], "runtime.device='cuda'"),
    Case("late", "search-cached-tuning-split-without-masks",
         lambda d, a: ["search", cached_search(d, tuning_split="test"), *SEARCH_NO_TRACK, "--checkpoint", ckpt(d, a)],
         "tuning_split='test'"),
    Case("late", "search-cached-labels-not-json",
         lambda d, a: ["search", cached_search(d, experiment={"overrides": labels_override(d, a, "not-json")}),
                       *SEARCH_NO_TRACK, "--checkpoint", ckpt(d, a)], "data.labels_file"),
    Case("late", "search-training-cuda-without-a-reserved-gpu",
         lambda d, a: ["search", training_search(d, a, "runtime.device=cuda"), *SEARCH_NO_TRACK], "resources.gpus=0"),
    Case("late", "search-training-missing-val-split",
         lambda d, a: ["search", training_search(d, a, "data.val_split=nosuch"), *SEARCH_NO_TRACK], "data.val_split"),
    Case("late", "search-training-weights-garbage",
         lambda d, a: ["search", training_search(d, a, weights_file(d, "garbage")), *SEARCH_NO_TRACK],
         "does not load"),
    Case("late", "ablate-cuda-without-a-reserved-gpu",
         lambda d, a: ["ablate", spec(d, a, "runtime.device=cuda"), "--no-tracking"], "resources.gpus=0"),
    Case("late", "ablate-cuda-index-beyond-the-reservation",
         lambda d, a: ["ablate", spec(d, a, "runtime.device=cuda:1", resources={"cpus": 1, "gpus": 1}),
                       "--no-tracking"], "runtime.device='cuda:1'"),
    Case("late", "ablate-missing-train-split",
         lambda d, a: ["ablate", spec(d, a, "data.train_split=nosuch"), "--no-tracking"], "data.train_split"),
    Case("late", "ablate-labels-not-json",
         lambda d, a: ["ablate", spec(d, a, labels_file(d, a, "not-json")), "--no-tracking"], "data.labels_file"),
    Case("late", "ablate-weights-garbage",
         lambda d, a: ["ablate", spec(d, a, weights_file(d, "garbage")), "--no-tracking"], "does not load"),
    Case("late", "ablate-split-smaller-than-a-batch",
         lambda d, a: ["ablate", spec(d, a, "train.batch_size=64"), "--no-tracking"], "train.batch_size=64"),
    Case("touch", "train-run-dir-holds-user-files",
         lambda d, a: ["train", config(d, a), "--run-dir", user_folder(d, "mine")], "--force"),
    Case("touch", "train-run-dir-inside-data-root",
         lambda d, a: ["train", config(d, a, f"data.root={data_copy(d, a)}"), "--run-dir", str(d / "data" / "runs")],
         "inside data.root"),
    Case("touch", "train-out-dir-inside-data-root",
         lambda d, a: ["train", config(d, a, f"data.root={data_copy(d, a)}", f"runtime.out_dir={d}/data/runs")],
         "inside data.root"),
    Case("touch", "train-run-name-is-a-user-folder",
         lambda d, a: (user_folder(d, "runs/mine"), ["train", config(d, a, "runtime.run_name=mine")])[1], "--force"),
    Case("touch", "train-resume-into-a-user-folder",
         lambda d, a: ["train", config(d, a), "--resume", ckpt(d, a), "--run-dir", user_folder(d, "mine")],
         "--force"),
    Case("touch", "eval-out-holds-user-files",
         lambda d, a: ["eval", ckpt(d, a), "--out", user_folder(d, "ev")], "--force"),
    Case("touch", "eval-out-inside-data-root",
         lambda d, a: ["eval", ckpt(d, a), f"data.root={data_copy(d, a)}", "--out", str(d / "data" / "ev")],
         "inside data.root"),
    Case("touch", "eval-out-is-the-mask-folder",
         lambda d, a: ["eval", ckpt(d, a), f"data.root={data_copy(d, a)}", "--out",
                       str(d / "data" / "SegmentationClassAug")], "inside data.root"),
    Case("touch", "search-cached-out-holds-user-files",
         lambda d, a: ["search", cached_search(d), *SEARCH_NO_TRACK, "--checkpoint", ckpt(d, a), "--out",
                       user_folder(d, "s")], "--force"),
    Case("touch", "search-cached-out-inside-data-root",
         lambda d, a: ["search", cached_search(d, experiment={"overrides": {"data.root": str(data_copy(d, a))}}),
                       *SEARCH_NO_TRACK, "--checkpoint", ckpt(d, a), "--out", str(d / "data" / "s")],
         "inside data.root"),
    Case("touch", "search-cached-journal-inside-data-root",
         lambda d, a: ["search", cached_search(d, experiment={"overrides": {"data.root": str(data_copy(d, a))}}),
                       *SEARCH_NO_TRACK, "--checkpoint", ckpt(d, a), "--out", str(d / "s"), "--storage",
                       str(d / "data" / "study.journal")], "inside data.root"),
    Case("touch", "search-training-out-holds-user-files",
         lambda d, a: ["search", training_search(d, a), *SEARCH_NO_TRACK, "--out", user_folder(d, "s")], "--force"),
    Case("touch", "search-training-out-inside-data-root",
         lambda d, a: ["search", training_search(d, a, f"data.root={data_copy(d, a)}"), *SEARCH_NO_TRACK, "--out",
                       str(d / "data" / "s")], "inside data.root"),
    # --- names the wrong thing
    Case("name", "config-scalar-section",
         lambda d, a: ["config", "show", config(d, a, text="preset: synthetic\ntrain: 5\n")], "expected a mapping"),
    Case("name", "config-override-section", lambda d, a: ["config", "show", "synthetic", "train=5"],
         "'train' is a section"),
    Case("name", "config-overrides-string",
         lambda d, a: ["config", "show", config(d, a, text="preset: synthetic\noverrides: optim.lr=0.1\n")],
         "expected a list"),
    Case("name", "ablate-overrides-string",
         lambda d, a: ["ablate", spec(d, a, text=f"name: demo\nexperiment:\n  config: {config(d, a)}\n"
                                                 "  overrides: optim.lr=0.1\n"), "--dry-run"],
         "experiment.overrides"),
    Case("name", "search-constraints-string",
         lambda d, a: ["search", training_search(d, a, constraints="eval.bkg_thre < 0.4")], "constraints"),
    Case("name", "eval-bad-value-in-saved-config", lambda d, a: ["eval", bad_saved_config(d, a)], "config.yaml"),
    Case("name", "data-check-classes-0",
         lambda d, a: ["data", "check", str(a.data), "--dataset", "synthetic", "--classes", "0"], "--classes"),
    Case("name", "data-synth-negative-seed",
         lambda d, a: ["data", "synth", "--out", str(d / "ds"), "--seed", "-1"], "--seed"),
    Case("name", "data-check-missing-root", lambda d, a: ["data", "check", str(d / "nope")], "nope"),
    Case("name", "config-value-given-a-mapping",
         lambda d, a: ["config", "show", config(d, a, text="preset: synthetic\noptim:\n  lr: {x: 1}\n")],
         "optim.lr"),
    Case("name", "config-unknown-nested-key",
         lambda d, a: ["config", "show", config(d, a, text="preset: synthetic\noptim:\n  lrr: 0.1\n")],
         "did you mean 'optim.lr'"),
]


def test_the_table_covers_every_command_and_kind():
    commands = {c.name.split("-")[0] for c in CASES}
    assert commands >= {"train", "eval", "infer", "data", "config", "ablate", "search", "report", "ui"}
    assert {c.kind for c in CASES} == {"late", "touch", "trace", "accept", "name"}
    assert len(CASES) >= 60 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_stops_with_one_line(case: Case, assets: Assets, tmp_path: Path, no_ray: list[str],
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    work = tmp_path / "case"
    work.mkdir()
    argv = case.build(work, assets)
    monkeypatch.chdir(work)
    before = tree_hash(work)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert code == 2, (code, err, out)
    assert len(lines) == 1, err
    assert "error" in lines[0] and case.expect in lines[0], lines[0]
    assert "weights_only=False" not in err
    assert not no_ray
    assert tree_hash(work) == before, "files under the case folder changed"


def test_an_unexpected_exception_keeps_its_traceback_and_says_it_is_a_bug(monkeypatch, capsys):
    import more.commands.config as command

    def broken(_args: object) -> int:
        raise KeyError("internal")

    monkeypatch.setattr(command, "run", broken)
    assert main(["config", "show", "synthetic"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'internal'" in err
    assert err.strip().splitlines()[-1].startswith("error: this is a bug in more (KeyError)")


def test_an_os_error_on_a_named_path_is_one_line(monkeypatch, capsys, tmp_path):
    import more.commands.config as command

    def denied(_args: object) -> int:
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.yaml"))

    monkeypatch.setattr(command, "run", denied)
    assert main(["config", "show", "synthetic"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'x.yaml'}: Permission denied\n"


# ------------------------------------------------------------- issue 18 item 3: the harness's members (i21api)
# Same conditions as the table above; kept in their own block. Specs whose rows resolve to the same config (every
# way a spec can produce one), GPUs per trial beyond any node, a report of a spec that never ran, a report --out
# holding the user's files.


def _cluster_config(d: Path, gpus: int) -> str:
    """A Ray cluster config with a CPU head and one GPU worker type of ``gpus`` GPUs (declared)."""
    path = d / "cluster.yaml"
    path.write_text(f"cluster_name: x\navailable_node_types:\n  head: {{resources: {{}}, node_config: "
                    f"{{InstanceType: m5.2xlarge}}}}\n  gpu: {{resources: {{GPU: {gpus}}}, node_config: {{}}}}\n")
    return str(path)


def _user_folder(d: Path) -> str:
    (d / "mine").mkdir()
    (d / "mine" / "thesis.tex").write_text("my own file\n")
    return str(d / "mine")


SAME = "resolve to the same config"
HARNESS_CASES = [
    Case("accept", "ablate-two-conditions-same-config",
         lambda d, a: ["ablate", spec(d, a, conditions={"a": {"lir.cre_weight": 0.1}, "b": {"lir.cre_weight": 0.1}}),
                       "--dry-run"], SAME),
    Case("accept", "ablate-two-conditions-same-config-launch",
         lambda d, a: ["ablate", spec(d, a, conditions={"a": {"lir.cre_weight": 0.1}, "b": {"lir.cre_weight": 0.1}}),
                       "--no-tracking"], SAME),
    Case("accept", "ablate-condition-equals-the-base",
         lambda d, a: ["ablate", spec(d, a, conditions={"more": {}, "same": {"lir.cre_weight": 0.2}}), "--dry-run"],
         SAME),
    Case("accept", "ablate-sweep-values-equal-after-typing",
         lambda d, a: ["ablate", spec(d, a, sweeps={"loss.energy_weight": [1, 1.0]}), "--dry-run"], SAME),
    Case("accept", "ablate-condition-and-sweep-point-meet",
         lambda d, a: ["ablate", spec(d, a, conditions={"more": {}, "wo_gcr": {"gcr.enabled": False}},
                                      sweeps={"gcr.enabled": [False]}), "--dry-run"], SAME),
    Case("accept", "ablate-dry-run-gpus-beyond-any-node",
         lambda d, a: ["ablate", spec(d, a, resources={"cpus": 1, "gpus": 64, "workers": 1}), "--dry-run"],
         "more than any node can have"),
    Case("accept", "ablate-dry-run-ddp-workers-beyond-the-cluster",
         lambda d, a: ["ablate", spec(d, a, resources={"cpus": 1, "gpus": 64}), "--dry-run"],
         "more than the cluster of"),
    Case("accept", "ablate-dry-run-gpus-beyond-the-cluster-config",
         lambda d, a: ["ablate", spec(d, a, resources={"cpus": 1, "gpus": 2, "workers": 1}), "--dry-run",
                       "--cluster-config", _cluster_config(d, 1)], "node types of"),
    Case("name", "report-spec-never-ran-no-store",
         lambda d, a: ["report", spec(d, a), "--storage", folder(d, "storage"), "--no-log",
                       "--tracking-uri", f"sqlite:///{d}/absent.db", "--out", str(d / "report")], "has no trials yet"),
    Case("touch", "report-out-holds-user-files",
         lambda d, a: [*results_with_classes(d, a, _user_folder(d))], "holds files more did not create"),
]


@pytest.mark.parametrize("case", HARNESS_CASES, ids=[c.name for c in HARNESS_CASES])
def test_harness_bad_input_stops_with_one_line(case: Case, assets: Assets, tmp_path: Path, no_ray: list[str],
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    test_bad_input_stops_with_one_line(case, assets, tmp_path, no_ray, monkeypatch, capsys)
