"""Checkpoint directory -> validated parts, in one place (like transformers' ``from_pretrained``).

:func:`load_checkpoint` reads and checks in this order, cheapest first, so a bad checkpoint fails
before gigabytes of weights are read:

1. the device and dtype (model/device.py: CUDA there, dtype runnable on it);
2. the directory's files, ``policy_config.json``, ``norm_stats.json``; the embodiment fits the
   decoder and its stats;
3. the backbone directory (``backbone_path``) against model/pretrained.py: config.json, weights,
   tokenizer, chat template, image processor; then the cross-checks between the parts:
   ``backbone_type`` == ``model_type``, ``decoder.cond_dim`` == the text hidden size, patch/merge
   sizes (checked in pretrained.py), the tokenizer's image token id == the model's, and the chat
   template renders one image placeholder per camera frame of this embodiment;
4. the weights: backbone (+ LoRA adapter merged, ``backbone_adapter``) and decoder, straight onto
   the device; an out-of-memory becomes a DeviceError saying what to try.

Every way of getting a checkpoint (``qvla-build-checkpoint``, ``--backbone-from``, a training
run's output) ends here; :meth:`QwenVLAPolicy.from_checkpoint` assembles the policy from the parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qvla_core.embodiment import Embodiment, Normalization
from qvla_core.errors import CheckpointError
from qvla_core.model import checkpoint as ckpt
from qvla_core.model.action_decoder import ActionDecoder
from qvla_core.model.backbone import Backbone
from qvla_core.model.device import LOAD_ADVICE, Placement, oom_as_error, resolve_placement
from qvla_core.model.normalization import EmbodimentNormalizer, resolve_normalization
from qvla_core.model.pretrained import BackboneFiles, inspect_backbone
from qvla_core.model.processor import QwenVLAProcessor


@dataclass
class CheckpointParts:
    """Everything a checkpoint holds, loaded and checked against each other and one embodiment."""

    root: Path
    config: ckpt.PolicyConfig
    norm_stats: dict[str, Normalization]
    normalizer: EmbodimentNormalizer
    backbone_files: BackboneFiles
    adapter: Path | None
    processor: QwenVLAProcessor
    backbone: Backbone
    decoder: ActionDecoder
    placement: Placement


@dataclass
class CheckedCheckpoint:
    """Steps 1-3 of :func:`load_checkpoint`: everything but the weights."""

    root: Path
    config: ckpt.PolicyConfig
    norm_stats: dict[str, Normalization]
    normalizer: EmbodimentNormalizer
    backbone_files: BackboneFiles
    adapter: Path | None
    processor: QwenVLAProcessor
    placement: Placement


def check_checkpoint(
    path: str | Path, embodiment: Embodiment, placement: Placement, *, need_weights: bool = True
) -> CheckedCheckpoint:
    """Read and cross-check a checkpoint's configs, stats, tokenizer and template (no weights loaded)."""
    root = ckpt.check_dir(path)
    cfg = ckpt.read_policy_config(root)
    stats = ckpt.read_norm_stats(root)
    ckpt.check_embodiment(cfg, embodiment, stats, root)
    normalizer = resolve_normalization(embodiment, stats, root / ckpt.NORM_STATS)
    files = inspect_backbone(ckpt.backbone_dir(root, cfg), need_weights=need_weights)
    adapter = ckpt.adapter_dir(root, cfg)
    config_file = files.root / "config.json"
    if files.model_type != cfg.backbone_type:
        raise CheckpointError(
            f"{root / ckpt.POLICY_CONFIG}: backbone_type {cfg.backbone_type!r} but {config_file} has "
            f"model_type {files.model_type!r}"
        )
    if cfg.decoder.cond_dim != files.hidden_size:
        raise CheckpointError(
            f"{root / ckpt.POLICY_CONFIG}: decoder.cond_dim {cfg.decoder.cond_dim} != backbone hidden "
            f"size {files.hidden_size} ({config_file}): the decoder was built for another backbone"
        )
    n_layers = int(files.config.text_config.num_hidden_layers)
    if not -1 <= cfg.cond_layer <= n_layers:
        raise CheckpointError(
            f"{root / ckpt.POLICY_CONFIG}: conditioning layer {cfg.cond_layer} out of range: the backbone "
            f"has {n_layers} layers (use -1 for the last layer after the final norm, 0 for the embeddings, "
            f"1..{n_layers})"
        )
    processor = QwenVLAProcessor.from_backbone(files, cfg.image_size)
    _check_template(processor, embodiment, files)
    return CheckedCheckpoint(root, cfg, stats, normalizer, files, adapter, processor, placement)


def _check_template(processor: QwenVLAProcessor, embodiment: Embodiment, files: BackboneFiles) -> None:
    try:
        processor.prompt_ids(embodiment, "check the chat template")
    except (CheckpointError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"{files.chat_template_source}: the chat template cannot render the prompt: {exc}"
        ) from exc


def load_checkpoint(
    path: str | Path,
    embodiment: Embodiment,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    placement: Placement | None = None,
) -> CheckpointParts:
    """Load and validate a checkpoint directory for one embodiment (see the module docstring)."""
    placement = placement or resolve_placement(device, dtype)
    checked = check_checkpoint(path, embodiment, placement)
    backbone = Backbone.from_pretrained(
        checked.backbone_files.root,
        cond_layer=checked.config.cond_layer,
        placement=placement,
        attn_implementation=attn_implementation,
        adapter=checked.adapter,
    )
    decoder = ckpt.load_decoder(checked.root, checked.config)
    need = sum(p.numel() for p in decoder.parameters()) * placement.dtype.itemsize
    with oom_as_error(placement, "moving the action decoder onto the device", LOAD_ADVICE, need):
        decoder.to(device=placement.device, dtype=placement.dtype).eval()
    return CheckpointParts(
        root=checked.root,
        config=checked.config,
        norm_stats=checked.norm_stats,
        normalizer=checked.normalizer,
        backbone_files=checked.backbone_files,
        adapter=checked.adapter,
        processor=checked.processor,
        backbone=backbone,
        decoder=decoder,
        placement=placement,
    )
