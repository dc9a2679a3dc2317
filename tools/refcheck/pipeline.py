"""Pipeline checks: training augmentation, the COCO schedule, the inference tools and DenseCRF (issue 13, item 2).

``checks(ref)`` gathers the rows of :mod:`pipeline_aug`, :mod:`pipeline_coco`, :mod:`pipeline_infer` and the
DenseCRF rows below; ``write_golden(ref, out_dir, command=...)`` writes what the reference computed to
``pipeline_{aug,coco,infer}.pt`` for ``tests/golden/test_golden_pipeline.py`` (reusing the fixtures of the last
``checks`` run on the same reference, so the tool does not compute everything twice).
"""

from __future__ import annotations

import ast
import datetime
import inspect
import os
import tempfile
import textwrap
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from more.config import load_config
from more.eval.infer import crf_kwargs
from more.pseudo.crf import dense_crf
from tools.refcheck import pipeline_aug, pipeline_coco, pipeline_infer
from tools.refcheck.common import EXPECTED_COMMIT, Row, compare
from tools.refcheck.pipeline_data import photo, photo_digest

# DenseCRF(...) keyword -> our eval.crf_* setting (more.eval.infer.crf_kwargs)
CRF_KEYS = {"iter_max": "iters", "pos_xy_std": "gauss_sxy", "pos_w": "gauss_compat", "bi_xy_std": "bi_sxy",
            "bi_rgb_std": "bi_srgb", "bi_w": "bi_compat"}
CRF_TOOLS = ("tools/infer_cam.py", "tools/infer_lam.py", "tools/infer_seg_voc.py")

_last: dict[str, Any] = {}


def pack_labels(maps: list[np.ndarray]) -> dict[str, Any]:
    """Label maps as one zlib-compressed uint8 tensor plus their shapes (label maps compress ~50x)."""
    flat = np.concatenate([np.asarray(m, dtype=np.uint8).ravel() for m in maps])
    data = np.frombuffer(zlib.compress(flat.tobytes(), 9), dtype=np.uint8).copy()
    return {"zlib": torch.from_numpy(data), "shapes": [list(np.asarray(m).shape) for m in maps]}


def unpack_labels(packed: dict[str, Any]) -> list[np.ndarray]:
    """Inverse of :func:`pack_labels`."""
    flat = np.frombuffer(zlib.decompress(packed["zlib"].numpy().tobytes()), dtype=np.uint8)
    out, at = [], 0
    for shape in packed["shapes"]:
        n = int(np.prod(shape))
        out.append(flat[at : at + n].reshape(shape))
        at += n
    return out


def crf_settings(module: Any) -> dict[str, float]:
    """The keyword arguments of the ``DenseCRF(...)`` call in a tool's ``crf_proc``, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(module.crf_proc)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DenseCRF":
            return {k.arg: float(ast.literal_eval(k.value)) for k in node.keywords if k.arg}
    raise ValueError(f"{module.__file__}: crf_proc() builds no DenseCRF")


def crf_rows(ref: Any) -> tuple[list[Row], dict[str, Any]]:
    """DenseCRF settings of the three tools vs ``eval.crf_*``; ``utils/dcrf.py`` vs ``dense_crf`` on a photograph."""
    cfg = load_config("voc")
    ours = crf_kwargs(cfg)
    rows, settings = [], {}
    for tool in CRF_TOOLS:
        theirs = crf_settings(ref.load_script(tool))
        settings[tool] = theirs
        rows.append(compare(f"crf/settings {Path(tool).stem}", torch.tensor([ours[CRF_KEYS[k]] for k in CRF_KEYS]),
                            torch.tensor([theirs[k] for k in CRF_KEYS]), atol=0, rtol=0,
                            note="iters, gauss sxy/compat, bilateral sxy/srgb/compat"))
    image = np.array(photo(), dtype=np.uint8)  # (600, 512, 3) real photograph
    h, w = image.shape[:2]
    g = torch.Generator().manual_seed(11)
    logits = F.interpolate(4.0 * torch.randn(1, 4, 6, 5, generator=g), size=(h, w), mode="bicubic",
                           align_corners=False)[0]
    probs = torch.softmax(logits, dim=0).numpy().astype(np.float32)  # (4, H, W)
    s = settings[CRF_TOOLS[0]]
    post = ref.dcrf.DenseCRF(iter_max=int(s["iter_max"]), pos_w=s["pos_w"], pos_xy_std=s["pos_xy_std"],
                             bi_w=s["bi_w"], bi_xy_std=s["bi_xy_std"], bi_rgb_std=s["bi_rgb_std"])
    expected = np.argmax(post(image, probs), axis=0)
    got = dense_crf(image, probs, **ours)
    rows.append(compare("crf/DenseCRF labels on a photograph", torch.from_numpy(got),
                        torch.from_numpy(expected.astype(np.int64)), atol=0, rtol=0,
                        note=f"{h}x{w}, 4 labels, changed {float((expected != probs.argmax(0)).mean()):.1%} of argmax"))
    fixture = {"settings": settings, "seed": 11, "labels": pack_labels([expected])}
    return rows, fixture


def checks(ref: Any) -> list[Row]:
    """Every pipeline row (about 60; a few minutes on two CPU cores)."""
    rows: list[Row] = []
    fixtures: dict[str, Any] = {}
    for name, part in (("aug", pipeline_aug), ("coco", pipeline_coco), ("infer", pipeline_infer)):
        got, fixtures[name] = part.checks_and_fixtures(ref)
        rows += got
    got, fixtures["crf"] = crf_rows(ref)
    rows += got
    _last.clear()
    _last.update(root=str(ref.root), fixtures=fixtures)
    return rows


def _save(obj: Any, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path.stat().st_size


def write_golden(ref: Any, out_dir: Path, *, command: str) -> str:
    """Writes ``pipeline_aug.pt``, ``pipeline_coco.pt`` and ``pipeline_infer.pt``; returns their sizes."""
    if _last.get("root") != str(ref.root):
        checks(ref)
    fixtures = _last["fixtures"]
    infer = dict(fixtures["infer"])
    weights = infer.pop("weights")
    for key, value in list(infer.items()):
        if isinstance(value, dict) and "labels" in value:
            infer[key] = {k: pack_labels(v) for k, v in value.items()}
    infer["weights_sha256"] = weights_digest(weights)
    infer["crf"] = fixtures["crf"]
    meta = {"command": command, "reference": "zwyang6/MoRe",
            "reference_commit": ref.commit or f"unverified (no .git at {ref.root}; expected {EXPECTED_COMMIT})",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": str(torch.__version__), "photo_sha256": photo_digest()}
    out = Path(out_dir)
    sizes = {name: _save({"meta": meta, **payload}, out / name) for name, payload in
             (("pipeline_aug.pt", fixtures["aug"]), ("pipeline_coco.pt", fixtures["coco"]),
              ("pipeline_infer.pt", infer))}
    return ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items())


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names and float32 bytes (the infer fixture runs on ``weights_micro.pt``)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()
