"""Pieces of the training step: the de-normalised image that PAR and the energy loss see (MORE_SPEC §3.3, §11.3)."""

from __future__ import annotations

import torch
from tiny_config import TINY

from more.config import MoReConfig, load_config
from more.model import build_model
from more.pseudo.par import PAR
from more.train.optim import PolyWarmupAdamW
from more.train.step import denormalize, training_step

MEAN, STD = MoReConfig().data.mean, MoReConfig().data.std
LITERAL_MEAN = torch.tensor([123.675, 116.28, 103.53])  # the reference's constants, rounded once to float32
LITERAL_STD = torch.tensor([58.395, 57.12, 57.375])


def normalise(grey: torch.Tensor) -> torch.Tensor:
    """uint8 grey levels (N,) as every channel of a (N, 3, 1, 1) network input: ToTensor, then Normalize."""
    x = (grey.float() / 255.0)[:, None].expand(-1, 3)
    return ((x - torch.tensor(MEAN)) / torch.tensor(STD))[:, :, None, None]


def test_constants_are_the_reference_literals() -> None:
    torch.testing.assert_close(denormalize(torch.zeros(1, 3, 1, 1), MEAN, STD).flatten(), LITERAL_MEAN, rtol=0, atol=0)
    one = denormalize(torch.ones(1, 3, 1, 1), MEAN, STD).flatten()
    torch.testing.assert_close(one, LITERAL_STD + LITERAL_MEAN, rtol=0, atol=0)  # one float32 multiply, one add
    assert LITERAL_STD[1].item() == 57.119998931884766  # float32(57.12); 0.224f * 255 would be 57.12000274658203


def test_par_grey_levels_match_the_reference_truncation() -> None:
    """Green level 1 comes back as exactly 1.0 with the literal 57.12 and 116.28, but as 0.99999237 with the constants
    formed in float32 (0.224f·255, 0.456f·255), which truncates to 0. All 256 levels agree with the literal formula."""
    grey = torch.arange(256)
    x = normalise(grey)
    ours = denormalize(x, MEAN, STD).to(torch.uint8)[:, :, 0, 0]
    literal = (x * LITERAL_STD.view(1, 3, 1, 1) + LITERAL_MEAN.view(1, 3, 1, 1)).to(torch.uint8)[:, :, 0, 0]
    assert torch.equal(ours, literal)
    assert ours[1, 1].item() == 1
    float32_std = torch.tensor(STD) * 255.0
    assert float32_std[1].item() == 57.12000274658203
    old = (x[1, 1] * float32_std[1] + torch.tensor(MEAN[1]) * 255.0).to(torch.uint8)
    assert old.item() == 0


def test_only_the_decoder_is_idle_during_the_seg_warmup_and_it_decays() -> None:
    """No other parameter gets its gradient only through L_seg / L_energy, so zero-filling the idle ones is exactly
    the reference's ``0.0 * seg_loss + 0.0 * reg_loss`` (§11.4); after the warm-up nothing is idle."""
    cfg = load_config("synthetic", [*TINY, "loss.seg_start=0"])
    torch.manual_seed(0)
    model = build_model(cfg)
    par = PAR(dilations=cfg.pseudo.par_dilations, num_iter=cfg.pseudo.par_iters)
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    decoder = {f"decoder.{name}" for name, _ in model.decoder.named_parameters()}
    opt = PolyWarmupAdamW(model.param_groups(lr=cfg.optim.lr, head_lr_mult=cfg.optim.head_lr_mult,
                                             weight_decay=cfg.optim.weight_decay), cfg=cfg.optim, max_iters=10)
    for n in (0, 1):  # n = 0 <= seg_start: warm-up; n = 1: every term on
        opt.zero_grad(set_to_none=True)
        out = training_step(model, par, images, labels, cfg=cfg, n=n, generator=torch.Generator().manual_seed(n))
        out.total.backward()
        idle = {name for name, p in model.named_parameters() if p.grad is None}
        assert idle == (decoder if n == 0 else set())
        before = [p.detach().clone() for p in model.decoder.parameters()]
        lr = opt.param_groups[-1]["initial_lr"] * opt.factor()
        opt.step()
        if n == 0:
            for p, p0 in zip(model.decoder.parameters(), before):
                assert torch.equal(p.detach(), p0 * (1 - lr * cfg.optim.weight_decay))
    assert all(opt.state[p]["step"].item() == 2 for p in model.decoder.parameters())
