"""Observation -> backbone inputs: prompt tokens, image patches, masks.

This replaces the stock Qwen-VL ``AutoProcessor`` (which insists on a video
processor, i.e. torchvision) with the same arithmetic in PyTorch, so it runs on
the policy's device:

* every image is resized to the checkpoint's fixed ``image_size`` (bilinear,
  antialiased, in uint8 on a CPU; skipped when it already has that size), scaled to [0, 1],
  normalised with the image processor's mean/std and cut into
  ``temporal_patch_size x patch x patch`` patches in Qwen's merge-window order
  (the still image is repeated along time, as the Qwen image processors do);
  the result equals ``Qwen2VLImageProcessor`` on an image of that size;
* the prompt is rendered through the tokenizer's chat template and each
  ``<|image_pad|>`` is expanded to ``(h/patch) * (w/patch) / merge^2`` tokens;
  with a fixed image size the token ids depend only on (embodiment, instruction)
  and are cached;
* ``mm_token_type_ids`` marks image tokens with 1 (Qwen3.5 requires it).

The image geometry lives in the checkpoint's ``backbone/preprocessor_config.json``
(Hugging Face's format, so the stock image processor reads it too).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qvla_core.embodiment import Embodiment
from qvla_core.errors import CheckpointError
from qvla_core.model.pretrained import CONFIG, TOKENIZER_CONFIG, BackboneFiles, inspect_backbone
from qvla_core.model.prompt import num_images, render_prompt
from qvla_core.model.tokenizer import IMAGE_TOKEN

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ImageSpec:
    """Fixed image geometry and normalisation of one backbone."""

    height: int
    width: int
    patch_size: int
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        factor = self.patch_size * self.merge_size
        if self.height % factor or self.width % factor or self.height <= 0 or self.width <= 0:
            raise CheckpointError(
                f"image size {self.height}x{self.width} must be positive multiples of "
                f"patch_size*merge_size = {factor}"
            )

    @property
    def grid(self) -> tuple[int, int, int]:
        return (1, self.height // self.patch_size, self.width // self.patch_size)

    @property
    def tokens_per_image(self) -> int:
        _, gh, gw = self.grid
        return gh * gw // (self.merge_size**2)

    @property
    def patch_dim(self) -> int:
        return 3 * self.temporal_patch_size * self.patch_size**2

    def to_hf(self) -> dict[str, Any]:
        """``preprocessor_config.json`` content (readable by ``Qwen2VLImageProcessor``)."""
        pixels = self.height * self.width
        return {
            "image_processor_type": "Qwen2VLImageProcessor",
            "do_resize": True,
            "do_rescale": True,
            "rescale_factor": 1.0 / 255.0,
            "do_normalize": True,
            "do_convert_rgb": True,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "patch_size": self.patch_size,
            "merge_size": self.merge_size,
            "temporal_patch_size": self.temporal_patch_size,
            "size": {"shortest_edge": pixels, "longest_edge": pixels},
            "qvla_image_size": [self.height, self.width],
        }

    @classmethod
    def from_hf(
        cls,
        data: dict[str, Any],
        image_size: tuple[int, int],
        source: Path | str = "preprocessor_config.json",
    ) -> ImageSpec:
        try:
            return cls(
                height=int(image_size[0]),
                width=int(image_size[1]),
                patch_size=int(data["patch_size"]),
                merge_size=int(data.get("merge_size", 2)),
                temporal_patch_size=int(data.get("temporal_patch_size", 2)),
                image_mean=tuple(float(v) for v in data.get("image_mean", CLIP_MEAN)),  # type: ignore[arg-type]
                image_std=tuple(float(v) for v in data.get("image_std", CLIP_STD)),  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: bad image processor settings: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resize_images(images: Tensor, height: int, width: int) -> Tensor:
    """uint8 (N, H, W, 3) -> uint8 (N, height, width, 3), as the processor resizes on a CPU (the input
    itself when it already has that size). Training resizes each frame once with it, ahead of time."""
    if tuple(images.shape[1:3]) == (height, width):
        return images
    x = images.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.permute(0, 2, 3, 1)


def images_to_patches(images: Tensor, spec: ImageSpec) -> Tensor:
    """uint8 (N, H, W, 3) images -> float32 patches (N * gh * gw, 3 * T * p * p)."""
    x = images.permute(0, 3, 1, 2)
    if x.shape[-2:] != (spec.height, spec.width):
        if x.device.type == "cpu" and x.dtype == torch.uint8:
            # PyTorch's uint8 antialiased path (channels-last) is ~20x faster on a CPU than fp32;
            # it differs from the fp32 resize by under one grey level.
            x = resize_images(images, spec.height, spec.width).permute(0, 3, 1, 2)
        else:
            x = F.interpolate(
                x.to(torch.float32),
                size=(spec.height, spec.width),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
    x = x.to(torch.float32)
    mean = torch.tensor(spec.image_mean, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.image_std, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    x = (x * (1.0 / 255.0) - mean) / std
    n = x.shape[0]
    p, m, tp = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    gh, gw = spec.height // p, spec.width // p
    x = x.reshape(n, 3, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # (N, gh/m, gw/m, m, m, C, p, p)
    x = x.unsqueeze(6).expand(n, gh // m, gw // m, m, m, 3, tp, p, p)
    return x.reshape(n * gh * gw, 3 * tp * p * p)


def _check_tokenizer(files: BackboneFiles, tokenizer: Any) -> None:
    """The tokenizer's ids must be the model's: the image pad id, and every id inside the embedding."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id != files.image_token_id:
        raise CheckpointError(
            f"{files.root / TOKENIZER_CONFIG}: the tokenizer's {IMAGE_TOKEN} id {image_id} != "
            f"{files.root / CONFIG} image_token_id {files.image_token_id}"
        )
    if len(tokenizer) > files.vocab_size:
        raise CheckpointError(
            f"{files.root / CONFIG}: vocab_size {files.vocab_size} is smaller than the tokenizer's "
            f"{len(tokenizer)} tokens ({files.root / TOKENIZER_CONFIG})"
        )


class QwenVLAProcessor:
    """Turns (embodiment, instruction, images) into the backbone's input tensors."""

    def __init__(self, tokenizer: Any, spec: ImageSpec, cache_size: int = 64) -> None:
        self.tokenizer = tokenizer
        self.spec = spec
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else 0)
        self._cache: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
        self._cache_size = cache_size

    @classmethod
    def from_pretrained(cls, path: str | Path, image_size: tuple[int, int]) -> QwenVLAProcessor:
        """The processor of a backbone directory (its weights need not be there)."""
        return cls.from_backbone(inspect_backbone(path, need_weights=False), image_size)

    @classmethod
    def from_backbone(
        cls, files: BackboneFiles, image_size: tuple[int, int], embodiments: Sequence[Embodiment] = ()
    ) -> QwenVLAProcessor:
        """The model's own tokenizer, chat template and image normalisation, at a fixed image size.

        Checked against the model (model/loader.py's backbone step): the tokenizer's image pad id is
        the model's ``image_token_id`` and every token id lies inside the embedding; the chat
        template renders one image placeholder per camera frame of each of ``embodiments``.
        """
        from transformers import AutoTokenizer

        spec = ImageSpec.from_hf(files.image_settings, image_size, files.image_source)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(files.root), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{files.root}: cannot load the tokenizer: {exc}") from exc
        if IMAGE_TOKEN not in tokenizer.get_vocab():
            raise CheckpointError(f"{files.root}: the tokenizer has no {IMAGE_TOKEN} token")
        _check_tokenizer(files, tokenizer)
        # The processor-level template (chat_template.jinja / .json) is the one that knows images.
        tokenizer.chat_template = files.chat_template
        processor = cls(tokenizer, spec)
        for embodiment in embodiments:
            try:
                processor.prompt_ids(embodiment, "check the chat template")
            except (CheckpointError, ValueError, TypeError, KeyError) as exc:
                raise CheckpointError(
                    f"{files.chat_template_source}: the chat template cannot render the prompt: {exc}"
                ) from exc
        return processor

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(path))
        (path / "preprocessor_config.json").write_text(
            json.dumps(self.spec.to_hf(), indent=2) + "\n", encoding="utf-8"
        )

    @staticmethod
    def images_per_prompt(embodiment: Embodiment) -> int:
        return num_images(embodiment)

    def prompt_text(self, embodiment: Embodiment, instruction: str) -> str:
        """The chat-template output, one ``<|image_pad|>`` per image (not yet expanded)."""
        return render_prompt(self.tokenizer, embodiment, instruction)

    def prompt_ids(self, embodiment: Embodiment, instruction: str) -> list[int]:
        """Token ids with every image pad expanded (cached per embodiment and instruction)."""
        key = (embodiment.model_dump_json(), instruction)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        ids: list[int] = self.tokenizer(self.prompt_text(embodiment, instruction), add_special_tokens=False)[
            "input_ids"
        ]
        n = self.spec.tokens_per_image
        expanded: list[int] = []
        for tok in ids:
            if tok == self.image_token_id:
                expanded.extend([tok] * n)
            else:
                expanded.append(tok)
        want = num_images(embodiment)
        got = ids.count(self.image_token_id)
        if got != want:
            raise CheckpointError(f"the chat template rendered {got} image placeholders for {want} images")
        self._cache[key] = expanded
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return expanded

    def __call__(
        self,
        embodiment: Embodiment,
        instructions: list[str],
        images: list[Tensor],
        device: torch.device | str = "cpu",
    ) -> dict[str, Tensor]:
        """Batch inputs for B prompts.

        ``images``: uint8 tensors (n, H, W, 3), concatenated in prompt order they hold
        B * n_images frames (one tensor per camera and batch row is typical; sizes may differ).

        Sequences are right-padded with the pad token (``attention_mask`` 0).
        """
        device = torch.device(device)
        rows = [self.prompt_ids(embodiment, ins) for ins in instructions]
        length = max(len(r) for r in rows)
        ids = np.full((len(rows), length), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        input_ids = torch.from_numpy(ids).to(device)
        attention_mask = torch.from_numpy(mask).to(device)
        pixel_values = torch.cat([images_to_patches(im.to(device), self.spec) for im in images])
        n_images = sum(int(im.shape[0]) for im in images)
        if n_images != len(rows) * self.images_per_prompt(embodiment):
            raise ValueError(
                f"got {n_images} images for {len(rows)} prompts of {self.images_per_prompt(embodiment)}"
            )
        grid = torch.tensor([self.spec.grid] * n_images, dtype=torch.int64, device=device)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": pixel_values,
            "image_grid_thw": grid,
            "mm_token_type_ids": (input_ids == self.image_token_id).to(torch.int32),
        }
