"""Writing a policy as a checkpoint directory, with a choice of what happens to the backbone.

``backbone=`` modes of :meth:`QwenVLAPolicy.save`:

* ``"full"`` -- the backbone's weights are written (``save_pretrained``): for a fully fine-tuned
  backbone, or any time a self-contained checkpoint is wanted. LoRA adapters on it (peft) are
  merged into the written weights; the live model keeps them unmerged.
* ``"reference"`` -- nothing of the backbone is written; ``backbone_path`` names the directory it
  was loaded from (absolute, so the checkpoint can be moved). For an untouched pretrained backbone
  of several GB. Refused when the weights changed since loading.
* ``"link"`` -- that directory's files are hard-linked into ``backbone/`` (copied where links are
  impossible): self-contained, no extra space. Also what ``"reference"`` does when the source lies
  inside the directory being replaced.
* ``"adapter"`` -- only the LoRA adapter is written (``backbone_lora/``: ``adapter_config.json`` +
  ``adapter_model.safetensors``, peft's format), the base backbone referenced as above.

The directory is written by :func:`checkpoint.write_atomically`: complete or not at all.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from qvla_core.embodiment import Normalization
from qvla_core.errors import CheckpointError
from qvla_core.model import checkpoint as ckpt
from qvla_core.model.action_decoder import ActionDecoder
from qvla_core.model.backbone import Backbone, quiet_hf
from qvla_core.model.processor import QwenVLAProcessor

BACKBONE_MODES = ("full", "reference", "link", "adapter")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class SavablePolicy(Protocol):
    """What saving reads of a policy (:class:`~qvla_core.model.policy.QwenVLAPolicy` is one); named
    here so that this module does not import the policy that imports it."""

    backbone: Backbone
    decoder: ActionDecoder
    processor: QwenVLAProcessor
    config: ckpt.PolicyConfig
    norm_stats: dict[str, Normalization]
    # Where the backbone was loaded from, and its weights' version then (saving by reference needs both).
    backbone_source: Path | None
    backbone_loaded_version: int | None


def weights_version(module: nn.Module) -> int:
    """Sum of the base parameters' in-place version counters: changes whenever a weight is written
    (an optimizer step, a load); LoRA parameters are not base weights and are left out."""
    return sum(p._version for n, p in module.named_parameters() if "lora_" not in n)


def lora_adapter_name(model: nn.Module) -> str | None:
    """The name of the peft adapter injected into ``model`` (peft sets ``peft_config``), or None."""
    configs = getattr(model, "peft_config", None)
    if not configs:
        return None
    if len(configs) != 1:
        raise CheckpointError(
            f"the backbone carries {len(configs)} LoRA adapters {sorted(configs)}; save one"
        )
    return str(next(iter(configs)))


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file under ``src`` into ``dst`` (a copy where a link is impossible)."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path.resolve(), target)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise
            shutil.copy2(path, target)


def save_policy(policy: SavablePolicy, path: Path, mode: str) -> Path:
    """:meth:`QwenVLAPolicy.save` (see the module docstring)."""
    if mode not in BACKBONE_MODES:
        raise ValueError(f"backbone must be one of {BACKBONE_MODES}, got {mode!r}")
    model = policy.backbone.model
    adapter = lora_adapter_name(model)
    cfg = replace(policy.config, backbone_path=ckpt.BACKBONE_DIR, backbone_adapter=None)
    with ckpt.write_atomically(path) as tmp:
        if mode == "full":
            _write_full(policy, tmp / ckpt.BACKBONE_DIR, adapter)
        else:
            if mode == "adapter":
                if adapter is None:
                    raise CheckpointError(
                        "backbone='adapter' needs a LoRA adapter on the backbone (model/lora.py apply_lora)"
                    )
                _write_adapter(model, adapter, tmp / ckpt.ADAPTER_DIR)
                cfg = replace(cfg, backbone_adapter=ckpt.ADAPTER_DIR)
            elif adapter is not None:
                raise CheckpointError(
                    f"backbone={mode!r} would drop the LoRA adapter on the backbone; save with "
                    "backbone='adapter' (adapter only) or backbone='full' (merged weights)"
                )
            source = _unchanged_source(policy, mode)
            if mode == "link" or _inside(source, path):
                link_tree(source, tmp / ckpt.BACKBONE_DIR)
            else:
                cfg = replace(cfg, backbone_path=str(source))
        ckpt.save_decoder(tmp, policy.decoder)
        ckpt.write_norm_stats(tmp, policy.norm_stats)
        ckpt.write_json(tmp / ckpt.POLICY_CONFIG, cfg.to_dict())
    return path


def _unchanged_source(policy: SavablePolicy, mode: str) -> Path:
    source = policy.backbone_source
    if source is None or policy.backbone_loaded_version is None:
        raise CheckpointError(
            f"backbone={mode!r}: this policy's backbone was not loaded from a backbone directory as it is "
            "(built in memory, or a LoRA adapter was merged on load); save with backbone='full'"
        )
    if weights_version(policy.backbone) != policy.backbone_loaded_version:
        raise CheckpointError(
            f"backbone={mode!r}: the backbone's weights changed since they were loaded from {source}; save "
            "with backbone='full' (or 'adapter' for LoRA training)"
        )
    if not (source / "config.json").is_file():
        raise CheckpointError(f"{source / 'config.json'}: the backbone loaded from {source} is gone")
    return source


def _inside(source: Path, path: Path) -> bool:
    target = path.resolve()
    return source == target or target in source.parents


def _write_full(policy: SavablePolicy, directory: Path, adapter: str | None) -> None:
    model = policy.backbone.model
    with quiet_hf():
        if adapter is None:
            model.save_pretrained(str(directory))
        else:
            _save_merged(model, directory)
    policy.processor.save_pretrained(directory)


def _save_merged(model: Any, directory: Path) -> None:
    """Save LoRA-adapted weights merged, as a plain model directory; the live model stays unmerged."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.merge()
    try:
        state = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if "lora_" not in k}
        model.save_pretrained(str(directory), state_dict=state)
    finally:
        for layer in layers:
            layer.unmerge()


def _write_adapter(model: Any, adapter: str, directory: Path) -> None:
    """peft's adapter directory, as ``PeftModel.save_pretrained`` writes it, from the injected model."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    model.peft_config[adapter].save_pretrained(str(directory))
    state = get_peft_model_state_dict(model, adapter_name=adapter)
    # PeftModel keys its weights under base_model.model.<the model's own names>.
    weights = {f"base_model.model.{k}": v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(weights, str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
