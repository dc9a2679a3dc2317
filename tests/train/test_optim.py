"""PolyWarmupAdamW: the schedule against the reference's logged learning rates (MORE_SPEC §4.1), the lr past
``max_iters`` and the zero gradients of parameters no weighted term reaches (§11.4, §11.5)."""

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
    # past max_iters the reference sets no lr: the one of the last step (t = 19999) stays
    last = (1 - 19999 / 20000) ** 0.9
    assert poly_warmup_factor(19999, **kw) == last
    assert poly_warmup_factor(20000, **kw) == last and poly_warmup_factor(25000, **kw) == last


def test_lr_past_max_iters_keeps_the_last_value():
    cfg = load_config("voc", ["optim.warmup_iters=2"])
    a = torch.nn.Parameter(torch.ones(2))
    opt = PolyWarmupAdamW([{"params": [a], "lr": 1e-3}], cfg=cfg.optim, max_iters=4)
    lrs = []
    for _ in range(7):
        a.sum().backward()
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
    ramp = 1 - (1 - 1 / 2) * (1 - 1e-6)
    expected = [1e-3 * 1e-6, 1e-3 * ramp, 1e-3 * (1 - 2 / 4) ** 0.9, 1e-3 * (1 - 3 / 4) ** 0.9]
    assert lrs == pytest.approx(expected + [expected[-1]] * 3, rel=1e-12)
    # a warm-up longer than the run: the ramp's last value stays
    assert poly_warmup_factor(9, max_iters=3, warmup_iters=5, warmup_ratio=0.0, power=0.9) == pytest.approx(4 / 5)
    assert poly_warmup_factor(0, max_iters=0, warmup_iters=0, warmup_ratio=0.0, power=0.9) == 1.0


def two_params(idle: str, *, steps: int = 0) -> tuple[torch.nn.Parameter, torch.nn.Parameter, PolyWarmupAdamW]:
    """A "backbone" parameter ``a`` and a "decoder" parameter ``d`` in float64, in two groups like the reference."""
    cfg = load_config("voc", [f"optim.idle_params={idle}", "optim.warmup_iters=3"])
    a = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    d = torch.nn.Parameter(torch.tensor([0.5, 3.0, -1.5], dtype=torch.float64))
    opt = PolyWarmupAdamW([{"params": [a], "lr": 6e-5}, {"params": [d], "lr": 6e-4}], cfg=cfg.optim, max_iters=100)
    return a, d, opt


def backbone_loss(a: torch.Tensor) -> torch.Tensor:
    return (a * torch.tensor([0.3, 0.7], dtype=torch.float64)).sum() ** 2


def decoder_loss(d: torch.Tensor) -> torch.Tensor:
    return (d * torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)).sum()


def test_idle_parameters_decay_by_lr_wd_each_step_and_count_the_step():
    a, d, opt = two_params("zero_grad")
    d0 = d.detach().clone()
    expected = d0.clone()
    for _ in range(4):  # the seg warm-up: the decoder's loss is not part of the total
        opt.zero_grad(set_to_none=True)
        backbone_loss(a).backward()
        assert d.grad is None
        lr = 6e-4 * opt.factor()
        opt.step()
        expected = expected * (1 - lr * 0.01)  # AdamW with m = v = 0: only the decoupled decay moves it
        torch.testing.assert_close(d.detach(), expected, rtol=1e-15, atol=0)
    assert opt.state[d]["step"].item() == 4 and opt.state[a]["step"].item() == 4
    factors = [1e-6, 1 - (2 / 3) * (1 - 1e-6), 1 - (1 / 3) * (1 - 1e-6), (1 - 3 / 100) ** 0.9]
    shrink = torch.prod(torch.tensor([1 - 6e-4 * f * 0.01 for f in factors], dtype=torch.float64))
    torch.testing.assert_close(d.detach(), d0 * shrink, rtol=1e-14, atol=0)


def test_skip_leaves_idle_parameters_untouched():
    a, d, opt = two_params("skip")
    d0 = d.detach().clone()
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        backbone_loss(a).backward()
        opt.step()
    assert torch.equal(d.detach(), d0) and d not in opt.state


def test_first_real_update_equals_the_reference_loop_and_the_hand_formula():
    """The reference adds 0.0 * decoder_loss during the warm-up; zero_grad must give the same weights, bit for bit."""
    warmup = 5
    a, d, opt = two_params("zero_grad")
    ra, rd, ropt = two_params("skip")  # the reference loop: the zero-weighted term is in the graph
    for n in range(warmup + 1):
        on = n >= warmup
        opt.zero_grad(set_to_none=True)
        (backbone_loss(a) + (decoder_loss(d) if on else 0)).backward()
        opt.step()
        ropt.zero_grad()
        (backbone_loss(ra) + (1.0 if on else 0.0) * decoder_loss(rd)).backward()
        ropt.step()
        assert torch.equal(d.detach(), rd.detach()) and torch.equal(a.detach(), ra.detach())
    # By hand: the first real gradient g meets m = v = 0 but bias corrections of step warmup + 1.
    _, d_hand, hopt = two_params("zero_grad")
    g = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    decayed = d_hand.detach().clone()
    for t in range(warmup):
        decayed = decayed * (1 - 6e-4 * hopt.factor(t) * 0.01)
    lr, k = 6e-4 * hopt.factor(warmup), warmup + 1
    m_hat = 0.1 * g / (1 - 0.9**k)
    v_hat = 0.001 * g**2 / (1 - 0.999**k)
    step = lr * m_hat / (v_hat.sqrt() + 1e-8)
    torch.testing.assert_close(d.detach(), decayed * (1 - lr * 0.01) - step, rtol=1e-12, atol=1e-15)
    # with a fresh AdamW state (skip) the first update would be lr * sign(g); the counted steps scale it by this
    # factor (0.52 here; 0.1 / sqrt(0.001 / (1 - 0.999^2002)) = 2.94 after the 2001 steps of the VOC warm-up)
    ratio = (0.1 / (1 - 0.9**k)) / (0.001 / (1 - 0.999**k)) ** 0.5
    assert step.abs().div(lr).sub(ratio).abs().max() < 1e-6


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
