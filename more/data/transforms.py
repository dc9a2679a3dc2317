"""Training and evaluation image transforms (MORE_SPEC §4.3, §5.1).

All randomness comes from torch's global RNG (torchvision's v1 transforms draw from it too), so a seeded
DataLoader, with its per-worker seeds, reproduces the same crops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

if TYPE_CHECKING:
    from more.config import MoReConfig

ImageTransform = Callable[[Image.Image], torch.Tensor]


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(3, H, W) uint8 or [0, 1] float -> float32 normalised with per-channel ``mean`` / ``std``.

    uint8 input is normalised as the reference's ``normalize_img`` does (both the COCO training crop and every
    evaluation image): ``(x - 255·mean) / (255·std)`` in float64 on the 0-255 scale, then float32. The float32 route
    ``(x/255 - mean)/std`` differs by an ulp on some pixels, enough to flip a DenseCRF label now and then.
    """
    if image.dtype != torch.uint8:
        x = image.float()
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x - m) / s
    # 255·mean and 255·std rounded to 6 decimals are the reference's literals (0.224·255 is 57.120000000000005)
    m255 = torch.tensor([round(v * 255.0, 6) for v in mean], dtype=torch.float64, device=image.device).view(3, 1, 1)
    s255 = torch.tensor([round(v * 255.0, 6) for v in std], dtype=torch.float64, device=image.device).view(3, 1, 1)
    return ((image.double() - m255) / s255).float()


def _color_jitter(cfg: MoReConfig) -> T.ColorJitter:
    d = cfg.data
    return T.ColorJitter(brightness=d.jitter_brightness, contrast=d.jitter_contrast, saturation=d.jitter_saturation,
                         hue=d.jitter_hue)


def voc_train_transform(cfg: MoReConfig) -> ImageTransform:
    """The VOC recipe: RandomResizedCrop (bicubic), hflip, ColorJitter with probability p, ToTensor, Normalize.

    The reference builds two views and trains on the second (MORE_SPEC §4.3); one view is the same distribution.
    """
    d = cfg.data
    return T.Compose([
        T.RandomResizedCrop(d.crop_size, scale=(d.scale_min, d.scale_max), ratio=(d.ratio_min, d.ratio_max),
                            interpolation=InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(d.hflip_prob),
        T.RandomApply([_color_jitter(cfg)], p=d.jitter_prob),
        T.ToTensor(),
        T.Normalize(d.mean, d.std),
    ])


class CocoTrainTransform:
    """The COCO recipe (``CocoClsDataset.transform_image``, MORE_SPEC §4.3).

    ColorJitter with probability p on PIL, random rescale of the whole image by U(scale_min, scale_max)
    (bilinear), horizontal flip, a random ``crop``-square crop with zero (black) padding when the image is
    smaller, then normalisation. Padded pixels are not masked out, as in the reference.
    """

    def __init__(self, cfg: MoReConfig) -> None:
        d = cfg.data
        self.jitter = _color_jitter(cfg)
        self.jitter_prob = d.jitter_prob
        self.scale = (d.scale_min, d.scale_max)
        self.hflip_prob = d.hflip_prob
        self.crop = d.crop_size
        self.mean, self.std = list(d.mean), list(d.std)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if torch.rand(()) < self.jitter_prob:
            img = self.jitter(img)
        ratio = float(torch.empty(()).uniform_(*self.scale))
        w, h = img.size
        img = img.resize((max(1, int(ratio * w)), max(1, int(ratio * h))), Image.BILINEAR)
        if torch.rand(()) < self.hflip_prob:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = TF.pil_to_tensor(img)  # (3, h, w) uint8
        _, h, w = x.shape
        H, W = max(self.crop, h), max(self.crop, w)
        top = int(torch.randint(H - h + 1, ()))
        left = int(torch.randint(W - w + 1, ()))
        canvas = torch.zeros((3, H, W), dtype=torch.uint8)  # black padding
        canvas[:, top : top + h, left : left + w] = x
        y0 = int(torch.randint(H - self.crop + 1, ()))
        x0 = int(torch.randint(W - self.crop + 1, ()))
        return normalize(canvas[:, y0 : y0 + self.crop, x0 : x0 + self.crop], self.mean, self.std)


def build_train_transform(cfg: MoReConfig) -> ImageTransform:
    """The training transform selected by ``cfg.data.augmentation`` (voc | coco)."""
    return CocoTrainTransform(cfg) if cfg.data.augmentation == "coco" else voc_train_transform(cfg)


def eval_image(image: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) normalised, bilinearly resized without keeping the aspect (§5.1).

    Like the reference validation engine, the resize runs on the normalised tensor (no antialiasing).
    """
    return to_square(normalize(image.permute(2, 0, 1), mean, std), size)


def to_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) normalised -> (3, size, size), bilinear, no antialiasing (the second half of :func:`eval_image`)."""
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]
