"""Pieces of the training step: the de-normalised image that PAR and the energy loss see (MORE_SPEC §3.3, §11.3)."""

from __future__ import annotations

import torch

from more.config import MoReConfig
from more.train.step import denormalize

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
