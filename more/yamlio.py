"""The one YAML reader of the project: safe (no Python objects) and strict (a duplicate key is an error).

PyYAML's ``safe_load`` silently keeps the last of two equal keys, so a config that sets ``optim.lr`` twice, or a
spec with two conditions of one name, would run with whichever came last. Every YAML file the project reads
(configs, ablation and search specs, saved run configs, specs read back from MLflow) goes through
:func:`load_yaml`.
"""

from __future__ import annotations

from typing import Any

import yaml


class YamlError(ValueError):
    """YAML that cannot be read: invalid syntax or a duplicate key; the message says where."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key (a list as a key): the mapping constructor names it
            continue
        if first is not None:
            raise YamlError(f"duplicate key '{key}' at line {line} (first defined at line {first})")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml(text: str, *, where: str) -> Any:
    """Parse ``text`` safely, refusing duplicate keys at any depth.

    Args:
        text: the YAML document.
        where: what it is (a file path), the start of every error message.

    Raises:
        YamlError: ``"<where>: duplicate key ..."`` or ``"<where>: not valid YAML: ..."``.
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass
    except YamlError as exc:
        raise YamlError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{where}: not valid YAML: {exc}") from None
