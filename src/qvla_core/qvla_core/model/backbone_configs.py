"""The shapes of the random backbones qvla builds: tiny ones for tests and the demo, and the releases'.

:func:`tiny_config` -- a ~0.2M-parameter model of each backbone type (``qvla-build-checkpoint --preset
tiny``/``small``); :func:`full_config` -- the published shapes of Qwen3.5-4B, Qwen3-VL-4B and
Qwen2.5-VL-3B with random weights (``--preset full``, for GPU latency benchmarks);
:func:`build_random_backbone` -- the randomly initialised model of such a config. A new backbone
type adds its shapes here (and its classes in model/backbone_types.py).
"""

from __future__ import annotations

from typing import Any

import torch

from qvla_core.errors import CheckpointError
from qvla_core.model.backbone_types import config_class, model_class


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
    # The vision tower's shape but for the per-type keys below.
    common_vision: dict[str, Any] = {
        "depth": 2,
        "hidden_size": vision_width,
        "intermediate_size": 2 * vision_width,
        "num_heads": vision_width // 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 64,
    }
    if backbone_type == "qwen2_5_vl":
        text = {
            **common_text,
            "num_hidden_layers": 2,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        }
        vision = {**common_vision, "patch_size": 14, "window_size": 56, "fullatt_block_indexes": [1]}
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
            **common_vision,
            "patch_size": 16,
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
        vision = {**common_vision, "patch_size": 16, "num_position_embeddings": 64}
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


def build_random_backbone(config: Any, dtype: torch.dtype, seed: int, device: str = "cpu") -> Any:
    """A randomly initialised ``...ForConditionalGeneration`` for ``config`` (builder helper)."""
    torch.manual_seed(seed)
    klass = model_class(config.model_type)
    with torch.device(device):
        model = klass._from_config(config, dtype=dtype)
    model.eval()
    if int(model.config.text_config.hidden_size) <= 0:
        raise CheckpointError("backbone hidden size must be positive")
    return model
