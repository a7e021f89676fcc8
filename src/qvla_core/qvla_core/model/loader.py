"""Checkpoint directory -> validated parts, in one place (like transformers' ``from_pretrained``).

:func:`load_checkpoint` = :func:`check_checkpoint` then :func:`load_weights`. It reads and checks in
this order, cheapest first, so a bad checkpoint fails before gigabytes of weights are read:

1. the device and dtype (model/device.py: CUDA there, dtype runnable on it);
2. the checkpoint's own files in one pass (model/checkpoint.py :func:`~checkpoint.read_checkpoint`):
   ``policy_config.json``, ``norm_stats.json``, the backbone directory (``backbone_path``) and the
   LoRA adapter (``backbone_adapter``) exist; then the embodiment fits the decoder and its stats,
   and is one the checkpoint knows (:func:`known_embodiments`: those it was trained or built for;
   only ``qvla-train``, which teaches it a new one, passes ``new_embodiment=True``);
3. the backbone directory (:func:`open_backbone`): its files against model/pretrained.py
   (config.json, weights, tokenizer, chat template, image processor; patch/merge sizes), the
   cross-checks with the checkpoint (``backbone_type`` == ``model_type``, ``decoder.cond_dim`` ==
   the text hidden size, ``cond_layer`` within the layers), then the processor (model/processor.py):
   the tokenizer's image token id == the model's, the chat template renders one image placeholder
   per camera frame of the embodiment;
4. the weights (:func:`load_weights`): backbone (+ LoRA adapter merged) and decoder
   (``decoder.safetensors`` strictly against the decoder config), straight onto the device; an
   out-of-memory becomes a DeviceError saying what to try.

Every way of getting a checkpoint ends here: inference and the policy node
(:meth:`QwenVLAPolicy.from_checkpoint` assembles the policy from the parts), ``qvla-train`` (its input
checkpoint, and ``--resume`` reading the run's latest one), and ``qvla-build-checkpoint
--backbone-from DIR`` (step 3 on the pretrained directory, before the checkpoint is written). A new
source of checkpoints adds a caller, not another copy of these checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
class CheckedCheckpoint:
    """Steps 1-3 of :func:`load_checkpoint`: everything but the weights, checked for one embodiment."""

    root: Path
    config: ckpt.PolicyConfig
    norm_stats: dict[str, Normalization]
    normalizer: EmbodimentNormalizer
    backbone_files: BackboneFiles
    adapter: Path | None
    processor: QwenVLAProcessor
    placement: Placement
    # The directory whose files hold the backbone's weights as loaded, or None when a LoRA adapter is
    # merged on load (the weights are then not the files' any more). Saving by reference or by links
    # (model/saving.py) and a training run's step checkpoints (training/session.py) point here.
    backbone_source: Path | None


@dataclass
class CheckpointParts(CheckedCheckpoint):
    """Everything a checkpoint holds, loaded and checked against each other and one embodiment."""

    backbone: Backbone
    decoder: ActionDecoder


def check_checkpoint(
    path: str | Path,
    embodiment: Embodiment,
    placement: Placement,
    *,
    need_weights: bool = True,
    new_embodiment: bool = False,
) -> CheckedCheckpoint:
    """Read and cross-check a checkpoint's configs, stats, tokenizer and template (no weights loaded).
    ``new_embodiment``: accept an embodiment the checkpoint does not know (training on a new robot)."""
    found = ckpt.read_checkpoint(path)
    root, cfg = found.root, found.config
    if not new_embodiment:
        check_known_embodiment(cfg, embodiment, found.norm_stats, root)
    check_embodiment(cfg, embodiment, found.norm_stats, root)
    normalizer = resolve_normalization(embodiment, found.norm_stats, root / ckpt.NORM_STATS)
    files, processor = open_backbone(
        found.backbone_dir,
        cfg.image_size,
        (embodiment,),
        need_weights=need_weights,
        fits=lambda files: _check_fit(root, cfg, files),
    )
    adapter = found.adapter_dir
    source = None if adapter is not None else files.root.resolve()
    return CheckedCheckpoint(
        root, cfg, found.norm_stats, normalizer, files, adapter, processor, placement, source
    )


def open_backbone(
    path: Path,
    image_size: tuple[int, int],
    embodiments: Sequence[Embodiment],
    *,
    need_weights: bool = True,
    fits: Callable[[BackboneFiles], None] | None = None,
) -> tuple[BackboneFiles, QwenVLAProcessor]:
    """Step 3: a backbone directory's files, then ``fits`` (the caller's cross-checks against them),
    then its processor at ``image_size`` with the tokenizer and chat template checked for
    ``embodiments``. A checkpoint's backbone and a ``--backbone-from`` directory both go through it."""
    files = inspect_backbone(path, need_weights=need_weights)
    if fits is not None:
        fits(files)
    return files, QwenVLAProcessor.from_backbone(files, image_size, embodiments)


def _check_fit(root: Path, cfg: ckpt.PolicyConfig, files: BackboneFiles) -> None:
    """The checkpoint's config was written for this backbone: type, width, layer count."""
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


def known_embodiments(cfg: ckpt.PolicyConfig, stats: dict[str, Normalization]) -> tuple[list[str], str]:
    """The robots a checkpoint drives and the file that says so: those its training run learned
    (``training.datasets`` of policy_config.json, written by qvla-train), else those it was built
    for (norm_stats.json)."""
    trained = {
        str(d["embodiment"])
        for d in cfg.training.get("datasets", [])
        if isinstance(d, dict) and d.get("embodiment")
    }
    if trained:
        return sorted(trained), ckpt.POLICY_CONFIG + " training.datasets"
    return sorted(stats), ckpt.NORM_STATS


def check_known_embodiment(
    cfg: ckpt.PolicyConfig, embodiment: Embodiment, stats: dict[str, Normalization], root: Path
) -> None:
    """A checkpoint drives only the robots it knows (:func:`known_embodiments`): for any other, the
    prompt would describe a robot the model has never seen, and its actions would be denormalised
    with statistics of no robot's data. A checkpoint that names none (no training record, no stats:
    an external or hand-assembled one) takes the robot YAML's embodiment.normalization instead."""
    known, source = known_embodiments(cfg, stats)
    if known and embodiment.name not in known:
        raise CheckpointError(
            f"{root / source}: the robot YAML's embodiment '{embodiment.name}' is not one this "
            f"checkpoint was trained or built for ({', '.join(repr(n) for n in known)}). Use the robot "
            "YAML it was trained with (embodiment.name must match), or train it for this robot with "
            "qvla-train --checkpoint ... --dataset ... --robot YOUR.yaml"
        )


def check_embodiment(
    cfg: ckpt.PolicyConfig, embodiment: Embodiment, stats: dict[str, Normalization], root: Path
) -> None:
    """The embodiment must fit the decoder, and the checkpoint's stats must fit the embodiment."""
    d = cfg.decoder
    e = embodiment
    config_file = root / ckpt.POLICY_CONFIG
    if e.horizon > d.max_horizon:
        raise CheckpointError(
            f"{config_file}: embodiment '{e.name}' horizon {e.horizon} exceeds the decoder's "
            f"max_horizon {d.max_horizon}"
        )
    if len(e.action) > d.action_width:
        raise CheckpointError(
            f"{config_file}: embodiment '{e.name}' has {len(e.action)} action channels but the "
            f"decoder's action_width is {d.action_width}"
        )
    if len(e.state) > d.state_width:
        raise CheckpointError(
            f"{config_file}: embodiment '{e.name}' has {len(e.state)} state channels but the "
            f"decoder's state_width is {d.state_width}"
        )
    if e.name in stats:
        for label, width in (("state", len(e.state)), ("action", len(e.action))):
            got = getattr(stats[e.name], label).width()
            if got != width:
                raise CheckpointError(
                    f"{root / ckpt.NORM_STATS}: {e.name}.{label} has {got} values but the embodiment has "
                    f"{width} {label} channels"
                )


def load_weights(checked: CheckedCheckpoint, *, attn_implementation: str = "sdpa") -> CheckpointParts:
    """Step 4: the backbone's and the decoder's weights, onto the checked placement."""
    placement = checked.placement
    backbone = Backbone.from_pretrained(
        checked.backbone_files.root,
        cond_layer=checked.config.cond_layer,
        placement=placement,
        attn_implementation=attn_implementation,
        adapter=checked.adapter,
        model_type=checked.backbone_files.model_type,
    )
    decoder = _load_decoder(checked.root, checked.config)
    need = sum(p.numel() for p in decoder.parameters()) * placement.dtype.itemsize
    with oom_as_error(placement, "moving the action decoder onto the device", LOAD_ADVICE, need):
        decoder.to(device=placement.device, dtype=placement.dtype).eval()
    fields = {name: getattr(checked, name) for name in CheckedCheckpoint.__dataclass_fields__}
    return CheckpointParts(**fields, backbone=backbone, decoder=decoder)


def _load_decoder(root: Path, cfg: ckpt.PolicyConfig) -> ActionDecoder:
    """Build the decoder from its config and load ``decoder.safetensors`` strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = root / ckpt.DECODER_FILE
    try:
        weights = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: cannot read safetensors: {exc}") from exc
    decoder = ActionDecoder(cfg.decoder)
    expected = decoder.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the decoder config: missing keys {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}"
        )
    for key, tensor in expected.items():
        if tuple(weights[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: shape mismatch for '{key}': file has {tuple(weights[key].shape)}, "
                f"the decoder config needs {tuple(tensor.shape)}"
            )
    decoder.load_state_dict(weights, strict=True)
    return decoder


def load_checkpoint(
    path: str | Path,
    embodiment: Embodiment,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    placement: Placement | None = None,
    new_embodiment: bool = False,
) -> CheckpointParts:
    """Load and validate a checkpoint directory for one embodiment (see the module docstring)."""
    placement = placement or resolve_placement(device, dtype)
    return load_weights(
        check_checkpoint(path, embodiment, placement, new_embodiment=new_embodiment),
        attn_implementation=attn_implementation,
    )
