"""A dependency-free progress display: a live bar on a terminal, plain lines otherwise (logs, CI, Ray workers)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


class Progress:
    """``update(done, info)`` redraws a bar with ETA on a TTY; ``line(text)`` always prints a full line."""

    def __init__(self, total: int, *, desc: str = "", stream: TextIO | None = None, start: int = 0) -> None:
        self.total = total
        self.desc = desc
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start_done = start
        self.t0 = time.perf_counter()
        self._last_len = 0

    def eta(self, done: int) -> float:
        rate = (done - self.start_done) / max(time.perf_counter() - self.t0, 1e-9)
        return (self.total - done) / rate if rate > 0 else float("inf")

    def text(self, done: int, info: str = "") -> str:
        frac = done / self.total if self.total else 1.0
        eta = self.eta(done)
        eta_s = format_seconds(eta) if eta != float("inf") else "?"
        elapsed = format_seconds(time.perf_counter() - self.t0)
        return f"{self.desc} {done}/{self.total} ({100 * frac:5.1f}%) [{elapsed}<{eta_s}] {info}".strip()

    def update(self, done: int, info: str = "") -> None:
        if not self.tty:
            return
        frac = done / self.total if self.total else 1.0
        width = 24
        bar = "#" * int(width * frac) + "." * (width - int(width * frac))
        text = f"|{bar}| " + self.text(done, info)
        pad = " " * max(0, self._last_len - len(text))
        self.stream.write("\r" + text + pad)
        self.stream.flush()
        self._last_len = len(text)

    def line(self, text: str) -> None:
        if self.tty and self._last_len:
            self.stream.write("\r" + " " * self._last_len + "\r")
            self._last_len = 0
        self.stream.write(text + "\n")
        self.stream.flush()
