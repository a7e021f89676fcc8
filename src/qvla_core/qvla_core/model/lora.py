"""LoRA adapters on the backbone's language model, with peft.

:func:`apply_lora` wraps the backbone's ``...ForConditionalGeneration`` with
``peft.get_peft_model``: the chosen linear layers of the language model (``model.language_model
.layers.N.*``) get low-rank adapters, and every base weight of the backbone (vision tower and
embeddings included) is frozen. peft replaces those layers inside the model object in place, so
:class:`~qvla_core.model.backbone.Backbone` runs unchanged (the shared-prefix forward included).

A checkpoint carries the adapter as ``backbone_lora/`` (``QwenVLAPolicy.save(backbone="adapter")``,
model/saving.py: peft's ``adapter_config.json`` + ``adapter_model.safetensors``) next to the
unchanged base backbone; the checkpoint loader applies it with ``PeftModel.from_pretrained`` and
merges it into the weights. :func:`load_adapter_weights` reads it back into a live adapted model
(``qvla-train --resume``).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from qvla_core.errors import CheckpointError
from qvla_core.model.backbone import Backbone

LANGUAGE_LAYERS = r"model\.language_model\.layers\.\d+\."


def target_regex(names: Sequence[str]) -> str:
    """A peft ``target_modules`` regex: the named linear layers inside the language model's layers."""
    alternatives = "|".join(re.escape(n) for n in names)
    return rf"^{LANGUAGE_LAYERS}(?:.*\.)?(?:{alternatives})$"


def matching_modules(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Names of the linear layers of ``model`` that :func:`target_regex` selects."""
    pattern = re.compile(target_regex(names))
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(n)]


def apply_lora(
    backbone: Backbone, *, rank: int, alpha: float, dropout: float, target_modules: Sequence[str]
) -> Any:
    """Add LoRA adapters to ``backbone`` in place and freeze its base weights; returns the
    ``PeftModel`` (keep it: it saves the adapter)."""
    from peft import LoraConfig, get_peft_model

    found = matching_modules(backbone.model, target_modules)
    if not found:
        raise CheckpointError(
            f"LoRA: none of the layers {list(target_modules)} exist in the {backbone.backbone_type} "
            "language model; check lora.target_modules"
        )
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int; floats are used as given
        lora_dropout=dropout,
        target_modules=target_regex(target_modules),
        bias="none",
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours to fix
        warnings.filterwarnings("ignore", category=FutureWarning)
        peft_model = get_peft_model(backbone.model, config)
    # The prefix memo keys on parameter versions; adapters are new parameters, so start clean.
    backbone.prefix_memo.clear()
    return peft_model


def lora_parameters(backbone: Backbone) -> list[nn.Parameter]:
    """The adapter weights (the backbone's only trainable parameters after :func:`apply_lora`)."""
    return [p for n, p in backbone.model.named_parameters() if "lora_" in n and p.requires_grad]


def load_adapter_weights(peft_model: Any, directory: Path) -> None:
    """Load saved adapter weights (``backbone_lora/``) into a model adapted the same way (``--resume``)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = directory / "adapter_model.safetensors"
    try:
        weights = load_file(str(path))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the LoRA adapter: {exc}") from exc
    result = set_peft_model_state_dict(peft_model, weights)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise CheckpointError(f"{path}: adapter weights do not fit the model: unexpected {unexpected[:5]}")
