"""A small convolutional vision stem in place of the Qwen vision tower, for policies trained from scratch.

Why: a Vision Transformer learns to find a small object slowly when trained from scratch (Diffusion
Policy, table 5: ViT-B 0.22 vs ResNet-18 0.94 on robomimic Square, both from scratch); a 64-wide ViT
with 16-px patches sees the TransferCube cube (a few pixels at 256x192) inside one patch. A few
convolutions with GroupNorm (batch statistics are unreliable in small CPU batches) learn where a red
cube is within minutes.

The Qwen-VLA shape is kept: the stem replaces ``model.model.visual`` of the Qwen-VL model, takes
the processor's patch tensor and ``grid_thw`` exactly as the vision tower does, and returns one
token per merged patch (the grid the prompt's image placeholders were sized for), which the Qwen
language model then reads as its image tokens. Nothing else in the pipeline changes.

Where the choice lives: ``vision_config.qvla_stem`` in the backbone's ``config.json`` (a dict, see
:class:`StemConfig`). Absent -- every checkpoint written before this module, and every pretrained
Qwen release (``--backbone-from``) -- means the model's own vision tower, loaded as before.

``keypoints > 0`` adds spatial-softmax keypoints (Levine et al. 2016, as in robomimic): per
keypoint channel of the stride-8 feature map, the expected image coordinates under a softmax over
positions; they are embedded and added to every image token, so a precise location of the most
salient thing (the cube) reaches the language model whatever token it reads. The default (16)
is what bench/learned_policy_probe.py preferred after 300 training steps on TransferCube: a linear
probe read the cube's table position from the image tokens with R^2 0.96, against 0.87 without
keypoints (docs/bench/learned_policy_probe.md).

``cond="from_images"`` (the default of new stems): the decoder cross-attends only to the language
model's hidden states from the first image token on (the images, then the task text), not to the
~320 tokens of the embodiment prompt before them, which are the same in every sample of an
embodiment. They still shape those states through the causal attention of the language model. Why:
with every token, the decoder's cross-attention averaged over ~400 tokens of which ~350 never change,
so its output barely varied between scenes, its adaLN gates stayed near zero and the policy never
learned to look (the probe: its chunk did not move with the cube at all).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from qvla_core.errors import CheckpointError

STEM_KEY = "qvla_stem"
STEM_TYPES = ("conv",)
# What the action decoder reads of the backbone's output: every prompt token ("all", what the
# vision tower's checkpoints do), or the tokens from the first image on ("from_images").
COND_MODES = ("all", "from_images")


@dataclass(frozen=True)
class StemConfig:
    """The stem's shape (stored as ``vision_config.qvla_stem`` in the backbone's ``config.json``).

    ``widths``: channels of the stride-4 (a 4x4 patchify convolution), stride-8, stride-16 and the
    second stride-16 convolution; the last stage (a 2x2 merge, as the vision tower's patch merger)
    brings the stride to ``patch_size * merge_size`` = 32 and the width to ``out_hidden`` (the
    language model's hidden size). ``groups``: GroupNorm groups. About 65M multiply-adds per
    192x256 image with the default widths (a ResNet-18 needs ~1.8G): a CPU budget.
    """

    type: str = "conv"
    widths: tuple[int, int, int, int] = (32, 64, 128, 128)
    groups: int = 8
    keypoints: int = 16
    out_hidden: int = 64
    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    cond: str = "from_images"

    def __post_init__(self) -> None:
        if self.cond not in COND_MODES:
            raise CheckpointError(f"{STEM_KEY}.cond {self.cond!r} is not one of {COND_MODES}")
        if self.type not in STEM_TYPES:
            raise CheckpointError(f"{STEM_KEY}.type {self.type!r} is not one of {STEM_TYPES}")
        if len(self.widths) != 4 or any(int(w) <= 0 or int(w) % self.groups for w in self.widths):
            raise CheckpointError(
                f"{STEM_KEY}.widths must be 4 positive multiples of groups={self.groups}, "
                f"got {list(self.widths)}"
            )
        if self.patch_size * self.merge_size != 32:
            raise CheckpointError(
                f"{STEM_KEY}: the conv stem has stride 32, so patch_size * merge_size must be 32 "
                f"(got {self.patch_size} * {self.merge_size})"
            )
        if self.keypoints < 0:
            raise CheckpointError(f"{STEM_KEY}.keypoints must be >= 0, got {self.keypoints}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = STEM_KEY) -> StemConfig:
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: expected an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(known)}")
        values = dict(data)
        values.setdefault("cond", "all")  # stems recorded before the key existed read every token
        if "widths" in values:
            values["widths"] = tuple(int(w) for w in values["widths"])
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: {exc}") from exc


def stem_config_of(hf_config: Any) -> StemConfig | None:
    """The stem a Hugging Face model config asks for, or None (the model's own vision tower)."""
    vision = getattr(hf_config, "vision_config", None)
    data = getattr(vision, STEM_KEY, None) if vision is not None else None
    if data is None:
        return None
    return StemConfig.from_dict(data, f"config.json: vision_config.{STEM_KEY}")


def _conv(cin: int, cout: int, groups: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    )


class SpatialSoftmax(nn.Module):
    """(N, C, H, W) -> (N, K, 2) expected (x, y) in [-1, 1] of a softmax over each keypoint map."""

    def __init__(self, width: int, keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(width, keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        maps = self.proj(x).flatten(2) / self.log_temperature.exp()  # (N, K, H*W)
        weights = maps.softmax(dim=-1)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)  # (H*W, 2)
        out: Tensor = weights @ coords
        return out


class ConvVisionStem(nn.Module):
    """Drop-in for a Qwen-VL vision tower: patches + grid_thw -> one token per merged patch.

    Returns what the Qwen3-VL / Qwen3.5 models read from their vision tower (``pooler_output`` the
    merged tokens, no deepstack features); Qwen2.5-VL reads a plain tensor (``return_dict``).
    """

    def __init__(self, config: StemConfig) -> None:
        super().__init__()
        self.stem_config = config
        self.spatial_merge_size = config.merge_size
        self.patch_size = config.patch_size
        c1, c2, c3, c4 = config.widths
        g = config.groups
        # A 4x4 patchify convolution first (as ConvNeXt): cheap at full resolution, and a 4x4 cell
        # still shows a few-pixel red cube plainly.
        self.stage1 = nn.Sequential(nn.Conv2d(3, c1, 4, stride=4), nn.GroupNorm(g, c1), nn.ReLU(inplace=True))
        self.stage2 = _conv(c1, c2, g, stride=2)  # stride 8
        # Two coordinate channels (CoordConv) from stride 8 on: where a feature is, not only what.
        self.stage3 = _conv(c2 + 2, c3, g, stride=2)  # stride 16
        self.stage4 = _conv(c3, c4, g)  # stride 16, with a skip connection when c3 == c4
        self.merge = nn.Conv2d(c4, config.out_hidden, 2, stride=2)  # stride 32: one token per merged patch
        self.norm = nn.LayerNorm(config.out_hidden)
        self.keypoints: SpatialSoftmax | None = None
        self.keypoint_embed: nn.Linear | None = None
        if config.keypoints > 0:
            self.keypoints = SpatialSoftmax(c2 + 2, config.keypoints)
            self.keypoint_embed = nn.Linear(2 * config.keypoints, config.out_hidden)

    @property
    def dtype(self) -> torch.dtype:
        return self.merge.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.merge.weight.device

    def images_from_patches(self, patches: Tensor, grid_thw: Tensor) -> Tensor:
        """Undo the processor's patchify (model/processor.py ``images_to_patches``): -> (N, 3, H, W)."""
        grids = {tuple(int(v) for v in g) for g in grid_thw.tolist()}
        if len(grids) != 1:
            raise ValueError(
                f"the conv stem needs equally sized images in a batch, got grids {sorted(grids)}"
            )
        t, gh, gw = grids.pop()
        if t != 1:
            raise ValueError(f"the conv stem reads single images (grid t=1), got t={t}")
        n = int(grid_thw.shape[0])
        p, m, tp = self.patch_size, self.spatial_merge_size, self.stem_config.temporal_patch_size
        if patches.shape != (n * gh * gw, 3 * tp * p * p):
            raise ValueError(
                f"patches of shape {tuple(patches.shape)} do not fit {n} images of grid {gh}x{gw} "
                f"(patch {p}, temporal patch {tp})"
            )
        x = patches.reshape(n, gh // m, gw // m, m, m, 3, tp, p, p)[:, :, :, :, :, :, 0]
        x = x.permute(0, 5, 1, 3, 6, 2, 4, 7)  # (N, C, gh/m, m, p, gw/m, m, p)
        return x.reshape(n, 3, gh * p, gw * p)

    @staticmethod
    def _with_coords(x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
        return torch.cat([x, xs, ys], dim=1)

    def tokens(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) normalised images -> (N, H/32 * W/32, out_hidden) tokens, row-major."""
        x = self.stage1(images.contiguous(memory_format=torch.channels_last))
        x = self._with_coords(self.stage2(x))
        kp = self.keypoints(x) if self.keypoints is not None else None  # stride 8: 24x32 positions
        x = self.stage3(x)
        x = x + self.stage4(x) if x.shape[1] == self.stem_config.widths[3] else self.stage4(x)
        x = self.merge(x).flatten(2).transpose(1, 2)  # (N, tokens, out_hidden)
        if kp is not None and self.keypoint_embed is not None:
            x = x + self.keypoint_embed(kp.flatten(1))[:, None, :]
        tokens: Tensor = self.norm(x)
        return tokens

    def forward(self, hidden_states: Tensor, grid_thw: Tensor, **kwargs: Any) -> Any:
        """The vision tower's call: (patches, grid_thw) -> merged tokens (sum over images, out_hidden)."""
        images = self.images_from_patches(hidden_states.to(self.dtype), grid_thw)
        merged = self.tokens(images).reshape(-1, self.stem_config.out_hidden)
        if not kwargs.get("return_dict", True):
            return merged
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        out = BaseModelOutputWithPooling(last_hidden_state=merged, pooler_output=merged)
        out["deepstack_features"] = []  # Qwen3-VL's vision output carries these; the stem has none
        return out


def install_stem(model: Any, config: StemConfig) -> ConvVisionStem:
    """Replace ``model``'s vision tower (``model.model.visual``) by a new stem; record it in the config."""
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "visual"):
        raise CheckpointError(f"{type(model).__name__} has no model.visual to replace with a vision stem")
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    stem = ConvVisionStem(config).to(device=device, dtype=dtype)
    inner.visual = stem
    setattr(model.config.vision_config, STEM_KEY, config.to_dict())
    return stem


def stem_for(hf_config: Any, **overrides: Any) -> StemConfig:
    """A stem config matching a Qwen-VL config's patch grid and text width (``overrides`` for the rest)."""
    vision = hf_config.vision_config
    return StemConfig(
        out_hidden=int(vision.out_hidden_size),
        patch_size=int(vision.patch_size),
        merge_size=int(vision.spatial_merge_size),
        temporal_patch_size=int(vision.temporal_patch_size),
        **overrides,
    )


def load_stem_model(klass: Any, path: Any, dtype: torch.dtype, device: torch.device, attn: str) -> Any:
    """Load a backbone directory whose config asks for a stem (transformers cannot: it would build the
    vision tower and find its weights missing): build the model from config.json, install the stem,
    read the safetensors strictly. Stems are for small from-scratch models: one weight file or shards."""
    from pathlib import Path

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(path)
    config = klass.config_class.from_pretrained(str(root), local_files_only=True)
    stem_cfg = stem_config_of(config)
    if stem_cfg is None:
        raise CheckpointError(f"{root / 'config.json'}: no vision_config.{STEM_KEY}")
    config._attn_implementation = attn
    with torch.device(device):
        model = klass._from_config(config, dtype=dtype)
    install_stem(model, stem_cfg)
    files = sorted(root.glob("model*.safetensors"))
    if not files:
        raise CheckpointError(f"{root}: no model*.safetensors weight files")
    weights: dict[str, Tensor] = {}
    try:
        for file in files:
            weights.update(load_file(str(file), device=str(device)))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{root}: cannot read the weights: {exc}") from exc
    expected = model.state_dict()
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    missing = sorted(k for k in expected if k not in weights and k not in tied)
    unexpected = sorted(k for k in weights if k not in expected)
    wrong = sorted(k for k in weights if k in expected and weights[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{root}: the weight files do not fit config.json (vision stem {stem_cfg.type}): missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
        )
    model.load_state_dict(weights, strict=False)
    if tied:
        model.tie_weights()
    return model.to(dtype)
