"""Augmentation: off is the identity, on changes images reproducibly, frames of one camera move
together, and the geometry moves the picture."""

from __future__ import annotations

import torch

from qvla_core.training.augment import augment_images
from qvla_core.training.config import Augment


def _images(b: int = 3, n: int = 3, h: int = 32, w: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (b, n, h, w, 3), generator=g, dtype=torch.uint8)


def test_off_is_identity() -> None:
    x = _images()
    assert augment_images(x, [1, 2], Augment(), torch.Generator()) is x


def test_reproducible_and_frames_of_a_camera_share_parameters() -> None:
    x = _images()
    x[:, 2] = x[:, 1]  # camera 1 has two identical frames
    cfg = Augment(crop_scale=0.8, shift=0.1, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)
    a = augment_images(x, [1, 2], cfg, torch.Generator().manual_seed(5))
    b = augment_images(x, [1, 2], cfg, torch.Generator().manual_seed(5))
    c = augment_images(x, [1, 2], cfg, torch.Generator().manual_seed(6))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, 1], a[:, 2])  # same parameters for the frames of one camera
    assert not torch.equal(a[:, 0], x[:, 0])


def test_shift_moves_the_picture() -> None:
    x = torch.zeros(1, 1, 32, 32, 3, dtype=torch.uint8)
    x[0, 0, 12:20, 12:20] = 255  # a white square in the middle
    moved = augment_images(x, [1], Augment(shift=0.2), torch.Generator().manual_seed(1))
    ys, xs = torch.nonzero(moved[0, 0, :, :, 0] > 128, as_tuple=True)
    centre = (ys.float().mean().item(), xs.float().mean().item())
    assert abs(centre[0] - 15.5) + abs(centre[1] - 15.5) > 1.0  # it moved
    assert moved.float().mean() > 0  # and did not vanish


def test_colour_only_keeps_grey_under_saturation_and_hue() -> None:
    grey = torch.full((2, 1, 8, 8, 3), 100, dtype=torch.uint8)
    out = augment_images(grey, [1], Augment(saturation=0.5, hue=0.3), torch.Generator().manual_seed(2))
    assert (out.int() - 100).abs().max() <= 1  # no chroma to scale or rotate
    brighter = augment_images(grey, [1], Augment(brightness=0.5), torch.Generator().manual_seed(2))
    assert not torch.equal(brighter, grey)
