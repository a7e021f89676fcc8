"""The backbone types qvla supports and the transformers classes that read each.

A backbone type is the ``model_type`` of a Hugging Face directory's ``config.json``. This table is
the one place that names them: model/pretrained.py checks a directory against it, model/backbone.py
loads the model class it names, model/backbone_configs.py builds random models of each.

A new backbone type: add its transformers class names here, its shapes to
model/backbone_configs.py (``tiny_config``, ``full_config``), and a release fixture to
tests/model/hf_release.py; nothing else names the types.
"""

from __future__ import annotations

from typing import Any, Literal

from qvla_core.errors import CheckpointError

BackboneType = Literal["qwen2_5_vl", "qwen3_vl", "qwen3_5"]
# model_type -> (the ...ForConditionalGeneration class, the config class) in transformers.
_CLASSES: dict[str, tuple[str, str]] = {
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLConfig"),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", "Qwen3VLConfig"),
    "qwen3_5": ("Qwen3_5ForConditionalGeneration", "Qwen3_5Config"),
}
BACKBONE_TYPES: tuple[str, ...] = tuple(_CLASSES)


def _transformers_class(backbone_type: str, which: int) -> Any:
    import transformers

    if backbone_type not in _CLASSES:
        raise CheckpointError(
            f"unknown backbone type {backbone_type!r}; supported: {', '.join(BACKBONE_TYPES)}"
        )
    return getattr(transformers, _CLASSES[backbone_type][which])


def model_class(backbone_type: str) -> Any:
    """The transformers ``...ForConditionalGeneration`` class of a backbone type."""
    return _transformers_class(backbone_type, 0)


def config_class(backbone_type: str) -> Any:
    """The transformers config class of a backbone type."""
    return _transformers_class(backbone_type, 1)
