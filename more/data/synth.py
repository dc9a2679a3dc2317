"""A generated, deterministic weakly supervised segmentation dataset in the PASCAL VOC layout.

It is built to be a *real* WSSS problem at CPU scale, not a toy: every class has its own shape, texture and
colour palette (with per-instance variation); one to three objects of different classes share an image,
overlap and vary in scale, pose and position; backgrounds are cluttered (smooth colour noise, stripes, soft
blobs, lines); and some classes co-occur with a typical background (boat on water, plane in sky, sheep on
grass) so that CAMs trained from image labels alone are incomplete and leak into that context, as in VOC.
Masks carry a 255 band along object borders like VOC's. Everything is vectorised numpy on coordinate grids;
sample ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image

from more.data.classes import IGNORE_INDEX, synth_class_names
from more.data.description import DESCRIPTION_FILE, DatasetDescription
from more.data.masks import DIR_MODE, write_mask

if TYPE_CHECKING:
    from more.config import MoReConfig

Progress = Callable[[str], None]
META_FILE = "synth.json"
_VERSION = 1
_YEAR = 2026  # names look like VOC's: 2026_000123

# ------------------------------------------------------------------------------------------ class styles


@dataclass(frozen=True)
class ClassStyle:
    """How one class looks: a shape, a texture mixing two palette colours, and its typical background."""

    shape: str
    texture: str
    colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    context: str = ""  # water | sky | grass: the background band this class usually sits on
    max_rotation: float = 180.0  # degrees
    aspect: tuple[float, float] = (0.8, 1.25)  # horizontal stretch range


STYLES: dict[str, ClassStyle] = {
    "boat": ClassStyle("boat", "hstripes", ((200, 45, 35), (240, 238, 228)), "water", 12.0, (1.0, 1.3)),
    "plane": ClassStyle("plane", "fine_checker", ((205, 205, 215), (85, 90, 105)), "sky", 40.0, (0.9, 1.1)),
    "disc": ClassStyle("disc", "dots", ((40, 155, 60), (230, 215, 70))),
    "box": ClassStyle("square", "diagonal", ((232, 140, 30), (105, 60, 22))),
    "ring": ClassStyle("ring", "spokes", ((125, 50, 170), (235, 155, 205))),
    "star": ClassStyle("star", "speckle", ((40, 200, 215), (20, 55, 140))),
    "sheep": ClassStyle("sheep", "blotches", ((232, 230, 218), (45, 42, 40)), "grass", 10.0, (1.0, 1.25)),
    "kite": ClassStyle("diamond", "checker", ((220, 40, 140), (150, 220, 40)), "", 30.0, (0.6, 0.85)),
}

# Object shapes in the object frame: u to the right, v downwards, the body spanning about [-1, 1]².
SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "disc": lambda u, v: u * u + v * v <= 1.0,
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.25),
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.85,
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.05,
    "star": lambda u, v: np.hypot(u, v) <= 0.4 + 0.6 * ((1.0 + np.cos(5.0 * np.arctan2(v, u))) / 2.0) ** 1.5,
    "boat": lambda u, v: (((v >= 0.35) & (v <= 0.8) & (np.abs(u) <= 1.0 - 0.9 * (v - 0.35)))  # hull
                          | ((v >= -1.0) & (v <= 0.35) & (u >= -0.02) & (u <= 0.62 * (v + 1.0) - 0.02))  # sail
                          | ((np.abs(u + 0.07) <= 0.05) & (v >= -1.0) & (v <= 0.35))),  # mast
    "plane": lambda u, v: (((np.abs(u) <= 0.13) & (np.abs(v) <= 1.0))  # fuselage
                           | ((np.abs(u) <= 1.0) & (v >= 0.35 * np.abs(u) - 0.15) & (v <= 0.35 * np.abs(u) + 0.12))
                           | ((np.abs(u) <= 0.4) & (v >= 0.1 * np.abs(u) + 0.72) & (v <= 0.1 * np.abs(u) + 0.88))),
    "sheep": lambda u, v: ((u * u + (v / 0.6) ** 2 <= 1.0)  # body
                           | ((u - 1.0) ** 2 + (v + 0.3) ** 2 <= 0.09)  # head
                           | ((np.abs(np.abs(u) - 0.5) <= 0.08) & (v >= 0.0) & (v <= 0.9))),  # legs
}


def _value_noise(u: np.ndarray, v: np.ndarray, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in [0, 1] at coordinates in [-1.5, 1.5] (bilinear blend of a random lattice)."""
    lattice = rng.random((cells + 2, cells + 2))
    x = (np.clip(u, -1.5, 1.5) + 1.5) / 3.0 * cells
    y = (np.clip(v, -1.5, 1.5) + 1.5) / 3.0 * cells
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)  # smoothstep
    top = lattice[y0, x0] * (1 - fx) + lattice[y0, x0 + 1] * fx
    bottom = lattice[y0 + 1, x0] * (1 - fx) + lattice[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _texture(name: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mixing weight in [0, 1] between a class's two colours, in the object frame."""
    ph1, ph2 = rng.random(2)
    if name == "hstripes":
        return ((v * rng.uniform(2.5, 4.0) + ph1) % 1.0 < 0.5).astype(np.float64)
    if name == "diagonal":
        return (((u + v) * rng.uniform(1.6, 2.4) + ph1) % 1.0 < 0.5).astype(np.float64)
    if name in ("checker", "fine_checker"):
        k = rng.uniform(1.8, 2.6) if name == "checker" else rng.uniform(5.0, 7.0)
        return ((np.floor(u * k + ph1) + np.floor(v * k + ph2)) % 2).astype(np.float64)
    if name == "dots":
        k, radius = rng.uniform(3.0, 4.5), rng.uniform(0.22, 0.32)
        return (((u * k + ph1) % 1.0 - 0.5) ** 2 + ((v * k + ph2) % 1.0 - 0.5) ** 2 < radius**2).astype(np.float64)
    if name == "spokes":
        return (np.sin(rng.integers(6, 10) * np.arctan2(v, u) + 6.3 * ph1) > 0).astype(np.float64)
    if name == "speckle":
        return np.clip(np.hypot(u, v) + 0.8 * (_value_noise(u, v, 8, rng) - 0.5), 0.0, 1.0)
    if name == "blotches":
        return (_value_noise(u, v, 4, rng) > 0.6).astype(np.float64)
    raise ValueError(f"unknown texture {name!r}")


# ---------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class SynthOptions:
    """What to generate (the ``data.synth_*`` config keys)."""

    classes: int
    train: int
    val: int
    size: int
    seed: int
    test: int = -1  # unlabeled test images; -1 = max(2, val // 10)
    jpeg_quality: int = 90

    @classmethod
    def from_config(cls, cfg: MoReConfig) -> SynthOptions:
        d = cfg.data
        return cls(classes=d.synth_classes, train=d.synth_train, val=d.synth_val, size=d.synth_image_size,
                   seed=d.synth_seed)

    @property
    def num_test(self) -> int:
        return self.test if self.test >= 0 else max(2, self.val // 10)


class Sample(NamedTuple):
    image: np.ndarray  # (S, S, 3) uint8
    mask: np.ndarray  # (S, S) uint8: 0 background, 1..C, 255 border band
    classes: tuple[int, ...]  # classes present in the mask
    contexts: tuple[str, ...]  # background bands drawn


# -------------------------------------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, S: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Cluttered background (S, S, 3) float: smooth colour noise, optional stripes, soft blobs and thin lines."""
    u, v = xx / S * 2 - 1, yy / S * 2 - 1
    img = rng.uniform(70, 190, 3) + np.stack([(_value_noise(u, v, int(rng.integers(2, 6)), rng) - 0.5) * 90
                                              for _ in range(3)], axis=-1)
    if rng.random() < 0.6:  # stripes at a random angle
        a, period = rng.uniform(0, np.pi), rng.uniform(5, 16)
        wave = np.sin(2 * np.pi * (np.cos(a) * xx + np.sin(a) * yy) / period)
        img += wave[..., None] * rng.uniform(-25, 25, 3)
    for _ in range(int(rng.integers(2, 7))):  # soft blobs
        cy, cx, sigma = rng.uniform(0, S), rng.uniform(0, S), rng.uniform(0.04, 0.15) * S
        weight = rng.uniform(0.4, 0.9) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        img += weight[..., None] * (rng.uniform(20, 235, 3) - img)
    for _ in range(int(rng.integers(0, 4))):  # thin lines
        a, offset, width = rng.uniform(0, np.pi), rng.uniform(0, S), rng.uniform(0.6, 1.8)
        line = np.abs(np.cos(a) * (yy - offset) - np.sin(a) * (xx - S / 2)) < width
        img[line] = rng.uniform(20, 235, 3)
    return img


def _draw_context(img: np.ndarray, context: str, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> float:
    """Paint a background band in place; returns its boundary row (sky: bottom edge, water/grass: top edge)."""
    S = img.shape[0]
    if context == "sky":
        edge = rng.uniform(0.35, 0.55) * S
        region = yy < edge + 2.0 * np.sin(2 * np.pi * xx / rng.uniform(30, 70) + rng.uniform(0, 6.3))
        t = np.clip(yy / edge, 0, 1)[..., None]
        sky = (1 - t) * (np.array([70, 120, 210]) + rng.normal(0, 12, 3)) + t * np.array([195, 218, 240])
        clouds = np.clip(_value_noise(xx / S * 2 - 1, yy / S * 2 - 1, 5, rng) - 0.55, 0, 1)[..., None] * 3.0
        img[region] = (sky + clouds * (250 - sky))[region]
        return edge
    edge = S * (1 - rng.uniform(0.3, 0.5))
    region = yy > edge + 2.5 * np.sin(2 * np.pi * xx / rng.uniform(25, 60) + rng.uniform(0, 6.3))
    if context == "water":
        base = np.array([25, 70, 140]) + rng.normal(0, 10, 3)
        ripple = np.sin(2 * np.pi * (yy / rng.uniform(4, 7) + 0.15 * np.sin(2 * np.pi * xx / rng.uniform(12, 24))))
        band = base + ripple[..., None] * np.array([12, 22, 30])
    else:  # grass: green with vertical blade streaks
        base = np.array([62, 128, 45]) + rng.normal(0, 10, 3)
        jitter = 3 * _value_noise(xx / S * 2 - 1, yy / S * 2 - 1, 12, rng)
        streak = np.sin(2 * np.pi * xx / rng.uniform(2.5, 4.0) + jitter)
        band = base + streak[..., None] * np.array([15, 25, 10])
    img[region] = band[region]
    return edge


def _border_band(label: np.ndarray, radius: int) -> np.ndarray:
    """Morphological gradient of the label map (dilation != erosion): a band along every class border."""
    padded = np.pad(label, radius, mode="edge")
    H, W = label.shape
    lo, hi = label.copy(), label.copy()
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            window = padded[dy : dy + H, dx : dx + W]
            np.minimum(lo, window, out=lo)
            np.maximum(hi, window, out=hi)
    return lo != hi


def render_sample(options: SynthOptions, index: int) -> Sample:
    """Render image ``index`` of the dataset; depends only on ``(options.seed, index)``."""
    rng = np.random.default_rng([options.seed, index])
    S, C = options.size, options.classes
    names = synth_class_names(C)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)
    min_pixels = max(12, int(0.004 * S * S))
    count = min(C, int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2])))
    chosen = [int(c) + 1 for c in rng.choice(C, size=count, replace=False)]  # drawn in this order
    # Context bands: usually with their class, sometimes without it (a correlated, not a perfect, cue).
    wanted = [STYLES[names[c - 1]].context for c in chosen if STYLES[names[c - 1]].context]
    present = [ctx for ctx in dict.fromkeys(wanted) if rng.random() < 0.9]
    present += [STYLES[n].context for n in names if STYLES[n].context and STYLES[n].context not in wanted
                and rng.random() < 0.12]
    if "water" in present and "grass" in present:  # both are bottom bands: keep one
        present.remove(str(rng.choice(["water", "grass"])))
    background = _background(rng, S, yy, xx)
    edges = {ctx: _draw_context(background, ctx, rng, yy, xx) for ctx in dict.fromkeys(present)}
    for attempt in range(40):  # only the layout is redrawn, so class and context frequencies are not biased
        classes = chosen[: max(1, count - attempt // 15)]
        img = background.copy()
        label = np.zeros((S, S), dtype=np.uint8)
        drawn_area = {}
        shrink = (1.0, 0.85, 0.75)[len(classes) - 1]
        for c in classes:
            style = STYLES[names[c - 1]]
            half = rng.uniform(0.14, 0.3) * S * shrink
            cx = rng.uniform(0.15 * S, 0.85 * S)
            cy = _place_y(style.context, edges, half, S, rng)
            angle = np.deg2rad(rng.uniform(-style.max_rotation, style.max_rotation))
            stretch = rng.uniform(*style.aspect)
            dx, dy = xx - cx, yy - cy
            u = (np.cos(angle) * dx + np.sin(angle) * dy) / (half * stretch)
            v = (-np.sin(angle) * dx + np.cos(angle) * dy) / half
            inside = SHAPES[style.shape](u, v)  # (S, S) bool
            t = _texture(style.texture, u, v, rng)[..., None]
            first, second = (np.array(col) + rng.normal(0, 16, 3) for col in style.colors)
            color = ((1 - t) * first + t * second) * rng.uniform(0.85, 1.12) * (1 - 0.12 * np.clip(v, -1, 1))[..., None]
            img[inside] = color[inside]
            label[inside] = c
            drawn_area[c] = int(inside.sum())
        mask = label.copy()
        mask[_border_band(label, max(1, round(S / 128)))] = IGNORE_INDEX
        unoccluded = np.bincount(label.ravel(), minlength=256)
        visible = np.bincount(mask.ravel(), minlength=256)
        if all(unoccluded[c] >= 0.3 * drawn_area[c] and visible[c] >= min_pixels for c in classes):
            break
    img = img * rng.uniform(0.88, 1.12) + rng.uniform(-12, 12) + rng.normal(0, rng.uniform(2, 6), img.shape)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Sample(image, mask, tuple(c for c in range(1, C + 1) if visible[c] > 0), tuple(edges))


def _place_y(context: str, edges: dict[str, float], half: float, S: int, rng: np.random.Generator) -> float:
    """Centre row of an object: on its context band when that band is drawn, anywhere otherwise."""
    if context == "water" and context in edges:  # waterline (v ~ 0.5) inside the water band
        return rng.uniform(edges["water"] + 2, S - 0.2 * half) - 0.5 * half
    if context == "grass" and context in edges:  # legs on the grass
        return rng.uniform(edges["grass"], S - 0.5 * half)
    if context == "sky" and context in edges:
        return rng.uniform(0.4 * half, max(0.4 * half + 1, edges["sky"] - 0.3 * half))
    return rng.uniform(0.15 * S, 0.85 * S)


# ---------------------------------------------------------------------------------------------- writing


@dataclass
class SynthSummary:
    """What :func:`generate_dataset` wrote."""

    root: Path
    counts: dict[str, int]  # images per split
    class_images: dict[str, int]  # train images containing each class
    context_rate: dict[str, float]  # fraction of a context class's train images drawn on its background
    seconds: float

    def format(self) -> str:
        lines = [f"synthetic dataset at {self.root} ({self.seconds:.1f} s)",
                 "  images: " + ", ".join(f"{k} {v}" for k, v in self.counts.items()),
                 "  train images per class: " + ", ".join(f"{k} {v}" for k, v in self.class_images.items())]
        if self.context_rate:
            lines.append("  on their typical background: "
                         + ", ".join(f"{k} {100 * v:.0f}%" for k, v in self.context_rate.items()))
        return "\n".join(lines)


def _readme(options: SynthOptions, names: tuple[str, ...]) -> str:
    o = options
    classes = "\n".join(f"  {i} {n}: {STYLES[n].shape} shape, {STYLES[n].texture} texture"
                        + (f", usually on {STYLES[n].context}" if STYLES[n].context else "")
                        for i, n in enumerate(names, 1))
    return f"""Synthetic weakly supervised segmentation dataset, generated by more.data.synth (version {_VERSION}).

Options: classes={o.classes} train={o.train} val={o.val} test={o.num_test} size={o.size}px seed={o.seed} \
jpeg_quality={o.jpeg_quality}
Regenerate: python -m more data synth --out DIR --classes {o.classes} --train {o.train} --val {o.val} \
--size {o.size} --seed {o.seed}

Layout (PASCAL VOC): JPEGImages/NAME.jpg, SegmentationClassAug/NAME.png (palette PNG: 0 background,
1..{o.classes} classes, 255 ignore band along object borders), ImageSets/Segmentation/{{train,train_aug,val,test}}.txt
(train_aug = train; test images have no masks). {DESCRIPTION_FILE} describes the same (class names, folders, splits):
the loader reads the set through it.

Classes:
  0 background
{classes}
Each image holds 1-3 objects of different classes (they may overlap) on a cluttered background. Image i
depends only on (seed, i).
"""


def _write_split(tmp: Path, split: str, names: list[str], first: int, options: SynthOptions,
                 progress: Progress) -> list[Sample]:
    samples = []
    step = max(1, len(names) // 4)
    for k, name in enumerate(names):
        sample = render_sample(options, first + k)
        buf = io.BytesIO()
        Image.fromarray(sample.image).save(buf, format="JPEG", quality=options.jpeg_quality)
        (tmp / "JPEGImages" / f"{name}.jpg").write_bytes(buf.getvalue())
        if split != "test":
            write_mask(tmp / "SegmentationClassAug" / f"{name}.png", sample.mask)
        samples.append(sample)
        if (k + 1) % step == 0 or k + 1 == len(names):
            progress(f"synth: {split} {k + 1}/{len(names)}")
    return samples


def describe(root: Path, names: tuple[str, ...]) -> DatasetDescription:
    """The ``dataset.yaml`` of a generated set at ``root``: the loader reads the set through it, as it reads a
    custom dataset."""
    lists = root / "ImageSets" / "Segmentation"
    return DatasetDescription(file=root / DESCRIPTION_FILE, name="synthetic", classes=names,
                              images=root / "JPEGImages", image_suffix=".jpg", masks=root / "SegmentationClassAug",
                              splits={s: lists / f"{s}.txt" for s in ("train", "train_aug", "val", "test")})


def generate_dataset(out: str | os.PathLike, options: SynthOptions, *, force: bool = False,
                     progress: Progress = print) -> SynthSummary:
    """Write the dataset to ``out``: built in a temporary sibling folder, renamed into place at the end.

    Raises:
        FileExistsError: ``out`` exists and is not an empty folder (and ``force`` is false), or another process
            published it first.
    """
    out = Path(out).expanduser().resolve()
    names = synth_class_names(options.classes)
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not empty; pass --force to replace it")
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        os.chmod(tmp, DIR_MODE)
        for sub in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation"):
            (tmp / sub).mkdir(parents=True)
        sizes = {"train": options.train, "val": options.val, "test": options.num_test}
        first, samples = 0, {}
        for split, n in sizes.items():
            split_names = [f"{_YEAR}_{first + k:06d}" for k in range(n)]
            samples[split] = _write_split(tmp, split, split_names, first, options, progress)
            lists = tmp / "ImageSets" / "Segmentation"
            (lists / f"{split}.txt").write_text("".join(f"{s}\n" for s in split_names))
            first += n
        shutil.copyfile(lists / "train.txt", lists / "train_aug.txt")
        (tmp / "README.txt").write_text(_readme(options, names))
        meta = {"generator": "more.data.synth", "version": _VERSION, **asdict(options), "test": options.num_test,
                "class_names": ["background", *names]}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        (tmp / DESCRIPTION_FILE).write_text(describe(tmp, names).to_yaml())
        _publish(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    train = samples["train"]
    class_images = {n: sum(c in s.classes for s in train) for c, n in enumerate(names, 1)}
    context_rate = {}
    for c, n in enumerate(names, 1):
        with_class = [s for s in train if c in s.classes]
        if STYLES[n].context and with_class:
            context_rate[n] = sum(STYLES[n].context in s.contexts for s in with_class) / len(with_class)
    return SynthSummary(out, sizes, class_images, context_rate, time.perf_counter() - start)


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Rename ``tmp`` to ``out``; with ``force`` an existing ``out`` is moved aside first and deleted after."""
    trash = None
    if force and out.exists() and (not out.is_dir() or any(out.iterdir())):
        trash = out.with_name(f".{out.name}.{os.getpid()}.old")
        os.replace(out, trash)
    try:
        os.replace(tmp, out)  # replaces an empty folder; fails on a non-empty one
    except OSError as exc:
        if trash is not None:
            os.replace(trash, out)
        raise FileExistsError(f"{out}: appeared while generating ({exc})") from None
    if trash is not None:
        shutil.rmtree(trash) if trash.is_dir() else trash.unlink()


def ensure_dataset(cfg: MoReConfig, *, progress: Progress = print) -> Path:
    """The dataset root, generating the synthetic set there first when it is missing (``data.synth_generate``).

    Raises:
        ConfigError: the root does not exist, or an existing synthetic set has a different number of classes.
    """
    from more.config import ConfigError

    root = Path(cfg.data.root)
    generate = cfg.data.dataset == "synthetic" and cfg.data.synth_generate
    if generate and not (root.is_dir() and any(root.iterdir())):
        options = SynthOptions.from_config(cfg)
        progress(f"synth: generating {options.train}+{options.val} images of {options.size}px with "
                 f"{options.classes} classes (seed {options.seed}) in {root}")
        try:
            progress(generate_dataset(root, options, progress=progress).format())
        except FileExistsError:
            if not (root / META_FILE).is_file():  # someone else published something that is not ours
                raise
    if not root.is_dir():
        raise ConfigError(f"data.root={str(root)!r}: folder does not exist")
    meta_path = root / META_FILE
    if cfg.data.dataset == "synthetic" and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("classes") != cfg.data.synth_classes:
            raise ConfigError(f"data.synth_classes={cfg.data.synth_classes!r}: the synthetic set at {root} has "
                              f"{meta.get('classes')} classes; use another data.root or regenerate it")
        if (root / DESCRIPTION_FILE).is_file():
            from more.data.description import read_description

            described = read_description(root).classes
            if described != synth_class_names(cfg.data.synth_classes):
                raise ConfigError(f"{root / DESCRIPTION_FILE}: classes {list(described)} are not the generator's "
                                  f"{list(synth_class_names(cfg.data.synth_classes))}; regenerate the set (or train "
                                  f"it as data.dataset=custom)")
        if generate:
            stale = {k: meta.get(k) for k, v in asdict(SynthOptions.from_config(cfg)).items() if meta.get(k) != v}
            stale.pop("test", None)
            if stale:
                progress(f"synth: note: {root} was generated with {stale}, not the data.synth_* values of this config")
    return root
