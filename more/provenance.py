"""Where a run's code came from: the git commit, recorded next to every run and as a tracking tag.

Kept free of torch so drivers (ablate, search reports) can call it without importing the training stack.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_sha() -> str:
    """The commit of the checkout holding this package, or ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
