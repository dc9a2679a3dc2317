"""Typed config: defaults in code (`schema`), presets and fidelity switches (`presets`), YAML + overrides (`load`)."""

from more.config.load import (
    ConfigError,
    apply_overrides,
    dump_yaml,
    from_dict,
    get,
    load_config,
    num_classes,
    parse_overrides,
    patch_grid,
    resolved_top_k,
    save_config,
    to_dict,
    to_flat,
)
from more.config.presets import FIDELITY_SWITCHES, PRESETS, TABLE3_CONDITIONS
from more.config.schema import MoReConfig

__all__ = [
    "ConfigError",
    "MoReConfig",
    "PRESETS",
    "FIDELITY_SWITCHES",
    "TABLE3_CONDITIONS",
    "apply_overrides",
    "dump_yaml",
    "from_dict",
    "get",
    "load_config",
    "num_classes",
    "parse_overrides",
    "patch_grid",
    "resolved_top_k",
    "save_config",
    "to_dict",
    "to_flat",
]
