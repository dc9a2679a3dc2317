"""The inference tools end to end: ``tools/infer_cam.py``, ``infer_lam.py``, ``infer_seg_voc.py`` and ``utils/dcrf.py``
against ``python -m more infer``'s driver (MORE_SPEC §5.2-5.4).

The reference's own ``_validate`` and ``crf_proc`` functions run on a small VOC tree with its network, our
``run_inference`` runs on the same tree with our network; both networks hold the same weights (reduced width,
:func:`tools.refcheck.build.paired`). To run the reference on the CPU in one process, its script modules get a
``torch`` whose ``cuda.device`` is a no-op, ``DataLoader`` and ``joblib.Parallel`` without workers, and an
``evaluate`` that records the (ground truth, prediction) lists it scores; nothing else of the scripts is changed.
Per output, the row is the fraction of pixels whose label differs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from more.config import load_config
from more.data import build_eval_dataset
from more.data.voc import read_mask
from more.eval.infer import InferOptions, LoadedRun, run_inference
from tools.refcheck.build import SIZES, paired
from tools.refcheck.common import Row, compare
from tools.refcheck.pipeline_data import Tree, voc_tree

SIZES_HW = ((240, 180), (180, 240), (160, 120))


class _Proxy:
    """Attribute access falls through to ``target`` except for the names given."""

    def __init__(self, target: Any, **overrides: Any) -> None:
        self._target, self._overrides = target, overrides

    def __getattr__(self, name: str) -> Any:
        return self._overrides[name] if name in self._overrides else getattr(self._target, name)


class _Scores:
    """Stands in for the scripts' ``utils.evaluate``: records what ``scores`` is given, then delegates."""

    def __init__(self, evaluate: Any) -> None:
        self.evaluate = evaluate
        self.calls: list[tuple[list[np.ndarray], list[np.ndarray]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.evaluate, name)

    def scores(self, gts: Any, preds: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(([np.asarray(g) for g in gts], [np.asarray(p) for p in preds]))
        return self.evaluate.scores(gts, preds, *args, **kwargs)


@contextlib.contextmanager
def _cpu_script(module: Any) -> Iterator[_Scores]:
    """Patches one loaded reference script for a CPU, single-process run; undone on exit."""
    from torch.utils.data import DataLoader

    def loader(*args: Any, **kwargs: Any) -> DataLoader:
        kwargs["num_workers"] = 0
        return DataLoader(*args, **kwargs)

    import joblib

    recorder = _Scores(module.evaluate)
    cuda = _Proxy(torch.cuda, device=lambda *_a, **_k: contextlib.nullcontext(), empty_cache=lambda: None)
    parallel_cls = joblib.Parallel
    patched = {"torch": _Proxy(torch, cuda=cuda), "evaluate": recorder, "DataLoader": loader,
               "joblib": _Proxy(joblib, Parallel=lambda *a, **k: parallel_cls(*a, **{**k, "n_jobs": 1}))}
    saved = {k: getattr(module, k) for k in patched if hasattr(module, k)}
    for k, v in patched.items():
        setattr(module, k, v)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield recorder
    finally:
        for k in patched:
            if k in saved:
                setattr(module, k, saved[k])
            else:
                delattr(module, k)


def _ref_args(module: Any, tree: Tree, out: Path, flags: list[str]) -> argparse.Namespace:
    args = module.parser.parse_args(["--data_folder", str(tree.root), "--list_folder", str(tree.list_dir),
                                     "--infer_set", tree.split, *flags])
    for name in ("cam_dir", "cam_aux_dir", "cs_cam_dir", "logits_dir", "segs_dir", "segs_rgb_dir", "segs_crf_rgb_dir"):
        path = out / name
        path.mkdir(parents=True, exist_ok=True)
        setattr(args, name, str(path))
    return args


def _ref_dataset(ref: Any, tree: Tree) -> Any:
    return ref.voc.VOC12SegDataset(root_dir=str(tree.root), name_list_dir=str(tree.list_dir), split=tree.split,
                                   stage="val", aug=False, ignore_index=255, num_classes=21)


def _run_seed_tool(ref: Any, script: str, net: torch.nn.Module, tree: Tree, out: Path, *, multiscale: bool,
                   cam2seg: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The seeds (or cam2seg labels) and CRF masks of ``tools/infer_cam.py`` / ``infer_lam.py``."""
    module = ref.load_script(script)
    args = _ref_args(module, tree, out, ["--crf_post", "true", "--refine_with_multiscale", str(multiscale).lower(),
                                         "--cam2seg", str(cam2seg).lower(), "--save_cls_specific_cam", "false"])
    module.args = args  # crf_proc reads the script's global ``args``
    with _cpu_script(module) as recorder:
        module._validate(pid=0, model=net.eval(), dataset=[_ref_dataset(ref, tree)], args=args)
        module.crf_proc()
    (_, seeds), (_, masks) = recorder.calls
    return seeds, masks


def _run_seg_tool(ref: Any, net: torch.nn.Module, tree: Tree, out: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Raw and CRF predictions of ``tools/infer_seg_voc.py``."""
    from torch.utils.data import DataLoader

    module = ref.load_script("tools/infer_seg_voc.py")
    args = _ref_args(module, tree, out, [])
    module.args = args
    with _cpu_script(module) as recorder:
        loader = DataLoader(_ref_dataset(ref, tree), batch_size=1, shuffle=False, num_workers=0)
        module._validate(model=net.eval(), data_loader=loader, args=args)
        module.crf_proc()
    (_, raw), (_, crf) = recorder.calls
    return raw, crf


def _ours(run: LoadedRun, tree: Tree, out: Path, options: InferOptions) -> dict[str, list[np.ndarray]]:
    dataset = build_eval_dataset(run.cfg, tree.split)
    with contextlib.redirect_stderr(io.StringIO()):
        run_inference(run, dataset, options, out, log=lambda _text: None)
    return {name: [read_mask(out / name / f"{n}.png").astype(np.int64) for n in tree.names]
            for name in options.outputs}


def _label_row(component: str, ours: list[np.ndarray], theirs: list[np.ndarray], note: str = "") -> Row:
    a = torch.from_numpy(np.concatenate([x.ravel() for x in ours]).astype(np.int64))
    b = torch.from_numpy(np.concatenate([x.ravel() for x in theirs]).astype(np.int64))
    return compare(component, a, b, atol=0, rtol=0, note=note)


def checks_and_fixtures(ref: Any) -> tuple[list[Row], dict[str, Any]]:
    """One row per inference output; the fixture keeps the reference's label maps and the tiny model's weights."""
    rows: list[Row] = settings_rows(ref)
    fixture: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="more-refcheck-infer-") as tmp:
        work = Path(tmp)
        tree = voc_tree(work / "voc", SIZES_HW)
        cfg = load_config("voc", {"data.root": str(tree.root), "data.num_workers": 0, "eval.batch_size": 2,
                                  "eval.crf_workers": 1})
        ours_net, theirs_net = paired(ref, SIZES["micro"])
        run = LoadedRun(cfg=cfg, model=ours_net.eval(), checkpoint=Path("<paired random weights>"), iteration=0,
                        device=torch.device("cpu"), autocast=False)
        fixture["weights"] = {k: v.clone() for k, v in ours_net.state_dict().items()}
        cases = [
            ("cam seeds", "tools/infer_cam.py", "cam", False, False),
            ("cam seeds multi-scale", "tools/infer_cam.py", "cam", True, False),
            ("lam seeds", "tools/infer_lam.py", "lam", False, False),
            ("lam seeds multi-scale", "tools/infer_lam.py", "lam", True, False),
            ("cam2seg (cam)", "tools/infer_cam.py", "cam", False, True),
        ]
        for label, script, source, multiscale, cam2seg in cases:
            out = work / label.replace(" ", "_")
            seeds, masks = _run_seed_tool(ref, script, theirs_net, tree, out / "ref", multiscale=multiscale,
                                          cam2seg=cam2seg)
            task = "cam2seg" if cam2seg else "masks"
            got = _ours(run, tree, out / "ours", InferOptions(task=task, source=source, multiscale=multiscale,
                                                             crf=True, workers=1))
            first, second = InferOptions(task=task, crf=True).outputs
            rows.append(_label_row(f"infer/{label}", got[first], seeds, note=script))
            rows.append(_label_row(f"infer/{label} + CRF", got[second], masks, note="utils/dcrf.py DenseCRF"))
            fixture[label] = {"labels": seeds, "crf": masks}
        raw, crf = _run_seg_tool(ref, theirs_net, tree, work / "seg" / "ref")
        got = _ours(run, tree, work / "seg" / "ours", InferOptions(task="seg", crf=True, workers=1))
        rows.append(_label_row("infer/seg multi-scale + flip", got["seg_raw"], raw, note="tools/infer_seg_voc.py"))
        rows.append(_label_row("infer/seg multi-scale + flip + CRF", got["seg_crf"], crf))
        fixture["seg"] = {"labels": raw, "crf": crf}
        fixture["names"] = list(tree.names)
        fixture["sizes"] = [list(s) for s in SIZES_HW]
    return rows, fixture


def _literal_lists(function: Any, call: str) -> list[list[float]]:
    """Literal list arguments (positional or keyword) of every ``call(...)`` in a function's source."""
    import ast
    import inspect
    import textwrap

    out = []
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(function)))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == call:
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                if isinstance(arg, ast.List):
                    out.append([float(v) for v in ast.literal_eval(arg)])
    return out


def settings_rows(ref: Any) -> list[Row]:
    """The tools' settings (argument defaults and literals in their loops) against our ``eval.*`` defaults."""
    cfg = load_config("voc").eval
    rows = []
    for script in ("tools/infer_cam.py", "tools/infer_lam.py"):
        module = ref.load_script(script)
        stem = Path(script).stem
        args = module.parser.parse_args([])
        rows.append(compare(f"infer/settings {stem} bkg_thre", torch.tensor(cfg.bkg_thre), torch.tensor(args.bkg_thre),
                            atol=0, rtol=0))
        scales = sorted(_literal_lists(module._validate, "multi_scale_cam2" if "cam" in stem else "multi_scale_lam2"),
                        key=len)
        rows.append(compare(f"infer/settings {stem} scales (single, multi)",
                            [torch.tensor(cfg.infer_cam_scales), torch.tensor(cfg.infer_multiscale)],
                            [torch.tensor(scales[0]), torch.tensor(scales[-1])], atol=0, rtol=0))
        sizes = _literal_lists(module._validate, "interpolate")
        rows.append(compare(f"infer/settings {stem} input square", torch.tensor([cfg.resize, cfg.resize]),
                            torch.tensor(sizes[0]), atol=0, rtol=0))
    seg = ref.load_script("tools/infer_seg_voc.py").parser.parse_args([])
    rows.append(compare("infer/settings infer_seg_voc scales", torch.tensor(cfg.seg_scales),
                        torch.tensor([float(s) for s in seg.scales]), atol=0, rtol=0))
    return rows
