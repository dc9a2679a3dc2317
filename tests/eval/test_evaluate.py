"""The evaluator's columns in the reference's order of resize and normalise (MORE_SPEC §5.1, §11.2), by hand.

Every map here is one pixel high, so bilinear resizing (align_corners False) is 1-D linear interpolation:
output pixel d of a resize n -> m samples the input at (d + 0.5)·n/m - 0.5, clamped to the ends.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from more.config import load_config
from more.eval.evaluate import columns_at, evaluate, predict_batch
from more.model.more import CamOutput

EPS = 1e-5  # the reference's min-max epsilon


class StubModel(torch.nn.Module):
    """Fixed token-grid maps (C = 1, D = 1, grid 1 x 3) whatever the input: CAM = LAM = seg class 1 = [0, 1, 0]."""

    def __init__(self) -> None:
        super().__init__()
        self.grid = torch.nn.Parameter(torch.tensor([[[[0.0, 1.0, 0.0]]]]), requires_grad=False)  # (1, 1, 1, 3)

    def cams(self, x: torch.Tensor) -> CamOutput:
        grid = self.grid.expand(x.shape[0], -1, -1, -1)  # symmetric: the flip merge leaves it unchanged
        return CamOutput(cam=grid, cam_aux=0.5 * grid)

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        n = x.shape[0]
        grid = self.grid.expand(n, -1, -1, -1)
        seg = torch.cat([torch.full_like(grid, 0.6), grid], dim=1)  # background logit 0.6 everywhere
        return SimpleNamespace(features=grid, tokens=torch.ones(n, 1, 1), seg_logits=seg, cls_logits=torch.ones(n, 1))


def config(bkg_thre: float = 0.9):
    return load_config("synthetic", ["data.synth_classes=1", "gcr.top_k=1", "pseudo.cam_scales=[1.0]",
                                     f"eval.bkg_thre={bkg_thre}", "runtime.device=cpu"])


def batch(sizes: list[int]) -> dict:
    """Images at the eval square (1 x 6 here) and one GT row per image: foreground where the map is high."""
    masks = {4: torch.tensor([[0, 1, 1, 0]]), 6: torch.tensor([[0, 0, 1, 1, 0, 0]])}
    return {"image": torch.zeros(len(sizes), 3, 1, 6), "labels": torch.ones(len(sizes), 1),
            "mask": [masks[s] for s in sizes]}


def test_columns_at_label_size_by_hand() -> None:
    cfg = config()
    maps = predict_batch(StubModel(), batch([4])["image"], torch.ones(1, 1), cfg=cfg)
    # CAM: grid 3 -> square 6 gives [0, .25, .75, .75, .25, 0], normalised there by (.75 + eps) (§3.1).
    torch.testing.assert_close(maps["cam"][0, 0, 0], torch.tensor([0, .25, .75, .75, .25, 0]) / (.75 + EPS))
    assert maps["lam"].shape == (1, 1, 1, 3) and maps["seg"].shape == (1, 2, 1, 3)  # still on the token grid
    cols = dict(columns_at(maps, [0], (1, 4)))
    # CAM: square 6 -> label 4 samples 6 at .25, 1.75, 3.25, 4.75: [.0625, .625, .625, .0625] / (.75 + eps).
    torch.testing.assert_close(cols["cam"][0, 0, 0], torch.tensor([.0625, .625, .625, .0625]) / (.75 + EPS))
    aux = 0.5 * torch.tensor([.0625, .625, .625, .0625]) / (.375 + EPS)  # half the grid, normalised at the square
    torch.testing.assert_close(cols["aux_cam"][0, 0, 0], aux)
    # LAM: grid 3 -> label 4 directly samples at -.125, .625, 1.375, 2.125: [0, .625, .625, 0], normalised there.
    lam = torch.tensor([0, .625, .625, 0]) / (.625 + EPS)
    torch.testing.assert_close(cols["lam"][0, 0, 0], lam)
    fused = lam * torch.tensor([.0625, .625, .625, .0625]) / (.75 + EPS)
    torch.testing.assert_close(cols["fused"][0, 0, 0], fused / (fused.max() + EPS))
    torch.testing.assert_close(cols["seg"][0, :, 0], torch.tensor([[.6, .6, .6, .6], [0, .625, .625, 0]]))


def test_evaluate_scores_the_reference_order_per_label_size() -> None:
    """At bkg 0.9 the LAM, fused and seg columns are exact; the CAM (max .833 at label size) is all background.

    The old order (LAM normalised at the square, then resized) gave [.083, .833, .833, .083] at size 4: all
    background, so its LAM column would score like the CAM column here.
    """
    cfg = config()
    result = evaluate(StubModel(), [batch([4, 6]), batch([6])], cfg=cfg, device=torch.device("cpu"))
    assert result.num_images == 3
    # Foreground pixels: 2 (size 4) + 2 + 2 (size 6); background 2 + 4 + 4.
    exact = torch.tensor([[10, 0], [0, 6]])
    for name in ("lam", "fused", "seg"):
        torch.testing.assert_close(result.hists[name], exact, msg=name)
    # CAM at size 6 is the square itself ([0, 1/3, 1, 1, 1/3, 0]): exact there; all background at size 4.
    torch.testing.assert_close(result.hists["cam"], torch.tensor([[10, 0], [2, 4]]))
    torch.testing.assert_close(result.hists["aux_cam"], result.hists["cam"])


def test_lower_threshold_admits_the_cam() -> None:
    result = evaluate(StubModel(), [batch([4])], cfg=config(bkg_thre=0.8), device=torch.device("cpu"))
    torch.testing.assert_close(result.hists["cam"], torch.tensor([[2, 0], [0, 2]]))  # .625/.75 = .833 > .8
