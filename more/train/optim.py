"""PolyWarmupAdamW (MORE_SPEC §4.1): AdamW whose lr is set from the step count before every step.

The reference's loss always contains every term, multiplied by its weight (``0.0 * seg_loss`` during the seg
warm-up, MORE_SPEC §11.4), so every parameter has a gradient at every step: the decoder's are zeros while the seg
and energy weights are 0, and AdamW still decays it and advances its step count. This optimizer reproduces that
without building or back-propagating the zero-weighted terms: with ``optim.idle_params=zero_grad`` a parameter
that ends the backward pass without a gradient gets a zero one.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from more.config.schema import OptimConfig

IDLE_PARAMS = ("zero_grad", "skip")


def poly_warmup_factor(step: int, *, max_iters: int, warmup_iters: int, warmup_ratio: float, power: float) -> float:
    """Multiplier of the base lr after ``step`` steps have been taken (0-based).

    Warm-up: ``1 - (1 - t/W)(1 - ratio)`` (a linear ramp from ``ratio`` to 1); afterwards ``(1 - t/T)^power``.
    The poly term is not offset by the warm-up (the reference jumps from 1.0 to 0.932 at t = 1500 on VOC).
    Past both W and T the reference sets no lr, so the last one set stays (MORE_SPEC §11.5); with no step at all
    before that (W = T = 0) it is the base lr.
    """
    if step < warmup_iters:
        return 1.0 - (1.0 - step / warmup_iters) * (1.0 - warmup_ratio)
    if step < max_iters:
        return (1.0 - step / max_iters) ** power
    last = max(warmup_iters, max_iters) - 1
    if last < 0:
        return 1.0
    return poly_warmup_factor(last, max_iters=max_iters, warmup_iters=warmup_iters, warmup_ratio=warmup_ratio,
                              power=power)


class PolyWarmupAdamW(torch.optim.AdamW):
    """AdamW with the reference's warm-up + poly schedule; each group keeps its own base lr (``initial_lr``).

    ``cfg.idle_params``: ``zero_grad`` (reference) gives every trainable parameter without a gradient a zero
    gradient before the step, so AdamW decays it by ``1 - lr·wd`` and counts the step in its bias correction, as
    the reference's ``0.0 * loss`` terms do; ``skip`` leaves such parameters and their AdamW state untouched.
    """

    def __init__(self, params: Iterable[dict], *, cfg: OptimConfig, max_iters: int) -> None:
        super().__init__(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)
        self.max_iters = max_iters
        self.warmup_iters = cfg.warmup_iters
        self.warmup_ratio = cfg.warmup_ratio
        self.power = cfg.power
        if cfg.idle_params not in IDLE_PARAMS:
            raise ValueError(f"optim.idle_params={cfg.idle_params!r}: must be one of {', '.join(IDLE_PARAMS)}")
        self.idle_params = cfg.idle_params
        self.global_step = 0
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def factor(self, step: int | None = None) -> float:
        return poly_warmup_factor(
            self.global_step if step is None else step,
            max_iters=self.max_iters,
            warmup_iters=self.warmup_iters,
            warmup_ratio=self.warmup_ratio,
            power=self.power,
        )

    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        f = self.factor()
        for group in self.param_groups:
            group["lr"] = group["initial_lr"] * f
            if self.idle_params == "zero_grad":
                for p in group["params"]:
                    if p.grad is None and p.requires_grad:
                        p.grad = torch.zeros_like(p)
        out = super().step(closure)
        self.global_step += 1
        return out

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["global_step"] = self.global_step
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        self.global_step = int(state_dict.pop("global_step", 0))
        super().load_state_dict(state_dict)
