"""PolyWarmupAdamW: the schedule against the reference's logged learning rates (MORE_SPEC §4.1)."""

from __future__ import annotations

import pytest
import torch

from more.config import load_config
from more.train.optim import PolyWarmupAdamW, poly_warmup_factor


@pytest.mark.parametrize(
    ("steps_taken", "logged_lr"),
    # the log prints, at iteration i, the lr used for the i-th step, i.e. after i - 1 steps were taken
    [(199, 7.960e-6), (1599, 5.566e-5), (19999, 8.077e-9)],
)
def test_schedule_matches_reference_log(steps_taken, logged_lr):
    f = poly_warmup_factor(steps_taken, max_iters=20000, warmup_iters=1500, warmup_ratio=1e-6, power=0.9)
    assert 6e-5 * f == pytest.approx(logged_lr, rel=2e-3)


def test_warmup_ramp_and_jump_at_end_of_warmup():
    kw = {"max_iters": 20000, "warmup_iters": 1500, "warmup_ratio": 1e-6, "power": 0.9}
    assert poly_warmup_factor(0, **kw) == pytest.approx(1e-6)
    assert poly_warmup_factor(750, **kw) == pytest.approx(1 - 0.5 * (1 - 1e-6))
    assert poly_warmup_factor(1500, **kw) == pytest.approx((1 - 1500 / 20000) ** 0.9)  # 0.932: no offset
    assert poly_warmup_factor(20000, **kw) == 0.0


def test_groups_keep_their_base_lr_and_state_round_trips():
    cfg = load_config("voc")
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = PolyWarmupAdamW([{"params": [a], "lr": 6e-5}, {"params": [b], "lr": 6e-4}], cfg=cfg.optim, max_iters=100)
    for _ in range(3):
        (a.sum() + b.sum()).backward()
        opt.step()
    f = poly_warmup_factor(2, max_iters=100, warmup_iters=1500, warmup_ratio=1e-6, power=0.9)
    assert opt.param_groups[0]["lr"] == pytest.approx(6e-5 * f) and opt.param_groups[1]["lr"] == pytest.approx(6e-4 * f)
    opt2 = PolyWarmupAdamW([{"params": [a], "lr": 6e-5}, {"params": [b], "lr": 6e-4}], cfg=cfg.optim, max_iters=100)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.global_step == 3
