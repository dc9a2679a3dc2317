"""PNG plots of the sensitivity tables: the metric against the swept value, error bars = sample std over seeds.

Drawn with matplotlib's object API (no pyplot, no global backend switch) when it is installed, else with PIL.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

from more.report.render import write_atomic
from more.report.tables import Sensitivity

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _points(sens: Sensitivity) -> tuple[list[str], list[tuple[str, list[tuple[float, float, float]]]]]:
    """x tick labels and, per series, (x position, mean, std) of the points that have a mean."""
    if sens.numeric:
        ticks: list[str] = []
        position = {}
    else:
        ticks = list(dict.fromkeys(str(x) for s in sens.series for x in s.xs))
        position = {t: float(i) for i, t in enumerate(ticks)}
    lines = []
    for s in sens.series:
        pts = [(float(x) if sens.numeric else position[str(x)], st.mean, st.std or 0.0)
               for x, st in zip(s.xs, s.stats) if st.mean is not None]
        lines.append((s.label, pts))
    return ticks, lines


def sensitivity_png(sens: Sensitivity, *, ylabel: str, backend: str = "auto") -> bytes:
    """The PNG bytes of one sensitivity plot.

    Args:
        backend: ``auto`` (matplotlib if importable, else PIL), ``matplotlib`` or ``pil``.
    """
    if backend == "auto":
        backend = "matplotlib" if importlib.util.find_spec("matplotlib") else "pil"
    if backend not in ("matplotlib", "pil"):
        raise ValueError(f"plot backend {backend!r}: expected auto, matplotlib or pil")
    return _matplotlib_png(sens, ylabel) if backend == "matplotlib" else _pil_png(sens, ylabel)


def plot_sensitivity(sens: Sensitivity, path: Path, *, ylabel: str, backend: str = "auto") -> Path:
    """Write the plot of one sensitivity table to ``path`` (atomically)."""
    return write_atomic(Path(path), sensitivity_png(sens, ylabel=ylabel, backend=backend))


def _matplotlib_png(sens: Sensitivity, ylabel: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ticks, lines = _points(sens)
    for i, (label, pts) in enumerate(lines):
        if pts:
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=_COLORS[i % len(_COLORS)], label=label)
    if ticks:
        ax.set_xticks(range(len(ticks)), ticks)
    ax.set_xlabel(sens.key)
    ax.set_ylabel(ylabel)
    ax.set_title(f"Sensitivity to {sens.key}")
    ax.grid(alpha=0.3)
    if len(lines) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _pil_png(sens: Sensitivity, ylabel: str, size: tuple[int, int] = (660, 430)) -> bytes:
    """The same plot drawn with PIL: axes, tick values, lines, points and error bars, a legend."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 70, 20, 40, 60
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    ticks, lines = _points(sens)
    pts = [p for _, ps in lines for p in ps]
    xs = [p[0] for p in pts] or [0.0]
    lows = [p[1] - p[2] for p in pts] or [0.0]
    highs = [p[1] + p[2] for p in pts] or [1.0]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(lows), max(highs)
    x0, x1 = (x0 - 0.5, x1 + 0.5) if x1 == x0 else (x0 - 0.05 * (x1 - x0), x1 + 0.05 * (x1 - x0))
    y0, y1 = (y0 - 1.0, y1 + 1.0) if y1 == y0 else (y0 - 0.1 * (y1 - y0), y1 + 0.1 * (y1 - y0))

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for k in range(5):
        y = y0 + (y1 - y0) * k / 4
        _, py = to_px(x0, y)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((4, py - 6), f"{y:.2f}", fill="black")
    labels = ticks or sorted({f"{x:g}" for x in xs})
    for text in labels:
        px, _ = to_px(float(labels.index(text)) if ticks else float(text), y0)
        draw.line([px, height - bottom, px, height - bottom + 4], fill="black")
        draw.text((px - 3 * len(text), height - bottom + 8), text, fill="black")
    draw.text((width // 2 - 3 * len(sens.key), height - 22), sens.key, fill="black")
    draw.text((4, 8), f"{ylabel} - sensitivity to {sens.key}", fill="black")
    for i, (label, ps) in enumerate(lines):
        color = _COLORS[i % len(_COLORS)]
        pixels = [to_px(x, y) for x, y, _ in ps]
        if len(pixels) > 1:
            draw.line(pixels, fill=color, width=2)
        for (x, y, e), (px, py) in zip(ps, pixels):
            _, lo = to_px(x, y - e)
            _, hi = to_px(x, y + e)
            draw.line([px, lo, px, hi], fill=color, width=1)
            draw.line([px - 4, lo, px + 4, lo], fill=color)
            draw.line([px - 4, hi, px + 4, hi], fill=color)
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
        draw.text((width - right - 200, top + 6 + 14 * i), label, fill=color)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
