"""Build random-initialised Qwen-VLA checkpoints locally (no model hub).

``tiny``: a ~0.2M-parameter VLM of the chosen type + the tiny DiT decoder, with a
byte-level BPE tokenizer trained on the robot YAMLs' words and typical
instructions; seconds to build, for tests and the demo.

``full``: the published backbone shapes (Qwen3.5-4B / Qwen3-VL-4B / Qwen2.5-VL-3B)
+ the 1.15B DiT decoder (cond_dim set to the backbone's hidden size), random
weights in bfloat16, for GPU latency benchmarks. Building on a CPU is slow and
needs ~12 GB of RAM (the tokenizer stays the tiny one; the vocabulary keeps the
release's size). ``weights=False`` writes everything except the weight files
(config, tokenizer, norm stats): useful to inspect shapes; it does not load.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from qvla_core.embodiment import Embodiment, Normalization
from qvla_core.errors import CheckpointError, NormalizationError
from qvla_core.model import checkpoint as ckpt
from qvla_core.model.action_decoder import DECODER_PRESETS, ActionDecoder
from qvla_core.model.backbone import BACKBONE_TYPES, full_config, quiet_hf, text_hidden_size, tiny_config
from qvla_core.model.normalization import stats_from_limits
from qvla_core.model.processor import CLIP_MEAN, CLIP_STD, HALF, ImageSpec, QwenVLAProcessor
from qvla_core.model.prompt import frame_label, system_text
from qvla_core.model.tokenizer import SPECIAL_TOKENS, corpus_from_texts, train_tokenizer

PRESETS = ("tiny", "full")


def embodiment_texts(embodiment: Embodiment) -> list[str]:
    """Words of a robot description for the tokenizer corpus."""
    e = embodiment
    return [
        system_text(e),
        *(frame_label(c.name, 0.0) for c in e.cameras),
        e.name,
        e.body,
        e.control_convention,
        " ".join(e.action_names),
        " ".join(e.state_names),
        " ".join(e.camera_names),
    ]


def norm_stats_for(embodiments: Sequence[Embodiment], from_limits: bool) -> dict[str, Normalization]:
    """Stats per embodiment: its YAML normalization, else (with ``from_limits``) its channel limits."""
    out: dict[str, Normalization] = {}
    for e in embodiments:
        if e.normalization is not None:
            out[e.name] = e.normalization
        elif from_limits:
            out[e.name] = stats_from_limits(e)
        else:
            raise NormalizationError(
                f"embodiment '{e.name}' has no embodiment.normalization in its YAML; pass "
                "--stats-from-limits to derive placeholder stats from its channel limits"
            )
    return out


def build_checkpoint(
    out: str | Path,
    *,
    preset: str = "tiny",
    backbone_type: str = "qwen3_vl",
    embodiments: Sequence[Embodiment] = (),
    stats_from_limits: bool = False,
    seed: int = 0,
    image_size: tuple[int, int] = (224, 224),
    weights: bool = True,
    instructions: Sequence[str] = (),
    randomize_head: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Write a checkpoint directory; returns a summary (sizes, parameter counts, seconds).

    ``randomize_head``: the decoder is adaLN-Zero with a zero output layer, so an
    untrained one returns its input noise whatever it sees; this fills the
    zero-initialised tensors with small random values so the output depends on
    images, prompt and state (tests of conditioning, dtype, save/load).
    ``device``: where the random weights are drawn (``cuda`` makes the full preset quick).
    """
    if preset not in PRESETS:
        raise CheckpointError(f"unknown preset {preset!r}; choose from {PRESETS}")
    if backbone_type not in BACKBONE_TYPES:
        raise CheckpointError(f"unknown backbone {backbone_type!r}; choose from {BACKBONE_TYPES}")
    start = time.perf_counter()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    stats = norm_stats_for(embodiments, stats_from_limits)

    texts: list[str] = list(instructions)
    for e in embodiments:
        texts.extend(embodiment_texts(e))
    tokenizer = train_tokenizer(corpus_from_texts(texts), vocab_size=1024)
    token_ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS}
    vocab = len(tokenizer)
    if preset == "tiny":
        config = tiny_config(backbone_type, vocab_size=vocab, token_ids=token_ids)
        dtype = torch.float32
    else:
        config = full_config(backbone_type, token_ids=token_ids)
        dtype = torch.bfloat16
    hidden = text_hidden_size(config)
    decoder_cfg = replace(DECODER_PRESETS[preset], cond_dim=hidden)
    for e in embodiments:
        if e.horizon > decoder_cfg.max_horizon or len(e.action) > decoder_cfg.action_width:
            raise CheckpointError(f"embodiment '{e.name}' does not fit the {preset} decoder")

    vision = config.vision_config
    mean = CLIP_MEAN if backbone_type == "qwen2_5_vl" else HALF
    std = CLIP_STD if backbone_type == "qwen2_5_vl" else HALF
    spec = ImageSpec(
        height=image_size[0],
        width=image_size[1],
        patch_size=int(vision.patch_size),
        merge_size=int(vision.spatial_merge_size),
        temporal_patch_size=int(vision.temporal_patch_size),
        image_mean=mean,
        image_std=std,
    )
    processor = QwenVLAProcessor(tokenizer, spec)
    backbone_dir = root / ckpt.BACKBONE_DIR
    n_backbone = 0
    n_decoder = 0
    if weights:
        from qvla_core.model.policy import build_random_backbone

        model = build_random_backbone(config, dtype=dtype, seed=seed, device=device)
        n_backbone = sum(p.numel() for p in model.parameters())
        with quiet_hf():
            model.save_pretrained(str(backbone_dir))
        del model
        torch.manual_seed(seed + 1)
        with torch.device(device):
            decoder = ActionDecoder(decoder_cfg).to(dtype)
        if randomize_head:
            with torch.no_grad():
                for param in decoder.parameters():
                    if not bool(param.any()):
                        param.normal_(0.0, 0.05)
        n_decoder = decoder.num_parameters()
        ckpt.save_decoder(root, decoder)
        del decoder
    else:
        backbone_dir.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(str(backbone_dir))
    processor.save_pretrained(backbone_dir)
    ckpt.write_norm_stats(root, stats)
    policy_cfg = ckpt.PolicyConfig(
        backbone_type=backbone_type,
        decoder=decoder_cfg,
        image_size=(image_size[0], image_size[1]),
        cond_layer=-1,
        dtype="float32" if dtype == torch.float32 else "bfloat16",
        extra={"preset": preset, "seed": seed, "random_init": True},
    )
    ckpt.write_json(root / ckpt.POLICY_CONFIG, policy_cfg.to_dict())
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {
        "path": str(root),
        "preset": preset,
        "backbone": backbone_type,
        "backbone_params": n_backbone,
        "decoder_params": n_decoder,
        "embodiments": sorted(stats),
        "bytes": size,
        "seconds": time.perf_counter() - start,
        "tokens_per_image": spec.tokens_per_image,
    }
