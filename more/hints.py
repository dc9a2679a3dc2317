"""The "did you mean" hint that every validation error for an unknown key or choice ends with."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: object, choices: Iterable[str], *, cutoff: float = 0.6, otherwise: str = "") -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to ``word`` (difflib), else ``otherwise``."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=cutoff)
    return f"; did you mean '{close[0]}'?" if close else otherwise
