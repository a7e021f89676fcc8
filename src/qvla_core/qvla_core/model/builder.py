"""Build Qwen-VLA checkpoints locally (no model hub): random ones, or on a pretrained Qwen VLM.

``tiny``: a ~0.2M-parameter VLM of the chosen type + the tiny DiT decoder, with a
byte-level BPE tokenizer trained on the robot YAMLs' words and typical
instructions; seconds to build, for tests and the demo.

``small``: the tiny text model with a wider vision tower (hidden 64) and a 4-block DiT of width 128
(~2.2M parameters in all): a policy that trains from scratch on a CPU in well under an hour, as the
learned TransferCube demo does (docs/bench/learned_policy.md).

``small_conv``: ``small`` with a small convolutional vision stem (model/vision_stem.py, GroupNorm,
stride 32, one token per merged patch) in place of the vision tower: vision learned from scratch
finds a small object much sooner than with a ViT (docs/bench/learned_policy.md). Same text model
and decoder as ``small``; the stem is recorded as ``vision_config.qvla_stem`` in ``config.json``.

``full``: the published backbone shapes (Qwen3.5-4B / Qwen3-VL-4B / Qwen2.5-VL-3B)
+ the 1.15B DiT decoder (cond_dim set to the backbone's hidden size), random
weights in bfloat16, for GPU latency benchmarks. Building on a CPU is slow and
needs ~12 GB of RAM (the tokenizer stays the tiny one; the vocabulary keeps the
release's size).

``backbone_from=DIR``: a Hugging Face directory of a real Qwen VLM (model/pretrained.py says
what it must hold). The checkpoint keeps that model's own tokenizer, special-token ids, chat
template, image mean/std and patch sizes; the decoder (``preset``'s shape, random weights) gets
``cond_dim`` from the backbone. ``backbone_mode``: ``"reference"`` (default) writes DIR's
absolute path as ``backbone_path`` (the multi-GB weights stay where they are), ``"link"`` makes
``backbone/`` a symlink to DIR, ``"copy"`` copies DIR's files into ``backbone/``.

In every case the decoder's padded widths and ``max_horizon`` are the preset's, grown to fit the
largest embodiment (or as given). ``weights=False`` writes everything except the weight files and
counts the parameters on the meta device (no memory, no time): a shape inspection; such a
directory does not load. The directory is written atomically (model/checkpoint.py).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from qvla_core.embodiment import Embodiment, Normalization
from qvla_core.errors import CheckpointError, NormalizationError
from qvla_core.model import checkpoint as ckpt
from qvla_core.model.action_decoder import DECODER_PRESETS, ActionDecoder, DecoderConfig
from qvla_core.model.backbone import quiet_hf, text_hidden_size
from qvla_core.model.backbone_configs import build_random_backbone, full_config, tiny_config
from qvla_core.model.backbone_types import BACKBONE_TYPES, model_class
from qvla_core.model.device import DTYPES
from qvla_core.model.loader import open_backbone
from qvla_core.model.normalization import stats_from_limits
from qvla_core.model.pretrained import BackboneFiles
from qvla_core.model.processor import CLIP_MEAN, CLIP_STD, HALF, ImageSpec, QwenVLAProcessor
from qvla_core.model.prompt import frame_label, system_text
from qvla_core.model.tokenizer import SPECIAL_TOKENS, corpus_from_texts, train_tokenizer
from qvla_core.model.vision_stem import STEM_KEY, install_stem, stem_for

PRESETS = ("tiny", "small", "small_conv", "full")
BACKBONE_MODES = ("reference", "link", "copy")


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


def decoder_config(
    preset: str,
    cond_dim: int,
    embodiments: Sequence[Embodiment],
    *,
    action_width: int | None = None,
    max_horizon: int | None = None,
) -> DecoderConfig:
    """The preset's decoder on a backbone of width ``cond_dim``, wide and long enough for ``embodiments``."""
    base = DECODER_PRESETS[preset]
    need_action = max((len(e.action) for e in embodiments), default=0)
    need_state = max((len(e.state) for e in embodiments), default=0)
    need_horizon = max((e.horizon for e in embodiments), default=0)
    width = action_width or max(base.action_width, need_action)
    horizon = max_horizon or max(base.max_horizon, need_horizon)
    for e in embodiments:
        if len(e.action) > width or e.horizon > horizon:
            raise CheckpointError(
                f"embodiment '{e.name}' ({len(e.action)} action channels, horizon {e.horizon}) does not fit "
                f"action_width {width} / max_horizon {horizon}"
            )
    return replace(
        base,
        cond_dim=cond_dim,
        action_width=width,
        state_width=max(base.state_width, need_state),
        max_horizon=horizon,
    )


def count_parameters(config: Any) -> int:
    """Parameters of the ``...ForConditionalGeneration`` a config describes (built on the meta device)."""
    with torch.device("meta"):
        model = model_class(config.model_type)._from_config(config)
    return sum(p.numel() for p in model.parameters())


def _decoder_weights(
    root: Path, cfg: DecoderConfig, dtype: torch.dtype, seed: int, device: str, randomize_head: bool
) -> int:
    torch.manual_seed(seed + 1)
    with torch.device(device):
        decoder = ActionDecoder(cfg).to(dtype)
    if randomize_head:
        with torch.no_grad():
            for param in decoder.parameters():
                if not bool(param.any()):
                    param.normal_(0.0, 0.05)
    ckpt.save_decoder(root, decoder)
    return decoder.num_parameters()


def _decoder_count(cfg: DecoderConfig) -> int:
    with torch.device("meta"):
        return ActionDecoder(cfg).num_parameters()


def build_checkpoint(
    out: str | Path,
    *,
    preset: str = "tiny",
    backbone_type: str | None = "qwen3_vl",
    embodiments: Sequence[Embodiment] = (),
    stats_from_limits: bool = False,
    seed: int = 0,
    image_size: tuple[int, int] = (224, 224),
    weights: bool = True,
    instructions: Sequence[str] = (),
    randomize_head: bool = False,
    device: str = "cpu",
    backbone_from: str | Path | None = None,
    backbone_mode: str = "reference",
    action_width: int | None = None,
    max_horizon: int | None = None,
) -> dict[str, Any]:
    """Write a checkpoint directory; returns a summary (sizes, parameter counts, seconds, warnings).

    ``randomize_head``: the decoder is adaLN-Zero with a zero output layer, so an
    untrained one returns its input noise whatever it sees; this fills the
    zero-initialised tensors with small random values so the output depends on
    images, prompt and state (tests of conditioning, dtype, save/load).
    ``device``: where the random weights are drawn (``cuda`` makes the full preset quick).
    """
    if preset not in PRESETS:
        raise CheckpointError(f"unknown preset {preset!r}; choose from {PRESETS}")
    start = time.perf_counter()
    stats = norm_stats_for(embodiments, stats_from_limits)
    if backbone_from is not None:
        summary = _build_on_pretrained(
            Path(out), Path(backbone_from), backbone_type, backbone_mode, preset, embodiments, stats, seed,
            image_size, weights, randomize_head, device, action_width, max_horizon,
        )  # fmt: skip
    else:
        if backbone_type not in BACKBONE_TYPES:
            raise CheckpointError(f"unknown backbone {backbone_type!r}; choose from {BACKBONE_TYPES}")
        summary = _build_random(
            Path(out), preset, backbone_type, embodiments, stats, seed, image_size, weights, instructions,
            randomize_head, device, action_width, max_horizon,
        )  # fmt: skip
    root = Path(out)
    summary["bytes"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    summary["seconds"] = time.perf_counter() - start
    return summary


def _build_random(
    root: Path,
    preset: str,
    backbone_type: str,
    embodiments: Sequence[Embodiment],
    stats: dict[str, Normalization],
    seed: int,
    image_size: tuple[int, int],
    weights: bool,
    instructions: Sequence[str],
    randomize_head: bool,
    device: str,
    action_width: int | None,
    max_horizon: int | None,
) -> dict[str, Any]:
    texts: list[str] = list(instructions)
    for e in embodiments:
        texts.extend(embodiment_texts(e))
    tokenizer = train_tokenizer(corpus_from_texts(texts), vocab_size=1024)
    token_ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS}
    if preset in ("tiny", "small", "small_conv"):
        width = 64 if preset == "small" else 32
        config = tiny_config(backbone_type, len(tokenizer), token_ids, vision_width=width)
        dtype = torch.float32
    else:
        config = full_config(backbone_type, token_ids=token_ids)
        dtype = torch.bfloat16
    decoder_cfg = decoder_config(
        preset, text_hidden_size(config), embodiments, action_width=action_width, max_horizon=max_horizon
    )
    vision = config.vision_config
    clip = backbone_type == "qwen2_5_vl"
    spec = ImageSpec(
        height=image_size[0],
        width=image_size[1],
        patch_size=int(vision.patch_size),
        merge_size=int(vision.spatial_merge_size),
        temporal_patch_size=int(vision.temporal_patch_size),
        image_mean=CLIP_MEAN if clip else HALF,
        image_std=CLIP_STD if clip else HALF,
    )
    processor = QwenVLAProcessor(tokenizer, spec)
    with ckpt.write_atomically(root) as tmp:
        backbone_dir = tmp / ckpt.BACKBONE_DIR
        if weights:
            model = build_random_backbone(config, dtype=dtype, seed=seed, device=device)
            if preset == "small_conv":
                install_stem(model, stem_for(config))
            n_backbone = sum(p.numel() for p in model.parameters())
            with quiet_hf():
                model.save_pretrained(str(backbone_dir))
            del model
            n_decoder = _decoder_weights(tmp, decoder_cfg, dtype, seed, device, randomize_head)
        else:
            backbone_dir.mkdir(parents=True, exist_ok=True)
            if preset == "small_conv":  # the shape only (the count below is the vision tower's)
                setattr(config.vision_config, STEM_KEY, stem_for(config).to_dict())
            config.save_pretrained(str(backbone_dir))
            n_backbone, n_decoder = count_parameters(config), _decoder_count(decoder_cfg)
        processor.save_pretrained(backbone_dir)
        ckpt.write_norm_stats(tmp, stats)
        policy_cfg = ckpt.PolicyConfig(
            backbone_type=backbone_type,
            decoder=decoder_cfg,
            image_size=(image_size[0], image_size[1]),
            cond_layer=-1,
            dtype="float32" if dtype == torch.float32 else "bfloat16",
            extra={"preset": preset, "seed": seed, "random_init": True},
        )
        ckpt.write_json(tmp / ckpt.POLICY_CONFIG, policy_cfg.to_dict())
    return {
        "path": str(root),
        "preset": preset,
        "backbone": backbone_type,
        "backbone_params": n_backbone,
        "decoder_params": n_decoder,
        "embodiments": sorted(stats),
        "tokens_per_image": spec.tokens_per_image,
        "weights": weights,
        "warnings": [],
    }


def _build_on_pretrained(
    root: Path,
    source: Path,
    backbone_type: str | None,
    mode: str,
    preset: str,
    embodiments: Sequence[Embodiment],
    stats: dict[str, Normalization],
    seed: int,
    image_size: tuple[int, int],
    weights: bool,
    randomize_head: bool,
    device: str,
    action_width: int | None,
    max_horizon: int | None,
) -> dict[str, Any]:
    if mode not in BACKBONE_MODES:
        raise CheckpointError(f"unknown backbone mode {mode!r}; choose from {BACKBONE_MODES}")

    def fits(files: BackboneFiles) -> None:
        if backbone_type is not None and backbone_type != files.model_type:
            raise CheckpointError(
                f"{source / 'config.json'}: model_type {files.model_type!r} but --backbone {backbone_type!r} "
                "(leave --backbone out with --backbone-from)"
            )

    # The loader's backbone step: the model's own tokenizer and template must render our prompt.
    files, processor = open_backbone(source, image_size, embodiments, need_weights=weights, fits=fits)
    warnings = _pixel_warnings(files, image_size)
    decoder_cfg = decoder_config(
        preset, files.hidden_size, embodiments, action_width=action_width, max_horizon=max_horizon
    )
    dtype = torch.bfloat16 if preset == "full" else torch.float32
    with ckpt.write_atomically(root) as tmp:
        backbone_path = _place_backbone(files, mode, tmp)
        if weights:
            n_decoder = _decoder_weights(tmp, decoder_cfg, dtype, seed, device, randomize_head)
        else:
            n_decoder = _decoder_count(decoder_cfg)
        ckpt.write_norm_stats(tmp, stats)
        policy_cfg = ckpt.PolicyConfig(
            backbone_type=files.model_type,
            decoder=decoder_cfg,
            image_size=(image_size[0], image_size[1]),
            cond_layer=-1,
            dtype=files.dtype if files.dtype in DTYPES else "bfloat16",
            backbone_path=backbone_path,
            extra={
                "preset": preset,
                "seed": seed,
                "backbone_from": str(source.resolve()),
                "random_init": "decoder",
            },
        )
        ckpt.write_json(tmp / ckpt.POLICY_CONFIG, policy_cfg.to_dict())
    return {
        "path": str(root),
        "preset": preset,
        "backbone": files.model_type,
        "backbone_from": str(source.resolve()),
        "backbone_mode": mode,
        "backbone_params": count_parameters(files.config),
        "decoder_params": n_decoder,
        "cond_dim": files.hidden_size,
        "embodiments": sorted(stats),
        "tokens_per_image": processor.spec.tokens_per_image,
        "chat_template": files.chat_template_source,
        "weights": weights,
        "warnings": warnings,
    }


def _pixel_warnings(files: BackboneFiles, image_size: tuple[int, int]) -> list[str]:
    problem = files.pixel_limits.problem(*image_size)
    if problem is None:
        return []
    return [
        f"image_size {problem} ({files.image_source}): the release's own processor never feeds the model "
        "such images; fine-tuning adapts it, but consider --image-size within the range"
    ]


def _place_backbone(files: BackboneFiles, mode: str, tmp: Path) -> str:
    """Put the backbone where the checkpoint finds it; returns the ``backbone_path`` to record."""
    source = files.root.resolve()
    if mode == "reference":
        return str(source)
    target = tmp / ckpt.BACKBONE_DIR
    if mode == "link":
        os.symlink(source, target, target_is_directory=True)
    else:
        _copy_tree(source, target)
    return ckpt.BACKBONE_DIR


def _copy_tree(source: Path, target: Path) -> None:
    from tqdm import tqdm  # type: ignore[import-untyped]

    paths = [p for p in sorted(source.rglob("*")) if p.is_file()]
    total = sum(p.stat().st_size for p in paths)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"copying {source.name}", leave=False) as bar:
        for path in paths:
            dest = target / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
            bar.update(path.stat().st_size)
