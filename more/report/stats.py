"""Small statistics for the report: mean ± sample std over seeds, and a paired t-test across seeds.

Student's t distribution is computed here through the regularized incomplete beta function (continued fraction,
modified Lentz), so the report needs neither scipy nor numpy: the two-sided p-value of ``t`` with ``df`` degrees of
freedom is ``I_{df / (df + t^2)}(df / 2, 1 / 2)``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SIGNIFICANCE = 0.05
MIN_PAIRS = 3  # fewer pairs than this and a difference is not called either way
TOO_FEW = "n too small to call a difference"
NOT_SIGNIFICANT = f"not significant (p ≥ {SIGNIFICANCE:g})"
SIGNIFICANT = f"significant (p < {SIGNIFICANCE:g})"


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof=1) of ``n`` values; std is None for n < 2, mean None for n = 0."""

    mean: float | None
    std: float | None
    n: int


def describe(values: Iterable[float]) -> Stat:
    """:class:`Stat` of the finite values (NaN and inf are left out, as an undefined score cannot be averaged)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return Stat(None, None, 0)
    return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


@dataclass(frozen=True)
class Paired:
    """A paired comparison ``condition - reference`` over the seeds both have.

    Attributes:
        n: number of pairs (seeds present in both).
        mean: mean paired difference (None when n = 0).
        std: sample std of the differences (None when n < 2).
        t: paired t statistic ``mean / (std / sqrt(n))`` (None when n < 2; ±inf when every difference is equal
            and non-zero).
        p: two-sided p-value with n - 1 degrees of freedom (None when n < 2).
        verdict: :data:`TOO_FEW`, :data:`NOT_SIGNIFICANT` or :data:`SIGNIFICANT`.
    """

    n: int
    mean: float | None
    std: float | None
    t: float | None
    p: float | None
    verdict: str


def paired_comparison(condition: Mapping[int, float], reference: Mapping[int, float]) -> Paired:
    """Paired t-test of ``condition[seed] - reference[seed]`` over the seeds present (and finite) in both."""
    seeds = sorted(s for s in condition if s in reference
                   and math.isfinite(condition[s]) and math.isfinite(reference[s]))
    diffs = [condition[s] - reference[s] for s in seeds]
    n = len(diffs)
    if n == 0:
        return Paired(0, None, None, None, None, TOO_FEW)
    mean = statistics.fmean(diffs)
    if n < 2:
        return Paired(n, mean, None, None, None, TOO_FEW)
    std = statistics.stdev(diffs)
    if std > 0:
        t = mean / (std / math.sqrt(n))
    else:
        t = math.copysign(math.inf, mean) if mean != 0 else math.nan
    p = t_two_sided_p(t, n - 1)
    if n < MIN_PAIRS:
        verdict = TOO_FEW
    else:
        verdict = SIGNIFICANT if p < SIGNIFICANCE else NOT_SIGNIFICANT
    return Paired(n, mean, std, t, p, verdict)


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value ``P(|T| >= |t|)`` of Student's t with ``df`` degrees of freedom (1 for NaN t)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isnan(t):
        return 1.0
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """Student's t cumulative distribution function ``P(T <= t)``."""
    tail = 0.5 * t_two_sided_p(t, df)
    return 1.0 - tail if t > 0 else tail


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function ``I_x(a, b)`` for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError(f"betainc needs a, b > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1, got {x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry I_x(a,b) = 1 - I_{1-x}(b,a)
    # on the other side.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float, *, max_iter: int = 500, eps: float = 1e-15) -> float:
    """Continued fraction of the incomplete beta function, evaluated by the modified Lentz method."""
    tiny = 1e-300
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m)),  # even step d_{2m}
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0))):  # odd step d_{2m+1}
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    return h
