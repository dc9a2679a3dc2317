"""Statistics of the report: Student's t p-values against closed forms and published quantiles, paired tests and
mean ± std by hand, and the formatting rules of cells (no ± for one seed, signed deltas, LaTeX escaping)."""

from __future__ import annotations

import importlib.util
import math

import pytest

from more.report.render import cell_markdown, cell_tex, tex_escape
from more.report.stats import (
    NOT_SIGNIFICANT,
    SIGNIFICANT,
    TOO_FEW,
    Stat,
    betainc,
    describe,
    paired_comparison,
    t_cdf,
    t_two_sided_p,
)
from more.report.tables import Check, Delta


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.5, 12.706, 40.0])
def test_t_p_value_closed_forms(t):
    # df = 1 is the Cauchy distribution: P(|T| >= t) = 1 - (2/pi) atan(t); df = 2: 1 - t / sqrt(2 + t^2)
    assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-12)
    assert t_two_sided_p(-t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-12)


@pytest.mark.parametrize(("df", "t975"), [(1, 12.7062047), (4, 2.7764451), (10, 2.2281389), (30, 2.0422725),
                                          (1e7, 1.9599640)])
def test_t_p_value_at_published_quantiles(df, t975):
    # the 97.5% quantiles of Student's t (standard tables): two-sided p = 0.05 there
    assert t_two_sided_p(t975, df) == pytest.approx(0.05, abs=1e-7)
    assert t_cdf(t975, df) == pytest.approx(0.975, abs=1e-7)
    assert t_cdf(-t975, df) == pytest.approx(0.025, abs=1e-7)


def test_t_p_value_edges_and_incomplete_beta():
    assert t_two_sided_p(math.inf, 3) == 0.0 and t_two_sided_p(math.nan, 3) == 1.0
    assert betainc(2.0, 3.0, 0.0) == 0.0 and betainc(2.0, 3.0, 1.0) == 1.0
    # I_x(1, 1) = x; I_x(a, 1) = x^a; I_x(2, 2) = 3x^2 - 2x^3
    assert betainc(1.0, 1.0, 0.37) == pytest.approx(0.37, abs=1e-14)
    assert betainc(3.5, 1.0, 0.6) == pytest.approx(0.6**3.5, abs=1e-14)
    assert betainc(2.0, 2.0, 0.8) == pytest.approx(3 * 0.64 - 2 * 0.512, abs=1e-14)
    with pytest.raises(ValueError):
        t_two_sided_p(1.0, 0)


@pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="scipy not installed")
def test_t_p_value_matches_scipy():
    from scipy import stats

    for df in (1, 2, 3, 5, 9, 27, 250):
        for t in (-7.5, -1.2, 0.05, 0.9, 3.3, 15.0):
            assert t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9, abs=1e-15)


def test_describe_uses_the_sample_std():
    assert describe([1.0, 2.0, 6.0]) == Stat(3.0, math.sqrt(7.0), 3)  # deviations -2, -1, 3: 14 / (3 - 1)
    assert describe([5.0]) == Stat(5.0, None, 1)
    assert describe([]) == Stat(None, None, 0)
    assert describe([2.0, math.nan, 4.0]) == Stat(3.0, math.sqrt(2.0), 2)


def test_paired_comparison_by_hand():
    cond = {0: 10.0, 1: 12.0, 2: 11.0, 3: 15.0}
    ref = {0: 11.0, 1: 15.0, 2: 13.0, 7: 0.0}  # seed 3 and 7 have no partner
    res = paired_comparison(cond, ref)
    # differences -1, -3, -2: mean -2, sample std 1, t = -2 / (1 / sqrt 3) = -2 sqrt 3, df 2
    assert (res.n, res.mean, res.std) == (3, -2.0, 1.0)
    assert res.t == pytest.approx(-2 * math.sqrt(3))
    assert res.p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(2 + 12), rel=1e-12)
    assert res.verdict == NOT_SIGNIFICANT  # p = 0.0742
    strong = paired_comparison({0: 1.0, 1: 2.0, 2: 3.5}, {0: 11.0, 1: 12.2, 2: 13.4})
    assert strong.p < 0.05 and strong.verdict == SIGNIFICANT
    two = paired_comparison({0: 1.0, 1: 2.0}, {0: 3.0, 1: 5.0})
    assert (two.n, two.mean, two.verdict) == (2, -2.5, TOO_FEW) and two.t == pytest.approx(-5.0)
    same = paired_comparison({0: 1.0, 1: 2.0, 2: 3.0}, {0: 2.0, 1: 3.0, 2: 4.0})
    assert (same.std, same.t, same.p, same.verdict) == (0.0, -math.inf, 0.0, SIGNIFICANT)
    assert paired_comparison({0: 1.0}, {1: 1.0}) == paired_comparison({}, {})


def test_cell_formatting():
    assert cell_markdown(Stat(76.2, None, 1)) == "76.20"  # one seed: no ±
    assert cell_markdown(Stat(76.2, 0.456, 3)) == "76.20 ± 0.46"
    assert cell_markdown(Stat(None, None, 0)) == "n/a"
    assert cell_markdown(Delta(3.0)) == "+3.00" and cell_markdown(Delta(-0.004)) == "-0.00"
    assert [cell_markdown(Check(v)) for v in (True, False, None)] == ["✓", "", "?"]
    assert cell_markdown("a | b\nc") == "a \\| b c"
    assert cell_tex(Stat(1.0, 0.5, 2)) == r"1.00 $\pm$ 0.50"
    assert cell_tex(Delta(-1.5)) == "$-1.50$"


def test_tex_escape():
    assert tex_escape("50% of a_b {x} & #1 $5 ~^\\") == (
        r"50\% of a\_b \{x\} \& \#1 \$5 \textasciitilde{}\textasciicircum{}\textbackslash{}")
    assert tex_escape("± ✓ Δ") == r"$\pm$ \checkmark{} $\Delta$"
