"""Run ``more`` beside the authors' code (zwyang6/MoRe at d733d34) and print one equivalence table.

    PYTHONPATH=$PWD python tools/check_reference.py --ref /path/to/MoRe [--rloss DIR] [--only PATTERN]
        [--modules GLOB] [--golden-out tests/golden]

The reference is imported from ``--ref`` at run time (nothing of it is copied here). Every module in
``tools/refcheck/`` with a ``checks(ref) -> list[Row]`` function contributes rows; with ``--golden-out`` the
fixtures of ``tools/refcheck/golden.py`` and of every check module with a ``write_golden`` are written too. The exit
status is 1 when any row differs without being a documented deliberate difference, 2 when the reference cannot be
loaded.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from tools.refcheck.common import ReferenceUnavailable, Row, load_reference, render  # noqa: E402

CHECK_DIR = ROOT / "tools" / "refcheck"
NOT_CHECKS = {"__init__", "common", "build", "golden", "replay"}


def check_modules() -> list[str]:
    """Module names under tools/refcheck that define checks (the pipeline module when present)."""
    names = sorted(p.stem for p in CHECK_DIR.glob("*.py") if p.stem not in NOT_CHECKS)
    return [f"tools.refcheck.{n}" for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", type=Path, required=True, help="checkout of zwyang6/MoRe (commit d733d34)")
    parser.add_argument("--rloss", type=Path, default=None,
                        help="folder with rloss's built bilateralfilter module (default: exact-Gaussian stand-in)")
    parser.add_argument("--only", default=None, help="run only rows whose component matches this glob, e.g. 'GCR*'")
    parser.add_argument("--golden-out", type=Path, default=None, help="also write the golden fixtures here")
    parser.add_argument("--modules", default=None,
                        help="run only the check modules of tools/refcheck whose name matches this glob (e.g. "
                             "'checkpoint*'); with --golden-out only their fixtures are written ('golden' = the core "
                             "fixtures of golden.py)")
    parser.add_argument("--allow-other-commit", action="store_true", help="warn instead of failing on another commit")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    rows: list[Row] = []
    writers = []  # check modules that also write golden fixtures (``write_golden(ref, out_dir, *, command)``)
    try:
        with load_reference(args.ref, rloss_dir=args.rloss, allow_other_commit=args.allow_other_commit) as ref:
            selected = [n for n in check_modules() if not args.modules
                        or fnmatch.fnmatch(n.rsplit(".", 1)[1], args.modules)]
            for name in selected:
                started = time.perf_counter()
                module = importlib.import_module(name)
                if not hasattr(module, "checks"):
                    continue
                if hasattr(module, "write_golden"):
                    writers.append(module)
                got = module.checks(ref)
                if args.only:
                    got = [r for r in got if fnmatch.fnmatch(r.component, args.only)]
                rows += got
                print(f"[{name}: {len(got)} rows, {time.perf_counter() - started:.1f} s]", file=sys.stderr)
            if args.golden_out is not None:
                from tools.refcheck import golden

                command = "python " + " ".join(sys.argv)
                core = [golden] if not args.modules or fnmatch.fnmatch("golden", args.modules) else []
                for writer in [*core, *writers]:
                    write = writer.write if writer is golden else writer.write_golden
                    print(f"[golden fixtures ({writer.__name__}): {write(ref, args.golden_out, command=command)}]",
                          file=sys.stderr)
    except ReferenceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render(rows))
    return 1 if any(r.failing for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
