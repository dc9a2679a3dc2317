"""CAM classifier (pool then classify), LAM dot vs cosine, and the LargeFOV decoder, against hand values."""

from __future__ import annotations

import pytest
import torch

from more.model.decoder import LargeFOV
from more.model.heads import CamClassifier, lam

# One image, D = 2 channels on a 1×2 grid; two classes.
FEATURES = torch.tensor([[[[1.0, 3.0]], [[4.0, -2.0]]]])  # (1, 2, 1, 2): position 0 = (1, 4), position 1 = (3, -2)
WEIGHT = torch.tensor([[1.0, 1.0], [2.0, -1.0]])  # (C=2, D=2)


def classifier() -> CamClassifier:
    head = CamClassifier(2, 2)
    with torch.no_grad():
        head.conv.weight.copy_(WEIGHT.view(2, 2, 1, 1))
    return head


def test_image_logits_pool_first_then_classify() -> None:
    # channel max = (3, 4); class 0: 3 + 4 = 7; class 1: 2*3 - 4 = 2.
    logits = classifier()(FEATURES)
    torch.testing.assert_close(logits, torch.tensor([[7.0, 2.0]]))
    # classify-then-pool would give (max(5, 1), max(-2, 8)) = (5, 8): the order matters.


def test_cam_is_the_conv_at_every_position_without_relu() -> None:
    # position 0: (1+4, 2-4) = (5, -2); position 1: (3-2, 6+2) = (1, 8)
    cam = classifier().cam(FEATURES)
    torch.testing.assert_close(cam, torch.tensor([[[[5.0, 1.0]], [[-2.0, 8.0]]]]))


def test_classifier_has_no_bias() -> None:
    assert classifier().conv.bias is None


def test_lam_dot_and_cosine_hand_values() -> None:
    tokens = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])  # (1, C=2, D=2)
    dot = lam(FEATURES, tokens, "dot")
    # token 0 = (1, 0): 1, 3; token 1 = (3, 4): 3+16 = 19, 9-8 = 1
    torch.testing.assert_close(dot, torch.tensor([[[[1.0, 3.0]], [[19.0, 1.0]]]]))
    cosine = lam(FEATURES, tokens, "cosine")
    n0, n1 = 17 ** 0.5, 13 ** 0.5
    expected = torch.tensor([[[[1 / n0, 3 / n1]], [[19 / (5 * n0), 1 / (5 * n1)]]]])
    torch.testing.assert_close(cosine, expected)
    with pytest.raises(ValueError):
        lam(FEATURES, tokens, "softmax")


def test_decoder_shapes_and_structure() -> None:
    decoder = LargeFOV(64, 6, channels=32, dilation=5)
    out = decoder(torch.randn(2, 64, 4, 6))
    assert out.shape == (2, 6, 4, 6)
    convs = [decoder.conv6, decoder.conv7, decoder.conv8]
    assert all(c.bias is None for c in convs)
    assert decoder.conv6.dilation == (5, 5) and decoder.conv6.padding == (5, 5) and decoder.conv7.dilation == (5, 5)
    assert decoder.conv8.kernel_size == (1, 1) and decoder.conv6.out_channels == 32


def test_decoder_matches_hand_composition() -> None:
    decoder = LargeFOV(3, 2, channels=4, dilation=2)
    x = torch.randn(1, 3, 5, 5)
    f = torch.nn.functional
    h = f.relu(f.conv2d(x, decoder.conv6.weight, padding=2, dilation=2))
    h = f.relu(f.conv2d(h, decoder.conv7.weight, padding=2, dilation=2))
    torch.testing.assert_close(decoder(x), f.conv2d(h, decoder.conv8.weight))
