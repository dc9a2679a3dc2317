"""Shared pieces of the reference-equivalence checks: result rows, tensor comparison, the table, and importing the
authors' code (zwyang6/MoRe) from a user's checkout at run time.

Nothing of the reference is copied into this repository: ``load_reference`` imports it from the path the user gives,
for the duration of a ``with`` block, and undoes every change it made to the interpreter on exit.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import math
import subprocess
import sys
import types
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

EXPECTED_COMMIT = "d733d34"
"""The commit of zwyang6/MoRe that ``more``'s ``fidelity=reference`` follows (MORE_SPEC.md)."""

# Top-level package names of the reference checkout; they shadow nothing in this project, but any module already
# imported under one of these names is set aside while the reference is loaded and put back afterwards.
REFERENCE_PACKAGES = ("model", "utils", "engine", "datasets", "bilateralfilter")

# Files the checks need, so that a partial checkout fails before any work with the missing path in the message.
REFERENCE_FILES = (
    "model/model_mal.py",
    "model/GCA.py",
    "model/PAR.py",
    "model/losses.py",
    "model/backbone/mat_vit.py",
    "model/backbone/vit.py",
    "model/decoder/conv_head.py",
    "utils/camutils.py",
    "utils/evaluate.py",
    "utils/imutils.py",
    "utils/optimizer.py",
    "utils/pyutils.py",
    "utils/dcrf.py",
    "engine/optimizer_engine.py",
    "engine/validatation_engine.py",
    "datasets/transforms.py",
    "datasets/voc.py",
    "scripts/train_voc.py",
)

# Third-party modules the reference imports (module name -> pip name).
REFERENCE_DEPENDENCIES = {
    "timm": "timm",
    "torchvision": "torchvision",
    "texttable": "texttable",
    "imageio": "imageio",
    "matplotlib": "matplotlib",
    "sklearn": "scikit-learn",
    "joblib": "joblib",
    "tqdm": "tqdm",
    "pydensecrf": "pydensecrf2",
}

REFERENCE_MODULES = (
    "model.model_mal",
    "model.GCA",
    "model.PAR",
    "model.losses",
    "model.backbone.mat_vit",
    "model.backbone.vit",
    "model.decoder.conv_head",
    "utils.camutils",
    "utils.evaluate",
    "utils.imutils",
    "utils.optimizer",
    "utils.pyutils",
    "utils.dcrf",
    "engine.optimizer_engine",
    "engine.validatation_engine",
    "datasets.transforms",
    "datasets.voc",
)


class ReferenceUnavailable(RuntimeError):
    """The reference checkout cannot be used (missing file, missing dependency, wrong commit)."""


@dataclass(frozen=True)
class Row:
    """One line of the equivalence table.

    Attributes:
        component: what was compared, e.g. ``"gcr/out"``.
        max_abs: largest absolute difference (``inf`` for a shape mismatch).
        rel: ``max_abs`` divided by the largest magnitude on the reference side (over all float leaves); for
            integer and bool outputs (labels, masks) the fraction of elements that differ.
        equal: within the check's tolerance.
        note: a short explanation (shown in the table).
        deliberate: the difference is a documented, deliberate one (README fidelity table / MORE_SPEC §11); such a
            row does not make the tool fail.
    """

    component: str
    max_abs: float
    rel: float
    equal: bool
    note: str = ""
    deliberate: bool = False

    @property
    def failing(self) -> bool:
        """An undocumented difference."""
        return not self.equal and not self.deliberate


def _leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Flattens nested tuples/lists/dicts/NamedTuples into (path, leaf) pairs in a stable order."""
    if isinstance(value, Mapping):
        for key in value:
            yield from _leaves(value[key], f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (bool, int, float, np.generic)):
        return torch.as_tensor(value)
    raise TypeError(f"cannot compare a {type(value).__name__}: expected tensors, arrays or numbers")


def _is_discrete(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex())


def compare(
    component: str,
    ours: Any,
    ref: Any,
    *,
    atol: float,
    rtol: float,
    note: str = "",
    deliberate: bool = False,
) -> Row:
    """Compares two tensors, arrays, numbers or equally nested tuples/lists/dicts of them.

    Equality is ``|ours - ref| <= atol + rtol * |ref|`` element-wise (``torch.isclose``), NaN equal to NaN. For nested
    inputs the row reports the worst leaf and is equal only if every leaf is.

    Args:
        component: the row's name.
        ours: this project's output.
        ref: the reference's output, same structure and shapes.
        atol: absolute tolerance.
        rtol: relative tolerance.
        note: shown in the table.
        deliberate: mark a difference as documented and deliberate.

    Returns:
        The row.
    """
    ours_leaves, ref_leaves = list(_leaves(ours)), list(_leaves(ref))
    if [p for p, _ in ours_leaves] != [p for p, _ in ref_leaves]:
        return Row(component, math.inf, math.inf, False, _join(note, "structures differ"), deliberate)
    max_abs, rel, equal, problems = 0.0, 0.0, True, []
    float_abs, float_scale = 0.0, 0.0  # relative error of float leaves: against the largest reference magnitude
    for path, (_, a), (_, b) in zip([p for p, _ in ours_leaves], ours_leaves, ref_leaves):
        ta, tb = _as_tensor(a), _as_tensor(b)
        where = path or "value"
        if ta.shape != tb.shape:
            problems.append(f"{where}: shape {tuple(ta.shape)} vs {tuple(tb.shape)}")
            max_abs, rel, equal = math.inf, math.inf, False
            continue
        if ta.numel() == 0:
            continue
        discrete = _is_discrete(ta) and _is_discrete(tb)
        da, db = ta.to(torch.float64), tb.to(torch.float64)
        close = torch.isclose(da, db, rtol=rtol, atol=atol, equal_nan=True)
        same = (torch.isnan(da) & torch.isnan(db)) | (da == db)  # NaN = NaN and inf = inf count as no error
        diff = torch.where(same, torch.zeros_like(da), (da - db).abs())
        diff = torch.nan_to_num(diff, nan=math.inf)
        leaf_abs = float(diff.max())
        if discrete:
            rel = max(rel, float((~close).double().mean()))
        else:
            float_scale = max(float_scale, float(torch.nan_to_num(db.abs(), nan=0.0, posinf=0.0).max()))
            float_abs = max(float_abs, leaf_abs)
        max_abs = max(max_abs, leaf_abs)
        if not bool(close.all()):
            equal = False
            if path:
                problems.append(f"{where} differs")
    if float_abs > 0:
        rel = max(rel, float_abs / float_scale if float_scale > 0 else math.inf)
    extra = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
    return Row(component, max_abs, rel, equal, _join(note, extra), deliberate)


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a and b else a or b


def _fmt(x: float) -> str:
    if math.isinf(x) or math.isnan(x):
        return str(x)
    return "0" if x == 0 else f"{x:.2e}"


def render(rows: Sequence[Row]) -> str:
    """The equivalence table as Markdown (readable in a terminal, pastes into an issue).

    Columns: component | max abs err | rel err | equal/differs | documented deliberate difference.
    """
    header = ("component", "max abs err", "rel err", "equal/differs", "documented deliberate difference")
    body = []
    for r in rows:
        verdict = "equal" if r.equal else "DIFFERS"
        documented = (r.note or "yes") if r.deliberate else "-"
        note = "" if r.deliberate else r.note
        name = f"{r.component} ({note})" if note else r.component
        body.append((name, _fmt(r.max_abs), _fmt(r.rel), verdict, documented))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(b) for b in body]
    failing = sum(r.failing for r in rows)
    deliberate = sum((not r.equal) and r.deliberate for r in rows)
    out.append("")
    out.append(f"{len(rows)} rows: {len(rows) - failing - deliberate} equal, {deliberate} documented deliberate, "
               f"{failing} undocumented differences")
    return "\n".join(out)


@dataclass
class Reference:
    """The imported reference modules (valid inside ``load_reference``'s ``with`` block).

    Attributes:
        root: the checkout.
        commit: its git commit when the checkout has a ``.git``, else None.
        rloss: True when ``bilateralfilter`` is rloss's built extension, False when it is the exact-Gaussian
            stand-in (the reference's energy loss then runs with the exact sum instead of the lattice).
        modules: imported modules by dotted name, e.g. ``modules["model.GCA"]``.
    """

    root: Path
    commit: str | None
    rloss: bool
    modules: dict[str, types.ModuleType] = field(default_factory=dict)

    def __getattr__(self, name: str) -> types.ModuleType:
        # ref.camutils, ref.GCA, ref.losses, ...: the last component of a dotted name.
        modules = self.__dict__.get("modules", {})
        for dotted, module in modules.items():
            if dotted.rsplit(".", 1)[-1] == name:
                return module
        raise AttributeError(f"the reference namespace has no module {name!r} (known: {sorted(modules)})")

    def load_script(self, relative: str) -> types.ModuleType:
        """Imports a reference script (e.g. ``scripts/train_voc.py``, ``tools/infer_cam.py``) by path.

        The script's ``if __name__ == "__main__"`` block does not run; its functions and module-level objects
        (argument parser, helpers) become available.
        """
        if relative in self.modules:
            return self.modules[relative]
        path = self.root / relative
        if not path.is_file():
            raise ReferenceUnavailable(f"reference file missing: {path}")
        name = "_moreref_" + relative.removesuffix(".py").replace("/", "_")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except ImportError as exc:
            del sys.modules[name]
            raise ReferenceUnavailable(f"importing {path} failed: {exc}") from exc
        self.modules[relative] = module
        return module


def _check_commit(root: Path, expected: str, allow_other_commit: bool) -> str | None:
    if not (root / ".git").exists():
        warnings.warn(f"{root} has no .git: cannot verify it is zwyang6/MoRe at {expected}", stacklevel=4)
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        warnings.warn(f"could not read the commit of {root}: {exc}", stacklevel=4)
        return None
    if not head.startswith(expected):
        message = f"{root} is at commit {head[:12]}, expected zwyang6/MoRe {expected}"
        if not allow_other_commit:
            raise ReferenceUnavailable(message + " (pass --allow-other-commit to compare anyway)")
        warnings.warn(message, stacklevel=4)
    return head


def _exact_bilateralfilter() -> types.ModuleType:
    """Stands in for rloss's extension: the exact Gaussian sum the permutohedral lattice approximates (§2.7.1).

    Same call as rloss's ``bilateralfilter_batch(images, ins, outs, N, K, H, W, sigma_rgb, sigma_xy)`` on flat
    float32 arrays (planar (N, 3, H, W) images, (N, K, H, W) maps, output written in place), computed here in
    float64 independently of ``more.losses.energy``. With it the reference's energy loss runs end to end on the CPU;
    what it cannot show is the lattice's own deviation from the exact sum (measured with ``--rloss``).
    """
    module = types.ModuleType("bilateralfilter")

    def bilateralfilter_batch(images: np.ndarray, ins: np.ndarray, outs: np.ndarray, n: int, k: int, h: int, w: int,
                              sigma_rgb: float, sigma_xy: float) -> None:
        rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                    indexing="ij")
        position = torch.stack((cols.flatten(), rows.flatten()), dim=1) / sigma_xy  # (HW, 2)
        image = torch.from_numpy(np.asarray(images, dtype=np.float64)).view(n, 3, h * w)
        maps = torch.from_numpy(np.asarray(ins, dtype=np.float64)).view(n, k, h * w)
        result = torch.empty_like(maps)
        for b in range(n):
            feats = torch.cat((position, image[b].T / sigma_rgb), dim=1)  # (HW, 5)
            for start in range(0, h * w, 1024):
                block = torch.cdist(feats[start:start + 1024], feats).square_().mul_(-0.5).exp_()  # (t, HW)
                result[b, :, start:start + 1024] = maps[b] @ block.T
        outs[:] = result.flatten().numpy().astype(np.float32)

    def bilateralfilter(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the exact-Gaussian stand-in implements bilateralfilter_batch only")

    module.bilateralfilter_batch = bilateralfilter_batch  # type: ignore[attr-defined]
    module.bilateralfilter = bilateralfilter  # type: ignore[attr-defined]
    module.__file__ = "<exact-Gaussian stand-in for rloss>"
    return module


def _identity_cuda(self: Any, *_args: Any, **_kwargs: Any) -> Any:
    return self


def _timm_registry() -> Callable[[], None]:
    """Snapshots timm's model registry; the returned callable restores it.

    The reference's ``vit.py`` registers its own ``vit_base_patch16_224`` and others under timm's names, which would
    otherwise replace timm's models for this project's code after the check.
    """
    from timm.models import _registry

    saved = {}
    for name, value in vars(_registry).items():
        if isinstance(value, (dict, set)) and not name.startswith("__"):
            saved[name] = copy.deepcopy(value) if isinstance(value, defaultdict) else copy.copy(value)

    def restore() -> None:
        for name, value in saved.items():
            current = getattr(_registry, name)
            current.clear()
            current.update(value)

    return restore


@contextlib.contextmanager
def load_reference(
    ref_root: Path,
    *,
    rloss_dir: Path | None = None,
    expected_commit: str = EXPECTED_COMMIT,
    allow_other_commit: bool = False,
) -> Iterator[Reference]:
    """Imports the authors' code from a checkout for the duration of a ``with`` block.

    Puts the checkout first on ``sys.path``, stands in for ``bilateralfilter`` with the exact Gaussian sum (unless
    ``rloss_dir`` holds the built rloss extension), makes ``Tensor.cuda()`` / ``Module.cuda()`` return their
    argument so the reference runs on the CPU, and imports ``REFERENCE_MODULES``. On exit ``sys.path``,
    ``sys.modules``, timm's model registry and the ``cuda`` methods are restored.

    Args:
        ref_root: a checkout (or ``git archive``) of zwyang6/MoRe.
        rloss_dir: folder with rloss's built ``bilateralfilter`` module, or None for the exact-Gaussian stand-in.
        expected_commit: commit prefix the checkout must be at when it has a ``.git``.
        allow_other_commit: warn instead of failing on another commit.

    Yields:
        The imported modules.

    Raises:
        ReferenceUnavailable: a file or dependency is missing, or the checkout is at another commit.
    """
    root = Path(ref_root).expanduser().resolve()
    if not root.is_dir():
        raise ReferenceUnavailable(f"reference checkout not found: {root}")
    missing_files = [str(root / f) for f in REFERENCE_FILES if not (root / f).is_file()]
    if missing_files:
        raise ReferenceUnavailable("the reference checkout lacks: " + ", ".join(missing_files))
    missing_deps = [pip for mod, pip in REFERENCE_DEPENDENCIES.items() if importlib.util.find_spec(mod) is None]
    if missing_deps:
        raise ReferenceUnavailable("the reference imports modules that are not installed; run: pip install "
                              + " ".join(missing_deps))
    if rloss_dir is not None and not any(Path(rloss_dir).glob("_bilateralfilter*")):
        raise ReferenceUnavailable(f"no built _bilateralfilter extension in {rloss_dir}")
    commit = _check_commit(root, expected_commit, allow_other_commit)

    def ours(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in REFERENCE_PACKAGES)

    set_aside = {name: mod for name, mod in sys.modules.items() if ours(name)}
    for name in set_aside:
        del sys.modules[name]
    saved_path = list(sys.path)
    saved_cuda = (torch.Tensor.cuda, torch.nn.Module.cuda)
    sys.path.insert(0, str(root))
    if rloss_dir is not None:
        sys.path.insert(0, str(Path(rloss_dir).resolve()))  # torch is imported already: its OpenMP symbols resolve
    else:
        sys.modules["bilateralfilter"] = _exact_bilateralfilter()
    torch.Tensor.cuda = _identity_cuda  # type: ignore[method-assign]
    torch.nn.Module.cuda = _identity_cuda  # type: ignore[method-assign]
    reference = Reference(root=root, commit=commit, rloss=rloss_dir is not None)
    registry = _timm_registry()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # timm's deprecated import paths used by the reference
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message="Overwriting .* in registry")  # undone by _timm_registry
            for name in REFERENCE_MODULES:
                try:
                    reference.modules[name] = importlib.import_module(name)
                except ImportError as exc:
                    raise ReferenceUnavailable(f"importing the reference module {name} from {root} failed: {exc}") \
                        from exc
        yield reference
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = saved_cuda  # type: ignore[method-assign]
        sys.path[:] = saved_path
        for name in [n for n in sys.modules if ours(n) or n.startswith("_moreref_")]:
            del sys.modules[name]
        sys.modules.update(set_aside)
        registry()


def approx(component: str, ours: Any, ref: Any, *, tol: float = 1e-4, note: str = "", deliberate: bool = False) -> Row:
    """:func:`compare` for float outputs computed in a different op order: ``atol = tol · max|ref|``, ``rtol = tol``.

    Scaling the absolute tolerance by the reference's magnitude makes one tolerance fit logits, features and
    gradients alike (fp32 rounding is relative).
    """
    magnitudes = (torch.nan_to_num(_as_tensor(v).double().abs(), nan=0.0, posinf=0.0).max() for _, v in _leaves(ref)
                  if _as_tensor(v).numel())
    scale = max((float(m) for m in magnitudes), default=0.0)
    return compare(component, ours, ref, atol=tol * scale, rtol=tol, note=note, deliberate=deliberate)


def exact(component: str, ours: Any, ref: Any, *, note: str = "", deliberate: bool = False) -> Row:
    """:func:`compare` with zero tolerance (labels, masks, indices, counts)."""
    return compare(component, ours, ref, atol=0.0, rtol=0.0, note=note, deliberate=deliberate)


def tensor_stats(tensors: list[torch.Tensor]) -> torch.Tensor:
    """(N, 3) float64: sum, L2 norm and a seeded random projection of each tensor (a compact, sensitive summary)."""
    rows = []
    for i, t in enumerate(tensors):
        probe = torch.randn(t.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        t = t.detach().double()
        rows.append(torch.stack([t.sum(), t.norm(), (t * probe).sum()]))
    return torch.stack(rows)
