"""Loading pretrained ViT weights into :class:`MultiClassTokenViT` (MORE_SPEC §1.2, function ``reload``).

Sources: a local timm checkpoint (``.pth``/``.pt``/``.bin``: a state dict, or ``{"model"|"state_dict": ...}``), a
``.safetensors`` file, a Google/big_vision ``.npz`` (read by timm's own npz loader), or a timm pretrained tag
(``timm:NAME`` or a bare ``NAME``) when a hub is reachable.

Mapping of a single-class-token ViT onto the T = R + C extra tokens (§1.2):

* ``head.*`` is dropped;
* ``pos_embed`` = [R register rows ~ trunc_normal(std=1, a=-2, b=2) | C copies of the CLS position row | the patch
  grid, resized bicubically to the model's stored grid when it differs];
* ``cls_token`` = the pretrained CLS vector repeated T times, so all class tokens start exactly equal.

Any failure raises :class:`WeightsError` naming the source: a run that asked for weights never silently starts
from a random init.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_

from more.model.backbone import MultiClassTokenViT

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".npz")
HUB_PROBE_TIMEOUT_S = 3.0  # a hub that does not answer a TCP connect within this is treated as unreachable
DROPPED_PREFIXES = ("head.", "head_dist.")  # classification heads of the pretraining task


class WeightsError(RuntimeError):
    """Pretrained weights were requested but could not be loaded; the message names the source."""


class LoadReport(NamedTuple):
    """What :func:`load_pretrained` did."""

    source: str
    missing: list[str]  # backbone keys the checkpoint did not provide (left at their init)
    unexpected: list[str]  # checkpoint keys the backbone has no use for (after dropping the heads)


def is_weights_file(source: str) -> bool:
    """True when ``source`` names a local file rather than a timm tag."""
    return source.endswith(FILE_SUFFIXES) or os.sep in source or Path(source).expanduser().is_file()


def load_pretrained(backbone: MultiClassTokenViT, source: str) -> LoadReport:
    """Load single-class-token ViT weights into ``backbone`` with the §1.2 mapping.

    Args:
        backbone: the multi-class-token ViT to fill (modified in place).
        source: a weights file path, ``timm:NAME`` or a timm pretrained tag.

    Returns:
        :class:`LoadReport` with the missing and unexpected backbone keys.

    Raises:
        WeightsError: on any failure (missing file, unreadable format, hub unreachable, shape mismatch).
    """
    try:
        if source.startswith("timm:"):
            state = _state_from_timm(source[len("timm:") :], backbone)
        elif is_weights_file(source):
            state = _state_from_file(Path(source).expanduser(), backbone)
        else:
            state = _state_from_timm(source, backbone)
        mapped, dropped_unexpected = map_state_dict(state, backbone)
        result = backbone.load_state_dict(mapped, strict=False)
    except WeightsError as exc:
        raise WeightsError(f"pretrained weights '{source}': {exc}") from exc
    except Exception as exc:  # every failure must name the source
        raise WeightsError(f"pretrained weights '{source}': {type(exc).__name__}: {exc}") from exc
    report = LoadReport(source, sorted(result.missing_keys), sorted(set(result.unexpected_keys) | dropped_unexpected))
    if report.missing or report.unexpected:
        log.warning("weights %s: missing %s, unexpected %s", source, report.missing, report.unexpected)
    return report


# ------------------------------------------------------------------------------------------------- mapping


def map_state_dict(
    state: dict[str, torch.Tensor], backbone: MultiClassTokenViT
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Map a timm single-CLS ViT state dict onto ``backbone`` (MORE_SPEC §1.2).

    A checkpoint of a :class:`MultiClassTokenViT` with the same T is passed through unchanged.

    Returns:
        (mapped state dict, checkpoint keys dropped because the backbone has no such parameter).

    Raises:
        WeightsError: when ``cls_token``/``pos_embed`` are absent, no block matches, or a shape differs.
    """
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith(DROPPED_PREFIXES)}
    for key in ("cls_token", "pos_embed"):
        if key not in state:
            raise WeightsError(f"checkpoint has no '{key}' (is it a timm ViT state dict?)")
    own = backbone.state_dict()
    extra, dim = backbone.num_extra_tokens, backbone.embed_dim
    cls, pos = state["cls_token"], state["pos_embed"]
    if cls.shape[-1] != dim or pos.shape[-1] != dim:
        raise WeightsError(f"embedding width {cls.shape[-1]} in the checkpoint, {dim} in the model")
    if cls.shape != own["cls_token"].shape:
        state["cls_token"], state["pos_embed"] = _expand_extra_tokens(cls, pos, backbone)
    elif pos.shape != own["pos_embed"].shape:  # same T, other grid: keep the extra rows, resize the patch rows
        grid = math.isqrt(own["pos_embed"].shape[1] - extra)
        state["pos_embed"] = torch.cat((pos[:, :extra], _resize_grid(pos[:, extra:], grid)), dim=1)

    unexpected = {k for k in state if k not in own}
    mapped = {k: v for k, v in state.items() if k in own}
    if not any(k.startswith("blocks.") for k in mapped):
        raise WeightsError(f"no transformer block keys match the model (first keys: {sorted(state)[:5]})")
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in mapped.items() if v.shape != own[k].shape]
    if bad:
        raise WeightsError("shape mismatch: " + "; ".join(bad[:8]))
    return mapped, unexpected


def _expand_extra_tokens(
    cls: torch.Tensor, pos: torch.Tensor, backbone: MultiClassTokenViT
) -> tuple[torch.Tensor, torch.Tensor]:
    """One CLS token -> T extra tokens (§1.2). Returns (cls_token (1,T,D), pos_embed (1,T+n*n,D))."""
    if cls.shape[:2] != (1, 1):
        raise WeightsError(f"expected one CLS token (1, 1, D), got cls_token {tuple(cls.shape)}")
    registers, classes = backbone.num_registers, backbone.num_class_tokens
    dim = cls.shape[-1]
    grid = math.isqrt(backbone.patch_embed.num_patches)
    register_pos = torch.empty(1, registers, dim, dtype=pos.dtype)
    trunc_normal_(register_pos, std=1.0, a=-2.0, b=2.0)  # §7.1: timm's default std 1.0, not 0.02
    cls_pos = pos[:, :1].expand(1, classes, dim)  # (1, C, D)
    patch_pos = _resize_grid(pos[:, 1:], grid)  # (1, n*n, D)
    new_pos = torch.cat((register_pos, cls_pos, patch_pos), dim=1)
    new_cls = cls.expand(1, registers + classes, dim).clone()  # all T tokens start equal
    return new_cls, new_pos


def _resize_grid(patch_pos: torch.Tensor, side: int) -> torch.Tensor:
    """(1, m*m, D) -> (1, side*side, D), bicubic with ``size=`` as the reference ``reload`` does."""
    count, dim = patch_pos.shape[1], patch_pos.shape[2]
    old = math.isqrt(count)
    if old * old != count:
        raise WeightsError(f"position table has {count} patch rows, not a square grid")
    if old == side:
        return patch_pos
    table = patch_pos.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    table = F.interpolate(table, size=(side, side), mode="bicubic", align_corners=False)
    return table.permute(0, 2, 3, 1).reshape(1, side * side, dim).to(patch_pos.dtype)


# ------------------------------------------------------------------------------------------------- sources


def _state_from_file(path: Path, backbone: MultiClassTokenViT) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix == ".npz":
        return _state_from_npz(path, backbone)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return obj


def _plain_vit(backbone: MultiClassTokenViT, name: str | None = None) -> torch.nn.Module:
    """A single-CLS timm ViT with the backbone's sizes (or the timm model ``name``)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if name is not None:
        return timm.create_model(name, pretrained=True, num_classes=0)
    return VisionTransformer(
        img_size=backbone.patch_embed.img_size,
        patch_size=backbone.patch_embed.patch_size,
        num_classes=0,
        embed_dim=backbone.embed_dim,
        depth=len(backbone.blocks),
        num_heads=backbone.blocks[0].attn.num_heads,
        mlp_ratio=backbone.blocks[0].mlp.fc1.out_features / backbone.embed_dim,
        qkv_bias=True,
    )


def _state_from_npz(path: Path, backbone: MultiClassTokenViT) -> dict[str, torch.Tensor]:
    """Google/big_vision npz -> timm names, through timm's own npz loader on a plain ViT of the same size."""
    from timm.models.vision_transformer import _load_weights

    vit = _plain_vit(backbone)
    _load_weights(vit, str(path))
    return vit.state_dict()


def _state_from_timm(name: str, backbone: MultiClassTokenViT) -> dict[str, torch.Tensor]:
    if not name:
        raise WeightsError("empty timm model name")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline:
        _require_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    with _hub_offline(offline):
        return _plain_vit(backbone, name).state_dict()


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Honour HF_HUB_OFFLINE even when it was set after huggingface_hub read its environment at import."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _require_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> None:
    """Fail fast when the hub does not answer (name resolution runs in a thread so it cannot hang the caller)."""
    url = urlparse(endpoint)
    host, port = url.hostname or endpoint, url.port or (443 if url.scheme != "http" else 80)
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome or outcome[0] is not None:
        why = outcome[0] if outcome else f"no answer in {timeout:.0f} s"
        raise WeightsError(
            f"hub {endpoint} is unreachable ({why}); pass a local weights file, or set HF_HUB_OFFLINE=1 to use a "
            "cached copy"
        )
