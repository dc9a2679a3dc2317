"""Multi-scale CAM / LAM, min-max normalisation, thresholds and token masks (MORE_SPEC §3.1, §3.2, §3.4, §10)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pseudo_reference import loop_multi_scale_cam
from torch import nn

from more.pseudo.cam import cam_to_label, minmax_normalize, multi_scale_cam, multi_scale_lam, token_masks


class FakeCamModel(nn.Module):
    """A fixed 'patch embedding' (4x4 average pooling) and two 1x1 classifiers, like the cam-only path."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.cls = nn.Conv2d(3, num_classes, 1, bias=False)
        self.aux = nn.Conv2d(3, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = F.avg_pool2d(x, 4)
        return self.cls(feats), self.aux(feats)


def test_minmax_by_hand():
    maps = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]]], [[[-2.0, -2.0], [-1.0, -2.0]]]])
    out = minmax_normalize(maps)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 2.0], [1.0, 4.0]]) / (4 + 1e-5))
    torch.testing.assert_close(out[1, 0], torch.tensor([[0.0, 0.0], [1.0, 0.0]]) / (1 + 1e-5))


def test_multi_scale_cam_matches_reference_loop():
    torch.manual_seed(0)
    model = FakeCamModel().train()
    images = torch.randn(2, 3, 32, 32)
    scales = (1.0, 0.5, 0.75, 1.5)
    cam, cam_aux = multi_scale_cam(model, images, scales)
    ref_cam, ref_aux = loop_multi_scale_cam(model, images, scales)
    torch.testing.assert_close(cam, ref_cam, rtol=0, atol=1e-6)
    torch.testing.assert_close(cam_aux, ref_aux, rtol=0, atol=1e-6)
    assert cam.shape == (2, 3, 32, 32) and not cam.requires_grad and model.training
    assert float(cam.min()) == 0.0 and float(cam.amax(dim=(-2, -1)).min()) > 0.99
    # ReLU per scale: a different ReLU placement (after the sum) changes the result for a random model
    assert not torch.allclose(cam, minmax_normalize(sum(_plain_scale(model, images, s) for s in scales)))


def _plain_scale(model, images, s):
    """One scale without the ReLU (used to show that the ReLU matters)."""
    h, w = images.shape[-2:]
    x = F.interpolate(images, size=(int(s * h), int(s * w)), mode="bilinear", align_corners=False)
    cam = F.interpolate(model(torch.cat([x, x.flip(-1)]))[0], size=(h, w), mode="bilinear", align_corners=False)
    return torch.maximum(cam[:2], cam[2:].flip(-1)).detach()


def test_multi_scale_cam_output_size_and_unit_scale_always_included():
    torch.manual_seed(1)
    model = FakeCamModel()
    images = torch.randn(1, 3, 32, 32)
    cam, _ = multi_scale_cam(model, images, (0.5,), size=(20, 24))
    assert cam.shape == (1, 3, 20, 24)
    torch.testing.assert_close(cam, multi_scale_cam(model, images, (1.0, 0.5, 1.0), size=(20, 24))[0])


def test_multi_scale_lam_has_no_relu():
    torch.manual_seed(2)
    images = torch.rand(2, 3, 32, 32)

    def lam_fn(x):  # strictly negative maps: a ReLU would zero them all
        return -1.0 - F.avg_pool2d(x, 4)

    lam = multi_scale_lam(lam_fn, images, (1.0, 0.5))
    expected = 0
    for s in (1.0, 0.5):
        x = images if s == 1.0 else F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
        m = F.interpolate(lam_fn(torch.cat([x, x.flip(-1)])), size=(32, 32), mode="bilinear", align_corners=False)
        expected = expected + torch.maximum(m[:2], m[2:].flip(-1))
    expected = expected - expected.amin(dim=(-2, -1), keepdim=True)
    expected = expected / (expected.amax(dim=(-2, -1), keepdim=True) + 1e-5)
    torch.testing.assert_close(lam, expected)
    assert float(lam.amax()) > 0.99


def test_cam_to_label_thresholds_are_inclusive():
    # pixel values of the winning present class: 0.2, 0.25 (= low), 0.3, 0.5 (= high), 0.75
    cam = torch.zeros(1, 2, 1, 5)
    cam[0, 0, 0] = torch.tensor([0.2, 0.25, 0.3, 0.5, 0.75])
    cam[0, 1] = 0.99  # absent class: must never win
    labels = torch.tensor([[1.0, 0.0]])
    out = cam_to_label(cam, labels, high=0.5, low=0.25, ignore_mid=True, bkg_thre=0.9)  # bkg_thre ignored
    assert out.tolist() == [[[0, 0, 255, 255, 1]]] and out.dtype == torch.int64
    out = cam_to_label(cam, labels, ignore_mid=False, bkg_thre=0.5)
    assert out.tolist() == [[[0, 0, 0, 0, 1]]]
    # argmax among present classes, label = index + 1
    two = torch.tensor([[[[0.6]], [[0.8]]]])
    assert cam_to_label(two, torch.tensor([[1, 1]]), high=0.5, low=0.25).item() == 2


def test_token_masks_switch():
    torch.manual_seed(3)
    cam = torch.rand(2, 3, 32, 32)
    cam_aux = torch.rand(2, 3, 32, 32)
    labels = torch.tensor([[1, 0, 1], [0, 1, 1]])
    kw = dict(grid=(8, 8), cre_high=0.5, cre_low=0.25, aux_high=0.7, aux_low=0.25, main_high=0.6, main_low=0.35)
    aux8 = F.interpolate(cam_aux, size=(8, 8), mode="bilinear", align_corners=False)
    main8 = F.interpolate(cam, size=(8, 8), mode="bilinear", align_corners=False)
    m_cle = cam_to_label(aux8, labels, high=0.5, low=0.25)
    m_aux = cam_to_label(aux8, labels, high=0.7, low=0.25)
    m_main = cam_to_label(main8, labels, high=0.6, low=0.35)
    assert not torch.equal(m_cle, m_aux) and not torch.equal(m_aux, m_main)

    early = token_masks(cam, cam_aux, labels, use_main=False, **kw)
    assert torch.equal(early.cre, m_cle) and torch.equal(early.ure, m_aux) and torch.equal(early.ptc, m_aux)
    late = token_masks(cam, cam_aux, labels, use_main=True, **kw)
    assert torch.equal(late.cre, m_main) and torch.equal(late.ure, m_main) and torch.equal(late.ptc, m_aux)
    assert late.cre.shape == (2, 8, 8)
