"""Loading, overriding, validating and saving :class:`MoReConfig`.

Resolution order (later wins): code defaults < preset < fidelity switch set < YAML file < overrides.
Every error is a :class:`ConfigError` whose message names the dotted key and the bad value.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from more.config.presets import FIDELITY_LEVELS, PRESETS, fidelity_overrides
from more.config.schema import MoReConfig
from more.hints import did_you_mean
from more.yamlio import YamlError, load_yaml


class ConfigError(ValueError):
    """A configuration problem, with the dotted key and the value in the message."""


# ----------------------------------------------------------------------------------------------- fields


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _leaf_types() -> dict[str, Any]:
    """Map every dotted leaf key to its annotated type."""
    out: dict[str, Any] = {}

    def walk(cls: type, prefix: str) -> None:
        for name, tp in _field_types(cls).items():
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{name}.")
            else:
                out[f"{prefix}{name}"] = tp

    walk(MoReConfig, "")
    return out


LEAF_TYPES: dict[str, Any] = _leaf_types()
SECTIONS = {k.split(".")[0] for k in LEAF_TYPES if "." in k}
SECTIONS_ALL = {k.rsplit(".", i)[0] for k in LEAF_TYPES for i in range(1, k.count(".") + 1)}  # nested too


def _unknown_key_error(key: str, where: str) -> ConfigError:
    if key in SECTIONS_ALL:
        example = next(k for k in LEAF_TYPES if k.startswith(key + "."))
        return ConfigError(f"{where}'{key}' is a section, not a value: set one of its keys, e.g. {example}=...")
    hint = did_you_mean(key, list(LEAF_TYPES) + sorted(SECTIONS))
    return ConfigError(f"{where}unknown config key '{key}'{hint}")


def _coerce(key: str, value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotated type ``tp``; allow the safe widenings (int->float, '1e-7'->float)."""
    bad = ConfigError(f"{where}{key}={value!r}: expected {_type_name(tp)}")
    origin = typing.get_origin(tp)
    if origin in (list, typing.List):  # noqa: UP006
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise bad
        return [_coerce(f"{key}[{i}]", v, item_tp, where) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unions are not used in the schema ({key})")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):  # PyYAML reads "1e-7" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise bad
        if not math.isfinite(number):  # NaN passes every range check (all comparisons are False)
            raise ConfigError(f"{where}{key}={value!r}: expected a finite number")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TypeError(f"unsupported type {tp} for {key}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, typing.List):  # noqa: UP006
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


# -------------------------------------------------------------------------------------- flat <-> nested


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``. Lists are leaves."""
    out: dict[str, Any] = {}
    for k, v in nested.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def checked_flatten(nested: dict[str, Any], where: str = "", prefix: str = "") -> dict[str, Any]:
    """:func:`flatten` against the schema: a section must be a mapping, a value must not be one, and an unknown key
    gets a did-you-mean among the keys of its own section."""
    out: dict[str, Any] = {}
    for k, v in nested.items():
        key = f"{prefix}{k}"
        if key in SECTIONS_ALL:
            if not isinstance(v, dict):
                raise ConfigError(f"{where}{key}={v!r}: expected a mapping (the '{key}' section), "
                                  f"got {type(v).__name__}")
            out.update(checked_flatten(v, where, key + "."))
        elif key in LEAF_TYPES:
            if isinstance(v, dict):
                raise ConfigError(f"{where}{key}: expected {_type_name(LEAF_TYPES[key])}, got a mapping")
            out[key] = v
        else:
            if isinstance(v, dict) and v:  # name the whole dotted key the user meant (lri.cre_weight)
                key = next(iter(flatten(v, key + ".")))
                raise ConfigError(f"{where}unknown config key '{key}'{did_you_mean(key, list(LEAF_TYPES))}")
            level = [name[len(prefix):] for name in (*LEAF_TYPES, *SECTIONS_ALL)
                     if name.startswith(prefix) and "." not in name[len(prefix):]]
            hint = did_you_mean(key, [prefix + name for name in level]) or did_you_mean(key, list(LEAF_TYPES))
            raise ConfigError(f"{where}unknown config key '{key}'{hint}")
    return out


def to_dict(cfg: MoReConfig) -> dict[str, Any]:
    """The config as a plain nested dict (YAML-ready)."""
    return dataclasses.asdict(cfg)


def to_flat(cfg: MoReConfig) -> dict[str, Any]:
    """The config as a flat dict of dotted keys, e.g. for MLflow params or Tune configs."""
    return flatten(to_dict(cfg))


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value``; the value is read as YAML (``0.1``, ``true``, ``[1.0, 0.5]``, ``voc``)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. lir.cre_weight=0.1)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = load_yaml(raw, where=f"override '{text}'") if raw.strip() else ""
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    return key, value


def parse_overrides(items: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """Overrides given as ``["a.b=1", ...]`` or as a dict of dotted keys."""
    if not items:
        return {}
    if isinstance(items, dict):
        return dict(items)
    if not isinstance(items, (list, tuple)):  # a string would be read one character at a time
        raise ConfigError(f"overrides={items!r}: expected a list of key=value strings or a mapping of dotted keys")
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"override {item!r}: expected a key=value string")
    return dict(parse_override(s) for s in items)


# ---------------------------------------------------------------------------------------------- loading


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping safely, with errors that name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = load_yaml(p.read_text(), where=str(p))
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    if data is None:
        raise ConfigError(f"{p}: the file is empty; a config needs at least 'preset: NAME' or one section")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _split_file(data: dict[str, Any], where: str) -> tuple[str | None, dict[str, Any]]:
    data = dict(data)
    preset = data.pop("preset", None)
    if preset is not None and not isinstance(preset, str):
        raise ConfigError(f"{where}preset={preset!r}: expected a preset name ({', '.join(PRESETS)})")
    if "overrides" in data and data["overrides"] is None:
        raise ConfigError(f"{where}overrides: has no value; remove it or give a mapping of dotted keys")
    overrides = data.pop("overrides", None)
    flat = checked_flatten(data, where)
    if overrides is not None:
        try:
            flat.update(flatten(overrides) if isinstance(overrides, dict) else parse_overrides(overrides))
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None
    return preset, flat


def load_config(
    source: str | os.PathLike | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    check_paths: bool = False,
) -> MoReConfig:
    """Build a validated config.

    Args:
        source: a YAML file (``experiments/X.yaml``), a preset name (``voc``, ``coco``, ``synthetic``) or
            None for the ``voc`` preset. A YAML file may name its base with ``preset: NAME``.
        overrides: dotted ``key=value`` strings, or a dict of dotted keys.
        check_paths: also require that paths the run reads (dataset root, weights, labels file) exist.

    Raises:
        ConfigError: naming the dotted key and the bad value.
    """
    where = ""
    file_flat: dict[str, Any] = {}
    preset_name = "voc"
    if source is not None:
        src = str(source)
        if src in PRESETS and not Path(src).is_file():
            preset_name = src
        else:
            where = f"{src}: "
            preset, file_flat = _split_file(read_yaml(src), where)
            if preset is not None:
                preset_name = preset
    if preset_name not in PRESETS:
        raise _choice_error(where, "preset", preset_name, list(PRESETS))
    cli_flat = parse_overrides(overrides)

    merged_user = {**file_flat, **cli_flat}
    level = merged_user.get("fidelity", PRESETS[preset_name].get("fidelity", "reference"))
    if level not in FIDELITY_LEVELS:
        raise _choice_error(where, "fidelity", level, list(FIDELITY_LEVELS))

    cfg = MoReConfig()
    layers = [
        ("preset " + preset_name + ": ", PRESETS[preset_name]),
        ("", fidelity_overrides(level)),
        (where, file_flat),
        ("override ", cli_flat),
    ]
    for layer_where, flat in layers:
        for key, value in flat.items():
            _set(cfg, key, value, layer_where)
    cfg.data.root = _absolute(cfg.data.root)
    cfg.runtime.out_dir = _absolute(cfg.runtime.out_dir)
    if cfg.data.labels_file:
        cfg.data.labels_file = _absolute(cfg.data.labels_file)
    validate(cfg, check_paths=check_paths)
    return cfg


def apply_overrides(cfg: MoReConfig, overrides: list[str] | dict[str, Any], *, check_paths: bool = False) -> MoReConfig:
    """A validated copy of ``cfg`` with dotted overrides applied (fidelity is not re-expanded)."""
    out = from_dict(to_dict(cfg))
    for key, value in parse_overrides(overrides).items():
        _set(out, key, value, "override ")
    validate(out, check_paths=check_paths)
    return out


def from_dict(data: dict[str, Any], *, where: str = "") -> MoReConfig:
    """Rebuild a config from a nested or flat dict (the inverse of :func:`to_dict` / :func:`to_flat`)."""
    cfg = MoReConfig()
    for key, value in checked_flatten(data, where).items():
        _set(cfg, key, value, where)
    try:
        validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None
    return cfg


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if path else path


def _set(cfg: MoReConfig, key: str, value: Any, where: str) -> None:
    if key not in LEAF_TYPES:
        raise _unknown_key_error(key, where)
    value = _coerce(key, value, LEAF_TYPES[key], where)
    parts = key.split(".")
    obj: Any = cfg
    for part in parts[:-1]:
        obj = getattr(obj, part)
    setattr(obj, parts[-1], value)


def save_config(cfg: MoReConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML atomically (temporary name, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(dump_yaml(cfg))
    os.replace(tmp, p)
    return p


def dump_yaml(cfg: MoReConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


# ------------------------------------------------------------------------------------------- validation

CHOICES: dict[str, tuple[str, ...]] = {
    "fidelity": FIDELITY_LEVELS,
    "data.dataset": ("voc", "coco", "synthetic", "custom"),
    "data.augmentation": ("voc", "coco"),
    "model.lam": ("dot", "cosine"),
    "gcr.top_k_ratio_of": ("classes", "patches"),
    "gcr.candidates": ("classes_and_patches", "patches"),
    "gcr.similarity": ("dot", "cosine"),
    "gcr.fusion": ("reference", "paper"),
    "gcr.weighting": ("sum_product", "dot"),
    "lir.cre_norm": ("reference", "paper"),
    "lir.ure_token_offset": ("reference", "centered"),
    "loss.seg_target": ("cam", "lam"),
    "loss.energy_filter": ("lattice", "exact"),
    "pseudo.lir_mask_source": ("aux_then_main", "main"),
    "pseudo.par_channels": ("auto", "all", "present"),
    "train.amp": ("auto", "bf16", "off"),
    "optim.idle_params": ("zero_grad", "skip"),
}

DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")
NON_NEGATIVE = [
    "lir.cre_weight",
    "lir.ure_weight",
    "loss.cls_weight",
    "loss.cls_aux_weight",
    "loss.mct_weight",
    "loss.ptc_weight",
    "loss.ptc_weight_late",
    "loss.seg_weight",
    "loss.energy_weight",
    "loss.energy_scale",
    "optim.weight_decay",
    "eval.crf_gauss_compat",
    "eval.crf_bi_compat",
    "gcr.top_k",
    "data.num_workers",
    "eval.max_images",
    "eval.num_vis",
    "eval.crf_workers",
    "runtime.num_threads",
    "eval.cam2seg_min_pixels",
    "data.jitter_brightness",
    "data.jitter_contrast",
    "data.jitter_saturation",
    "data.synth_seed",
    "train.seed",
]
POSITIVE = [
    "lir.cre_temperature",
    "loss.mct_temperature",
    "lir.ure_num_tokens",
    "optim.lr",
    "optim.head_lr_mult",
    "optim.eps",
    "optim.power",
    "train.max_iters",
    "train.batch_size",
    "train.accum_steps",
    "train.log_every",
    "train.eval_every",
    "train.ckpt_every",
    "train.keep_ckpts",
    "data.crop_size",
    "eval.batch_size",
    "eval.resize",
    "loss.energy_sigma_rgb",
    "loss.energy_sigma_xy",
    "loss.energy_scale_factor",
    "loss.energy_tile",
    "model.decoder_channels",
    "model.decoder_dilation",
    "pseudo.par_iters",
    "eval.crf_iters",
    "eval.crf_gauss_sxy",
    "eval.crf_bi_sxy",
    "eval.crf_bi_srgb",
    "data.synth_classes",
    "data.synth_train",
    "data.synth_val",
    "data.synth_image_size",
]
PROBABILITIES = [
    "data.hflip_prob",
    "data.jitter_prob",
    "eval.bkg_thre",
    "optim.beta1",
    "optim.beta2",
    "optim.warmup_ratio",
    "data.jitter_hue",
]
THRESHOLD_PAIRS = [
    ("pseudo.par_bg_low", "pseudo.par_bg_high"),
    ("pseudo.cre_low", "pseudo.cre_high"),
    ("pseudo.aux_low", "pseudo.aux_high"),
    ("pseudo.main_low", "pseudo.main_high"),
]


def get(cfg: MoReConfig, key: str) -> Any:
    """Value of a dotted key."""
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _choice_error(where: str, key: str, value: Any, choices: list[str] | tuple[str, ...]) -> ConfigError:
    return ConfigError(f"{where}{key}={value!r}: must be one of {', '.join(choices)}{did_you_mean(value, choices)}")


def num_classes(cfg: MoReConfig) -> int:
    """Foreground classes C (= number of class tokens): 20 voc, 80 coco, ``data.synth_classes`` for the synthetic
    set, and the length of the ``classes:`` list of a custom dataset's ``data.root/dataset.yaml``.

    Raises:
        ConfigError: a custom dataset whose description is missing or invalid (naming data.root and the file).
    """
    if cfg.data.dataset == "custom":
        from more.data.description import DatasetError, read_description

        try:
            return read_description(cfg.data.root).num_classes
        except DatasetError as exc:
            raise ConfigError(f"data.dataset=custom, data.root={cfg.data.root!r}: {exc}") from None
    return {"voc": 20, "coco": 80}.get(cfg.data.dataset, cfg.data.synth_classes)


def patch_grid(cfg: MoReConfig) -> int:
    """Side of the training patch grid (crop / 16)."""
    return cfg.data.crop_size // 16


def validate(cfg: MoReConfig, *, check_paths: bool = False) -> None:
    """Raise :class:`ConfigError` for the first out-of-range value (naming the dotted key and the value)."""

    def fail(key: str, why: str) -> None:
        raise ConfigError(f"{key}={get(cfg, key)!r}: {why}")

    for key, choices in CHOICES.items():
        if get(cfg, key) not in choices:
            raise _choice_error("", key, get(cfg, key), choices)
    if not DEVICE_RE.fullmatch(cfg.runtime.device):
        raise ConfigError(f"runtime.device={cfg.runtime.device!r}: must be auto, cpu, cuda or cuda:N"
                          f"{did_you_mean(cfg.runtime.device, ('auto', 'cpu', 'cuda'))}")
    from more.model.variants import VARIANTS  # light module: a dict of sizes, no torch import

    if cfg.model.variant not in VARIANTS:
        raise _choice_error("", "model.variant", cfg.model.variant, sorted(VARIANTS))
    for key in NON_NEGATIVE:
        if get(cfg, key) < 0:
            fail(key, "must be >= 0")
    for key in POSITIVE:
        if get(cfg, key) <= 0:
            fail(key, "must be > 0")
    for key in PROBABILITIES:
        if not 0.0 <= get(cfg, key) <= 1.0:
            fail(key, "must be a probability in [0, 1]")
    for low, high in THRESHOLD_PAIRS:
        lo, hi = get(cfg, low), get(cfg, high)
        if not 0.0 < lo < hi < 1.0:
            raise ConfigError(f"{low}={lo!r}, {high}={hi!r}: thresholds must satisfy 0 < {low} < {high} < 1")
    if not 0.0 < cfg.lir.ure_phi <= 2.0:
        fail("lir.ure_phi", "phi must be in (0, 2] (the window mean of codes 0/1/2)")
    grid = patch_grid(cfg)
    if not 1 <= cfg.lir.ure_kernel <= grid:
        fail("lir.ure_kernel", f"d must be between 1 and the patch grid ({grid} = data.crop_size/16)")
    if cfg.data.crop_size % 16:
        fail("data.crop_size", "must be a multiple of the patch size 16")
    if cfg.eval.resize % 16:
        fail("eval.resize", "must be a multiple of the patch size 16")
    if not 0.0 < cfg.gcr.top_k_ratio <= 1.0:
        fail("gcr.top_k_ratio", "must be in (0, 1]")
    if resolved_top_k(cfg) < 1:
        raise ConfigError(
            f"gcr.top_k={cfg.gcr.top_k!r}, gcr.top_k_ratio={cfg.gcr.top_k_ratio!r}: K resolves to "
            f"{resolved_top_k(cfg)}; K must be >= 1"
        )
    if not 0.0 < cfg.data.scale_min <= cfg.data.scale_max <= 1.0:
        raise ConfigError(
            f"data.scale_min={cfg.data.scale_min!r}, data.scale_max={cfg.data.scale_max!r}: need 0 < min <= max <= 1"
        )
    if not 0.0 < cfg.data.ratio_min <= cfg.data.ratio_max:
        raise ConfigError(
            f"data.ratio_min={cfg.data.ratio_min!r}, data.ratio_max={cfg.data.ratio_max!r}: need 0 < min <= max"
        )
    for key in ("pseudo.cam_scales", "eval.infer_cam_scales", "eval.infer_multiscale", "eval.seg_scales"):
        vals = get(cfg, key)
        if not vals or any(v <= 0 for v in vals):
            fail(key, "must be a non-empty list of positive scales")
    if not cfg.pseudo.par_dilations or any(d < 1 for d in cfg.pseudo.par_dilations):
        fail("pseudo.par_dilations", "must be a non-empty list of dilations >= 1")
    if len(cfg.data.mean) != 3 or len(cfg.data.std) != 3 or any(s <= 0 for s in cfg.data.std):
        raise ConfigError(f"data.mean={cfg.data.mean!r}, data.std={cfg.data.std!r}: need 3 values each, std > 0")
    if cfg.data.synth_classes > 8:
        fail("data.synth_classes", "the synthetic generator has 8 class designs: use 1..8")
    if cfg.model.num_registers < 0:
        fail("model.num_registers", "must be >= 0")
    depth = VARIANTS[cfg.model.variant]["depth"]
    if not -depth <= cfg.model.aux_layer < depth:
        fail("model.aux_layer", f"must index a block of {cfg.model.variant} (depth {depth}): -{depth}..{depth - 1}")
    for key in ("loss.ptc_start", "loss.lir_start", "loss.seg_start", "pseudo.mask_switch_iter", "optim.warmup_iters"):
        if get(cfg, key) < -1:
            fail(key, "must be >= -1 (-1 = from the first iteration)")
    if check_paths:
        check_config_paths(cfg)


def resolved_top_k(cfg: MoReConfig) -> int:
    """GCR's K: explicit ``gcr.top_k`` or ``int(ratio * base)`` with base C (reference) or L (paper)."""
    if cfg.gcr.top_k > 0:
        return cfg.gcr.top_k
    base = num_classes(cfg) if cfg.gcr.top_k_ratio_of == "classes" else patch_grid(cfg) ** 2
    return int(cfg.gcr.top_k_ratio * base)


WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".npz", ".bin")  # model.pretrained as a file, not a model name


def check_config_paths(cfg: MoReConfig) -> None:
    """Require the files and folders a run reads; a synthetic set that will be generated is fine."""
    generated = cfg.data.dataset == "synthetic" and cfg.data.synth_generate
    if not generated and not Path(cfg.data.root).is_dir():
        raise ConfigError(f"data.root={cfg.data.root!r}: folder does not exist")
    if cfg.data.labels_file and not Path(cfg.data.labels_file).is_file():
        raise ConfigError(f"data.labels_file={cfg.data.labels_file!r}: file does not exist")
    w = cfg.model.pretrained
    if (
        w
        and (os.sep in w or w.endswith(WEIGHT_SUFFIXES))
        and not Path(w).expanduser().is_file()
    ):
        raise ConfigError(f"model.pretrained={w!r}: weights file does not exist")
