"""Training-only image augmentation: random crop/shift and colour jitter, for a whole batch at once.

Works on the uint8 batch at the model's image size (``TrainingBatch.images``, (B, n_images, H, W, 3))
and returns the same layout, so the processor then treats augmented and plain images alike. The
geometry is one ``affine_grid`` + ``grid_sample`` for the batch (a crop of ``crop_scale`` of each
side at a random place, plus a translation of up to ``shift`` of the size, edges replicated as in
DrQ's pad-and-crop); the colour jitter is brightness, contrast, saturation and a hue rotation in
YIQ space (torchvision's operations, in a fixed order). All frames of one camera in one sample
share their parameters, so a frame history stays consistent. Written here rather than taken from
torchvision because torchvision does not import beside our torch build (shared/notes/model-offline.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from qvla_core.training.config import Augment

# RGB <-> YIQ (NTSC), for the hue rotation
_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_GREY = torch.tensor([0.299, 0.587, 0.114])


def _uniform(shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=generator, device=generator.device)


def augment_images(
    images: Tensor, frames_per_camera: Sequence[int], config: Augment, generator: torch.Generator
) -> Tensor:
    """Augmented copy of ``images`` uint8 (B, N, H, W, 3); ``images`` itself when nothing is enabled.

    ``frames_per_camera`` splits the N images into cameras (prompt order); ``generator`` (on the
    images' device) makes the result reproducible.
    """
    if not config.enabled:
        return images
    b, n, h, w, _ = images.shape
    if sum(frames_per_camera) != n:
        raise ValueError(f"frames_per_camera {list(frames_per_camera)} do not add up to {n} images")
    device = images.device
    cams = len(frames_per_camera)
    camera_of = torch.repeat_interleave(
        torch.arange(cams, device=device), torch.as_tensor(list(frames_per_camera), device=device)
    )

    def draw(lo: float, hi: float) -> Tensor:
        """One value per (sample, camera), spread over that camera's frames -> (B * N,)."""
        return _uniform((b, cams), lo, hi, generator).to(device)[:, camera_of].reshape(b * n)

    x = images.reshape(b * n, h, w, 3).permute(0, 3, 1, 2).to(torch.float32) * (1.0 / 255.0)
    if config.crop_scale < 1.0 or config.shift > 0:
        x = _geometry(x, config, draw)
    if config.brightness > 0:
        x = x * draw(1 - config.brightness, 1 + config.brightness)[:, None, None, None]
    if config.contrast > 0:
        mean = torch.einsum("nchw,c->n", x, _GREY.to(device)) / (h * w)
        c = draw(1 - config.contrast, 1 + config.contrast)[:, None, None, None]
        x = (x - mean[:, None, None, None]) * c + mean[:, None, None, None]
    if config.saturation > 0:
        grey = torch.einsum("nchw,c->nhw", x, _GREY.to(device))[:, None]
        s = draw(1 - config.saturation, 1 + config.saturation)[:, None, None, None]
        x = (x - grey) * s + grey
    if config.hue > 0:
        x = _hue(x, draw(-config.hue, config.hue))
    out = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return out.permute(0, 2, 3, 1).reshape(b, n, h, w, 3)


def _geometry(x: Tensor, config: Augment, draw: Callable[[float, float], Tensor]) -> Tensor:
    """Crop ``crop_scale`` of each side at a random place, then translate by up to ``shift``."""
    scale = draw(config.crop_scale, 1.0)
    # normalised coordinates span [-1, 1]: a crop of scale s can move its centre by up to 1 - s
    tx = draw(-1.0, 1.0) * (1.0 - scale) + draw(-2.0 * config.shift, 2.0 * config.shift)
    ty = draw(-1.0, 1.0) * (1.0 - scale) + draw(-2.0 * config.shift, 2.0 * config.shift)
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _hue(x: Tensor, turns: Tensor) -> Tensor:
    """Rotate the chroma (I, Q) of each image by ``turns`` of a full circle."""
    to_yiq = _TO_YIQ.to(x.device)
    to_rgb = torch.linalg.inv(to_yiq)
    angle = turns * 2.0 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(x.shape[0], 3, 3, device=x.device)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1] = cos
    rot[:, 1, 2] = -sin
    rot[:, 2, 1] = sin
    rot[:, 2, 2] = cos
    m = to_rgb @ rot @ to_yiq  # (N, 3, 3)
    return torch.einsum("nij,njhw->nihw", m, x)
