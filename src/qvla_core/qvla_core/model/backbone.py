"""The vision-language backbone: a Hugging Face Qwen-VL model read from a local directory.

The backbone type is the ``model_type`` of the directory's ``config.json``:

* ``qwen3_5`` -- Qwen3.5 (Qwen-VLA's published backbone is Qwen3.5-4B),
* ``qwen3_vl`` -- Qwen3-VL,
* ``qwen2_5_vl`` -- Qwen2.5-VL.

Conditioning for the action decoder: the hidden states of one language-model
layer (default: the last, after the final norm) for every prompt token, image
tokens included, with the attention mask -> ``(cond (B, L, hidden), cond_mask (B, L) bool)``.
Only the inner multimodal model runs (no LM head, no KV cache).

This module also knows the shapes of the tiny random models used by tests and
the demo (:func:`tiny_config`) and of the full releases (:func:`full_config`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from qvla_core.errors import CheckpointError
from qvla_core.model.device import (
    DTYPES,
    LOAD_ADVICE,
    Placement,
    oom_as_error,
    require_accelerate,
    resolve_placement,
)
from qvla_core.model.prefix_cache import (
    PrefixMemo,
    forward_with_shared_prefix,
    shared_prefix_length,
    supports_shared_prefix,
)

BackboneType = Literal["qwen2_5_vl", "qwen3_vl", "qwen3_5"]
BACKBONE_TYPES: tuple[str, ...] = ("qwen2_5_vl", "qwen3_vl", "qwen3_5")


@contextmanager
def quiet_hf() -> Iterator[None]:
    """Hide transformers' progress bars (weight loading/saving) for the duration."""
    from transformers.utils import logging

    hf_logging: Any = logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def model_class(backbone_type: str) -> Any:
    """The transformers ``...ForConditionalGeneration`` class of a backbone type."""
    import transformers

    names = {
        "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
        "qwen3_vl": "Qwen3VLForConditionalGeneration",
        "qwen3_5": "Qwen3_5ForConditionalGeneration",
    }
    if backbone_type not in names:
        raise CheckpointError(
            f"unknown backbone type {backbone_type!r}; supported: {', '.join(BACKBONE_TYPES)}"
        )
    return getattr(transformers, names[backbone_type])


def config_class(backbone_type: str) -> Any:
    """The transformers config class of a backbone type."""
    import transformers

    names = {"qwen2_5_vl": "Qwen2_5_VLConfig", "qwen3_vl": "Qwen3VLConfig", "qwen3_5": "Qwen3_5Config"}
    if backbone_type not in names:
        raise CheckpointError(
            f"unknown backbone type {backbone_type!r}; supported: {', '.join(BACKBONE_TYPES)}"
        )
    return getattr(transformers, names[backbone_type])


def _token_ids(token_ids: dict[str, int]) -> dict[str, int]:
    return {
        "image_token_id": token_ids["<|image_pad|>"],
        "video_token_id": token_ids["<|video_pad|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"],
        "vision_end_token_id": token_ids["<|vision_end|>"],
    }


def tiny_config(
    backbone_type: str, vocab_size: int, token_ids: dict[str, int], vision_width: int = 32
) -> Any:
    """A ~0.2M-parameter random model of the given type (text hidden 64, 2-4 layers).

    ``vision_width``: hidden size of the vision tower (32; the ``small`` preset's is 64, for
    policies whose vision is trained from scratch on a CPU).

    The shapes respect the constraints that otherwise fail with misleading errors:
    ``mrope_section`` sums to head_dim/2, vision head dim divisible by 4, vision
    ``out_hidden_size`` == text hidden size, full-attention / deepstack indexes
    within the vision depth, a square number of vision position embeddings.
    """
    ids = _token_ids(token_ids)
    cls = config_class(backbone_type)
    common_text: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "pad_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "bos_token_id": None,
    }
    if backbone_type == "qwen2_5_vl":
        text = {
            **common_text,
            "num_hidden_layers": 2,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        }
        vision = {
            "depth": 2,
            "hidden_size": vision_width,
            "intermediate_size": 2 * vision_width,
            "num_heads": vision_width // 16,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1],
        }
    elif backbone_type == "qwen3_vl":
        text = {
            **common_text,
            "num_hidden_layers": 2,
            "head_dim": 16,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5e6,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
        }
        vision = {
            "depth": 2,
            "hidden_size": vision_width,
            "intermediate_size": 2 * vision_width,
            "num_heads": vision_width // 16,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [1],
        }
    else:
        text = {
            **common_text,
            "num_hidden_layers": 4,
            "head_dim": 16,
            "layer_types": ["linear_attention"] * 3 + ["full_attention"],
            "linear_num_key_heads": 2,
            "linear_num_value_heads": 4,
            "linear_key_head_dim": 16,
            "linear_value_head_dim": 16,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e7,
                "partial_rotary_factor": 0.25,
                "mrope_section": [1, 1, 0],
                "mrope_interleaved": True,
            },
        }
        vision = {
            "depth": 2,
            "hidden_size": vision_width,
            "intermediate_size": 2 * vision_width,
            "num_heads": vision_width // 16,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
        }
    return cls(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)


def full_config(backbone_type: str, token_ids: dict[str, int], vocab_size: int | None = None) -> Any:
    """The published shapes: Qwen3.5-4B, Qwen3-VL-4B, Qwen2.5-VL-3B (random weights).

    Text/vision shapes follow the releases' ``config.json`` (Qwen3.5-4B: 32 layers,
    hidden 2560, every 4th layer full attention, Gated DeltaNet elsewhere, vocab
    248,320, tied embeddings; vision 24 blocks of width 1024). ``vocab_size``
    defaults to the release's; the tokenizer's ids must lie within it.
    """
    ids = _token_ids(token_ids)
    cls = config_class(backbone_type)
    if backbone_type == "qwen3_5":
        text: dict[str, Any] = {
            "vocab_size": vocab_size or 248320,
            "hidden_size": 2560,
            "intermediate_size": 9216,
            "num_hidden_layers": 32,
            "num_attention_heads": 16,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 8,
            "linear_num_key_heads": 16,
            "linear_num_value_heads": 32,
            "linear_key_head_dim": 128,
            "linear_value_head_dim": 128,
            "linear_conv_kernel_dim": 4,
            "max_position_embeddings": 262144,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e7,
                "partial_rotary_factor": 0.25,
                "mrope_section": [11, 11, 10],
                "mrope_interleaved": True,
            },
        }
        vision: dict[str, Any] = {
            "depth": 24,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_heads": 16,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 2560,
            "num_position_embeddings": 2304,
        }
    elif backbone_type == "qwen3_vl":
        text = {
            "vocab_size": vocab_size or 151936,
            "hidden_size": 2560,
            "intermediate_size": 9728,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 262144,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5e6,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        }
        vision = {
            "depth": 24,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_heads": 16,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 2560,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [5, 11, 17],
        }
    else:
        text = {
            "vocab_size": vocab_size or 151936,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128000,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        }
        vision = {
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "out_hidden_size": 2048,
            "fullatt_block_indexes": [7, 15, 23, 31],
        }
    return cls(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)


def text_hidden_size(config: Any) -> int:
    return int(config.text_config.hidden_size)


def text_num_layers(config: Any) -> int:
    return int(config.text_config.num_hidden_layers)


class Backbone(nn.Module):
    """Wraps a Qwen-VL ``...ForConditionalGeneration``; returns conditioning tokens."""

    def __init__(self, model: Any, backbone_type: str, cond_layer: int = -1) -> None:
        super().__init__()
        self.model = model
        self.backbone_type = backbone_type
        n_layers = text_num_layers(model.config)
        if not -1 <= cond_layer <= n_layers:
            raise CheckpointError(
                f"conditioning layer {cond_layer} out of range: the backbone has {n_layers} layers "
                f"(use -1 for the last layer after the final norm, 0 for the embeddings, 1..{n_layers})"
            )
        self.cond_layer = cond_layer
        # The prompt's shared text prefix runs once per batch and, at inference, once per prompt
        # (model/prefix_cache.py); only with the last layer as conditioning and softmax-attention LMs.
        self.shared_prefix = cond_layer == -1 and supports_shared_prefix(model)
        self.prefix_memo = PrefixMemo()

    @property
    def hidden_size(self) -> int:
        return text_hidden_size(self.model.config)

    @property
    def vision_config(self) -> Any:
        return self.model.config.vision_config

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        cond_layer: int = -1,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        attn_implementation: str = "sdpa",
        *,
        placement: Placement | None = None,
        adapter: Path | None = None,
    ) -> Backbone:
        """Load a backbone directory (a Hugging Face model directory), chosen by its ``model_type``.

        Weights go straight onto the device through ``device_map`` on every device (CPU included,
        so the path a GPU takes is the one every test runs). Missing or mis-shaped weights are an
        error, not a silent random init. ``adapter``: a peft LoRA directory applied and merged.
        """
        path = Path(path)
        if placement is None:
            name = next(k for k, v in DTYPES.items() if v == dtype)
            placement = resolve_placement(str(device), name)
        model_type = read_model_type(path)
        require_accelerate()
        klass = model_class(model_type)
        with oom_as_error(placement, f"loading the {model_type} backbone from {path}", LOAD_ADVICE):
            if _asks_for_stem(path):  # a conv stem in place of the vision tower (model/vision_stem.py)
                from qvla_core.model.vision_stem import load_stem_model

                model = load_stem_model(klass, path, placement.dtype, placement.device, attn_implementation)
                if adapter is not None:
                    model = merge_adapter(model, adapter)
                model.eval()
                return cls(model, model_type, cond_layer)
            try:
                with quiet_hf():
                    model, info = klass.from_pretrained(
                        str(path),
                        dtype=placement.dtype,
                        attn_implementation=attn_implementation,
                        local_files_only=True,
                        device_map=placement.device_map(),
                        output_loading_info=True,
                    )
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # OSError, ValueError, safetensors' SafetensorError, ...
                raise CheckpointError(
                    f"{path}: cannot load the {model_type} backbone: {type(exc).__name__}: {exc}"
                ) from exc
            _check_loading_info(path, model, info)
            if adapter is not None:
                model = merge_adapter(model, adapter)
        model.eval()
        return cls(model, model_type, cond_layer)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        pixel_values: Tensor,
        image_grid_thw: Tensor,
        mm_token_type_ids: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """(cond (B, L, hidden), cond_mask (B, L) bool) for one batch of prompts + images."""
        prefix = (
            shared_prefix_length(input_ids, attention_mask, self.image_token_id) if self.shared_prefix else 0
        )
        if prefix > 0:
            hidden_states = forward_with_shared_prefix(
                self.model,
                input_ids=input_ids,
                attention_mask=attention_mask,
                pixel_values=pixel_values.to(self.model.dtype),
                image_grid_thw=image_grid_thw,
                mm_token_type_ids=mm_token_type_ids,
                prefix_length=prefix,
                memo=self.prefix_memo,
            )
            return hidden_states, attention_mask.to(torch.bool)
        inner = self.model.model
        want_all = self.cond_layer != -1
        out = inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values.to(self.model.dtype),
            image_grid_thw=image_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            use_cache=False,
            output_hidden_states=want_all,
            return_dict=True,
        )
        hidden = out.hidden_states[self.cond_layer] if want_all else out.last_hidden_state
        return hidden, attention_mask.to(torch.bool)


def _asks_for_stem(path: Path) -> bool:
    """Whether ``path/config.json`` names a vision stem (absent in every Qwen release)."""
    import json

    from qvla_core.model.vision_stem import STEM_KEY

    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # read_model_type has already reported an unreadable config.json
    vision = data.get("vision_config") if isinstance(data, dict) else None
    return isinstance(vision, dict) and vision.get(STEM_KEY) is not None


def read_model_type(path: Path) -> str:
    from qvla_core.model.pretrained import read_model_type as read

    return read(path)


def _check_loading_info(path: Path, model: Any, info: dict[str, Any]) -> None:
    """transformers fills weights missing from the files with random values and only warns: refuse."""
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    missing = sorted(k for k in info.get("missing_keys", ()) if k not in tied)
    mismatched = sorted(
        str(m[0]) if isinstance(m, tuple) else str(m) for m in info.get("mismatched_keys", ())
    )
    if missing or mismatched:
        raise CheckpointError(
            f"{path}: the weight files do not fit config.json: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, wrong shape {mismatched[:5]}"
        )


def merge_adapter(model: Any, adapter: Path) -> Any:
    """Apply a peft LoRA adapter directory to ``model`` and merge it into the weights (inference)."""
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{config_file}: missing file (backbone_adapter names {adapter})")
    try:
        from peft import PeftModel
    except ImportError:
        raise CheckpointError(
            f"{adapter}: applying a LoRA adapter needs peft: pip install peft==0.21.2"
        ) from None
    try:
        with quiet_hf():
            wrapped = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"{adapter}: cannot apply the LoRA adapter: {type(exc).__name__}: {exc}"
        ) from exc
    return wrapped.merge_and_unload()
