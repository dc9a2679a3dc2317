"""The state-dict name map between ``more``'s MoRe and the authors' ``model_mal.network`` (zwyang6/MoRe, d733d34).

One explicit map, used both ways: ``tools/refcheck`` copies our weights into the reference network through
:func:`reference_name`, and ``eval`` / ``infer`` load a checkpoint the authors' training scripts wrote through
:func:`from_reference`. The authors' scripts save the state dict of the DistributedDataParallel-wrapped network, so
their names carry a ``module.`` prefix; ``scripts/train_voc.py`` saves it alone (``model_iter_N.pth``),
``utils/pyutils.save_train`` (``scripts/train_coco.py``) inside ``{"step", "model_state_dict",
"optimizer_state_dict", "lr"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# our prefix -> the reference's (the backbone is their ``encoder``, GCR their ``graph_layer``)
PREFIXES = (("backbone.", "encoder."), ("gcr.", "graph_layer."), ("decoder.", "decoder."))
# the two CAM classifiers: our 1x1 conv sits in a ``.conv`` submodule, theirs is the conv itself
CLASSIFIERS = {"classifier.conv.weight": "classifier.weight", "aux_classifier.conv.weight": "aux_classifier.weight"}
# Parameters that exist only in the reference and never influence an output (MORE_SPEC §1.2, §1.5): the ViT's
# classification head and GCA's unused ``_fc1``. We do not build them.
REFERENCE_ONLY = ("encoder.head.weight", "encoder.head.bias", "graph_layer._fc1.0.weight", "graph_layer._fc1.0.bias")
DDP_PREFIX = "module."


def reference_name(ours: str) -> str:
    """Our parameter name -> the reference ``network``'s name.

    Raises:
        KeyError: a name the map does not know (a new parameter must be added here, never guessed).
    """
    for prefix, target in PREFIXES:
        if ours.startswith(prefix):
            return target + ours[len(prefix):]
    if ours in CLASSIFIERS:
        return CLASSIFIERS[ours]
    raise KeyError(f"no reference name for parameter {ours!r}: extend more/model/reference_names.py")


def our_name(theirs: str) -> str | None:
    """The reference's name (with or without ``module.``) -> ours; None for a name that has no counterpart."""
    if theirs.startswith(DDP_PREFIX):
        theirs = theirs[len(DDP_PREFIX):]
    for prefix, target in PREFIXES:
        if theirs.startswith(target):
            return prefix + theirs[len(target):]
    return {v: k for k, v in CLASSIFIERS.items()}.get(theirs)


def reference_state_dict(payload: Any) -> dict[str, Any] | None:
    """The network's state dict when ``payload`` (a loaded checkpoint file) is in the authors' format, else None.

    The authors' format: a flat ``{name: tensor}`` dict whose names are the reference's (``encoder.``,
    ``graph_layer.``, ``decoder.``, ``classifier.weight``, optionally behind ``module.``), or such a dict under
    ``model_state_dict``.
    """
    if isinstance(payload, Mapping) and isinstance(payload.get("model_state_dict"), Mapping):
        payload = payload["model_state_dict"]
    if not isinstance(payload, Mapping) or not payload:
        return None
    names = [str(k) for k in payload]
    stripped = {n[len(DDP_PREFIX):] if n.startswith(DDP_PREFIX) else n for n in names}
    if not any(n.startswith("encoder.") for n in stripped) or not any(n in CLASSIFIERS.values() for n in stripped):
        return None
    return dict(payload)


def from_reference(state: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Rename an authors' state dict to our names.

    Returns:
        ``(ours, unknown)``: the renamed entries, and the reference names with no counterpart of ours (the
        parameters in :data:`REFERENCE_ONLY` are dropped silently: they never influence an output).
    """
    ours: dict[str, Any] = {}
    unknown: list[str] = []
    for name, value in state.items():
        bare = name[len(DDP_PREFIX):] if name.startswith(DDP_PREFIX) else name
        if bare in REFERENCE_ONLY:
            continue
        target = our_name(bare)
        if target is None:
            unknown.append(name)
        else:
            ours[target] = value
    return ours, unknown
