"""Training augmentation with the same random draws: ours beside the reference's ``__getitem__`` (MORE_SPEC §4.3).

* VOC: the reference's ``VOC12ClsDataset`` with ``MultiviewTransform`` (as ``scripts/train_voc.py`` builds it)
  draws two views from torch's global RNG and returns the second; our ``TrainDataset`` draws one view from the same
  RNG. With the same seed, our second draw is the reference's training view, to float rounding.
* COCO: the reference's ``CocoClsDataset.transform_image`` draws the jitter from torch and the rescale, flip, pad
  and crop from Python's ``random`` and ``np.random``; ours draws everything from torch. Ours is run first with its
  draws recorded; the reference is then run from the same torch seed (so the jitter draws agree) with its
  ``random`` / ``np.random`` calls answered from our recording. Every replayed call checks that the reference asks
  for the range ours drew from.
"""

from __future__ import annotations

import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from more.config import load_config
from more.data.voc import build_train_dataset
from tools.refcheck.common import Row, compare
from tools.refcheck.pipeline_data import coco_tree, voc_tree

SEEDS = (0, 1, 2, 3, 5, 8)
GOLDEN_ITEMS = 2  # crops per dataset kept in the golden fixture (every second row and column, as uint8)


def to_uint8(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """A normalised (..., 3, H, W) crop back to its uint8 pixels (both sides normalise a uint8 image)."""
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return ((x.float() * s + m) * 255.0).round().clamp(0, 255).to(torch.uint8)


def _fixture(items: list[dict[str, Any]], crops: list[torch.Tensor], mean: list[float], std: list[float],
             keep: list[int]) -> dict[str, Any]:
    return {"items": [items[k] for k in keep],
            "crops": torch.stack([to_uint8(crops[k], mean, std)[:, ::2, ::2] for k in keep])}
VOC_SIZES = ((500, 375), (375, 500))
COCO_SIZES = ((500, 375), (320, 240), (1000, 800))  # small ones get the zero padding, large ones the crop


class ReplayMismatch(RuntimeError):
    """The reference asked for a random draw that ours did not make (a different range or order)."""


class _Recorder:
    """Stands in for ``torch`` inside ``more.data.transforms`` and records every random draw ours makes."""

    def __init__(self) -> None:
        self.draws: list[tuple[str, tuple[Any, ...], float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def rand(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        value = torch.rand(*args, **kwargs)
        self.draws.append(("rand", (), float(value)))
        return value

    def randint(self, high: int, *args: Any, **kwargs: Any) -> torch.Tensor:
        value = torch.randint(high, *args, **kwargs)
        self.draws.append(("randint", (int(high),), float(value)))
        return value

    def empty(self, *args: Any, **kwargs: Any) -> Any:
        recorder, tensor = self, torch.empty(*args, **kwargs)

        class _Uniform:
            def uniform_(self, low: float, high: float) -> torch.Tensor:
                tensor.uniform_(low, high)
                recorder.draws.append(("uniform", (float(low), float(high)), float(tensor)))
                return tensor

        return _Uniform()


class _Replay:
    """Answers the reference's ``random.*`` and ``np.random.randint`` calls from our recorded draws, in order."""

    def __init__(self, draws: list[tuple[str, tuple[Any, ...], float]]) -> None:
        # ours: rand (jitter on?) [jitter], uniform (scale), rand (flip), randint x4 (pad top/left, crop y/x); the
        # first rand is the jitter switch, drawn from torch on both sides
        self.flips = [d for d in draws if d[0] == "rand"][1:]
        self.pending = [d for d in draws if d[0] != "rand"]

    def _next(self, kind: str, args: tuple[Any, ...]) -> float:
        if not self.pending:
            raise ReplayMismatch(f"the reference drew {kind}{args} after ours had no draws left")
        got_kind, got_args, value = self.pending.pop(0)
        if got_kind != kind or tuple(float(a) for a in got_args) != tuple(float(a) for a in args):
            raise ReplayMismatch(f"the reference drew {kind}{args}, ours {got_kind}{got_args}")
        return value

    # Python's random module
    def uniform(self, low: float, high: float) -> float:
        return self._next("uniform", (low, high))

    def random(self) -> float:
        if not self.flips:
            raise ReplayMismatch("the reference drew random.random() (flip) but ours made no flip draw")
        u = self.flips.pop(0)[2]
        return 1.0 - u  # ours flips when u < p = 0.5, the reference when its draw is > 0.5

    def randrange(self, start: int, stop: int, step: int = 1) -> int:
        if start != 0 or step != 1:
            raise ReplayMismatch(f"randrange({start}, {stop}, {step}): expected a start of 0 and a step of 1")
        return int(self._next("randint", (stop,)))

    # numpy.random
    def randint(self, high: int) -> int:
        return int(self._next("randint", (high,)))

    def leftover(self) -> int:
        return len(self.pending) + len(self.flips)


def _numpy_with(random: _Replay) -> types.SimpleNamespace:
    """A stand-in for ``numpy`` whose ``random`` is the replay; everything else is numpy's."""

    class _NP:
        def __getattr__(self, name: str) -> Any:
            return random if name == "random" else getattr(np, name)

    return _NP()  # type: ignore[return-value]


def _patched(module: Any, **values: Any) -> Callable[[], None]:
    saved = {k: getattr(module, k) for k in values}
    for k, v in values.items():
        setattr(module, k, v)

    def restore() -> None:
        for k, v in saved.items():
            setattr(module, k, v)

    return restore


def voc_rows(ref: Any, work: Path) -> tuple[list[Row], dict[str, Any]]:
    """Reference ``VOC12ClsDataset[i]`` (view 2 of ``MultiviewTransform``) vs our ``TrainDataset[i]``."""
    tree = voc_tree(work / "voc", VOC_SIZES)
    args = ref.load_script("scripts/train_voc.py").parser.parse_args([])
    transform = ref.transforms.MultiviewTransform(size1=args.crop_size, num1=args.global_crops_number,
                                                  num2=args.local_crops_number, use_aa=args.use_aa,
                                                  use_gauss=args.use_gauss, use_solar=args.use_solar)
    theirs = ref.voc.VOC12ClsDataset(root_dir=str(tree.root), name_list_dir=str(tree.list_dir), split=tree.split,
                                     stage="train", num_classes=args.num_classes, transform=transform)
    cfg = load_config("voc", {"data.root": str(tree.root), "data.train_split": tree.split})
    ours = build_train_dataset(cfg)
    views, expected, labels_ours, labels_ref, items = [], [], [], [], []
    for seed in SEEDS:
        for i in range(len(tree.names)):
            items.append({"size": VOC_SIZES[i], "scene_seed": i, "torch_seed": seed})
            torch.manual_seed(seed)
            name, view, cls_label, _ = theirs[i]
            torch.manual_seed(seed)
            ours[i]  # the draws of the reference's first (unused) view
            item = ours[i]
            assert item["name"] == name
            views.append(item["image"])
            expected.append(torch.from_numpy(np.asarray(view)))
            labels_ours.append(item["labels"])
            labels_ref.append(torch.as_tensor(np.asarray(cls_label, dtype=np.float32)))
    rows = [
        compare("aug/voc view (replayed torch draws)", torch.stack(views), torch.stack(expected), atol=1e-5, rtol=0,
                note=f"{len(views)} crops of 448², {len(SEEDS)} seeds"),
        compare("aug/voc image labels", torch.stack(labels_ours), torch.stack(labels_ref), atol=0, rtol=0,
                note="ours from the masks, the reference from cls_labels_onehot.npy"),
    ]
    return rows, _fixture(items, expected, cfg.data.mean, cfg.data.std, list(range(GOLDEN_ITEMS)))


def coco_rows(ref: Any, work: Path) -> tuple[list[Row], dict[str, Any]]:
    """Reference ``CocoClsDataset[i]`` with our replayed draws vs our COCO ``TrainDataset[i]``."""
    import importlib

    import more.data.transforms as ours_transforms

    coco = importlib.import_module("datasets.coco")
    tree = coco_tree(work / "coco", COCO_SIZES)
    args = ref.load_script("scripts/train_coco.py").parser.parse_args([])
    theirs = coco.CocoClsDataset(root_dir=str(tree.root), name_list_dir=str(tree.list_dir), split=tree.ref_split,
                                 stage="train", crop_size=args.crop_size, num_classes=args.num_classes,
                                 ignore_index=args.ignore_index, transform=None)
    cfg = load_config("coco", {"data.root": str(tree.root), "data.train_split": tree.split})
    ours = build_train_dataset(cfg)
    views, expected, labels_ours, labels_ref, problems, items, padded = [], [], [], [], [], [], []
    for seed in SEEDS:
        for i in range(len(tree.names)):
            recorder = _Recorder()
            restore = _patched(ours_transforms, torch=recorder)
            try:
                torch.manual_seed(seed)
                item = ours[i]
            finally:
                restore()
            replay = _Replay(recorder.draws)
            restore = _patched(ref.transforms, random=replay, np=_numpy_with(replay))
            try:
                torch.manual_seed(seed)
                name, image, cls_label, box = theirs[i]
            except ReplayMismatch as exc:
                problems.append(f"{tree.names[i]} seed {seed}: {exc}")
                continue
            finally:
                restore()
            if replay.leftover():
                problems.append(f"{tree.names[i]} seed {seed}: {replay.leftover()} of our draws were not used")
            padded.append(tuple(int(b) for b in box) != (0, args.crop_size, 0, args.crop_size))
            items.append({"size": COCO_SIZES[i], "scene_seed": i, "torch_seed": seed, "padded": padded[-1]})
            assert item["name"] == name
            views.append(item["image"])
            expected.append(torch.from_numpy(np.asarray(image)))
            labels_ours.append(item["labels"])
            labels_ref.append(torch.as_tensor(np.asarray(cls_label, dtype=np.float32)))
    if problems:
        return [Row("aug/coco view (replayed draws)", float("inf"), float("inf"), False, "; ".join(problems[:2]))], {}
    rows = [
        compare("aug/coco view (replayed draws)", torch.stack(views), torch.stack(expected), atol=1e-5, rtol=0,
                note=f"{len(views)} crops, {sum(padded)} with zero padding"),
        compare("aug/coco image labels", torch.stack(labels_ours), torch.stack(labels_ref), atol=0, rtol=0),
    ]
    keep = [k for k, p in enumerate(padded) if p][: GOLDEN_ITEMS // 2]
    keep += [k for k, p in enumerate(padded) if not p][: GOLDEN_ITEMS - len(keep)]
    return rows, _fixture(items, expected, cfg.data.mean, cfg.data.std, sorted(keep))


def checks_and_fixtures(ref: Any) -> tuple[list[Row], dict[str, Any]]:
    """Both augmentation checks; the fixture holds the reference's crops (float16) per dataset."""
    with tempfile.TemporaryDirectory(prefix="more-refcheck-aug-") as tmp:
        voc, voc_fix = voc_rows(ref, Path(tmp))
        coco, coco_fix = coco_rows(ref, Path(tmp))
    return voc + coco, {"voc": voc_fix, "coco": coco_fix}
