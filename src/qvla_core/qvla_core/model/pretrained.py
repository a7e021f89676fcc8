"""A Hugging Face Qwen-VL model directory: the files it must hold and what they must agree on.

This is what ``qvla-build-checkpoint --backbone-from DIR`` reads and what every checkpoint's
backbone directory is checked against on load, as published on the Hub for Qwen3.5-4B
(``qwen3_5``), Qwen3-VL-4B-Instruct (``qwen3_vl``) and Qwen2.5-VL-3B-Instruct (``qwen2_5_vl``),
and as ``save_pretrained`` writes it (docs/pretrained_backbones.md lists the keys matched):

* ``config.json`` -- ``model_type`` picks the backbone type; the text hidden size becomes the
  decoder's ``cond_dim``; ``vision_config`` patch / merge sizes; ``image_token_id``;
* weights -- ``model.safetensors.index.json`` with every shard it lists
  (``model-0000x-of-0000y.safetensors``), or one ``model.safetensors``;
* tokenizer -- ``tokenizer_config.json`` and ``tokenizer.json`` (or ``vocab.json`` + ``merges.txt``);
* chat template -- ``chat_template.jinja``, else ``chat_template.json`` (the processor's, which
  knows images), else the ``chat_template`` key of ``tokenizer_config.json``;
* image processor -- ``preprocessor_config.json`` (or the ``image_processor`` object of
  ``processor_config.json``): ``patch_size``, ``merge_size``, ``temporal_patch_size``,
  ``image_mean``, ``image_std`` and the pixel limits (``min_pixels``/``max_pixels`` or
  ``size.shortest_edge``/``size.longest_edge``).

``generation_config.json`` and ``video_preprocessor_config.json`` are not used (qvla neither
generates text nor reads video) and may be absent. Every problem is a CheckpointError naming the
file and the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qvla_core.errors import CheckpointError
from qvla_core.model.backbone_types import BACKBONE_TYPES, config_class

CONFIG = "config.json"
WEIGHTS_INDEX = "model.safetensors.index.json"
WEIGHTS_SINGLE = "model.safetensors"
TOKENIZER_CONFIG = "tokenizer_config.json"
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
IMAGE_CONFIGS = ("preprocessor_config.json", "processor_config.json")
UNUSED_FILES = ("generation_config.json", "video_preprocessor_config.json")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from exc


@dataclass(frozen=True)
class PixelLimits:
    """The release processor's pixel range per image (None where the file gives none)."""

    min_pixels: int | None
    max_pixels: int | None

    def problem(self, height: int, width: int) -> str | None:
        """Why ``height x width`` lies outside what the release's own processor produces, if it does."""
        pixels = height * width
        if self.min_pixels is not None and pixels < self.min_pixels:
            return f"{height}x{width} = {pixels} pixels is below the release's minimum {self.min_pixels}"
        if self.max_pixels is not None and pixels > self.max_pixels:
            return f"{height}x{width} = {pixels} pixels is above the release's maximum {self.max_pixels}"
        return None


@dataclass(frozen=True)
class BackboneFiles:
    """A checked backbone directory: what was found where."""

    root: Path
    model_type: str
    config: Any  # the transformers config object of config.json
    weight_files: tuple[Path, ...]
    image_settings: dict[str, Any]
    image_source: Path
    chat_template: str
    chat_template_source: str  # "FILE" or "FILE: key"
    pixel_limits: PixelLimits
    absent_unused: tuple[str, ...]
    # Read from config.json once, by inspect_backbone:
    hidden_size: int  # the text model's: the decoder's cond_dim
    vocab_size: int
    image_token_id: int
    dtype: str  # the weights' dtype as config.json states it ("bfloat16" for the releases)


def read_model_type(root: Path) -> str:
    """``model_type`` of ``root/config.json``, checked to be one qvla supports."""
    path = root / CONFIG
    return _model_type(_json(path), path)


def _model_type(raw: Any, path: Path) -> str:
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise CheckpointError(f"{path}: missing key 'model_type'")
    model_type = raw["model_type"]
    if model_type not in BACKBONE_TYPES:
        raise CheckpointError(
            f"{path}: model_type: unknown backbone type {model_type!r}; "
            f"supported: {', '.join(BACKBONE_TYPES)}"
        )
    return str(model_type)


def _weight_files(root: Path) -> tuple[Path, ...]:
    index = root / WEIGHTS_INDEX
    if index.is_file():
        data = _json(index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: missing or empty key 'weight_map'")
        shards = sorted(set(weight_map.values()))
        for name in shards:
            if not (root / name).is_file():
                raise CheckpointError(f"{root / name}: missing file (listed in {WEIGHTS_INDEX} weight_map)")
        return tuple(root / name for name in shards)
    if (root / WEIGHTS_SINGLE).is_file():
        return (root / WEIGHTS_SINGLE,)
    raise CheckpointError(
        f"{root}: no weights: expected {WEIGHTS_INDEX} with its model-0000x-of-0000y.safetensors shards, "
        f"or {WEIGHTS_SINGLE}"
    )


def _check_tokenizer_files(root: Path) -> None:
    if not (root / TOKENIZER_CONFIG).is_file():
        raise CheckpointError(f"{root / TOKENIZER_CONFIG}: missing file")
    if not (root / "tokenizer.json").is_file() and not (
        (root / "vocab.json").is_file() and (root / "merges.txt").is_file()
    ):
        raise CheckpointError(f"{root / 'tokenizer.json'}: missing file (nor vocab.json + merges.txt)")


def _chat_template(root: Path) -> tuple[str, str]:
    jinja = root / TEMPLATE_FILES[0]
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8"), str(jinja)
    as_json = root / TEMPLATE_FILES[1]
    if as_json.is_file():
        data = _json(as_json)
        if not isinstance(data, dict) or not isinstance(data.get("chat_template"), str):
            raise CheckpointError(f"{as_json}: missing key 'chat_template'")
        return data["chat_template"], f"{as_json}: chat_template"
    data = _json(root / TOKENIZER_CONFIG)
    template = data.get("chat_template") if isinstance(data, dict) else None
    if isinstance(template, str) and template:
        return template, f"{root / TOKENIZER_CONFIG}: chat_template"
    raise CheckpointError(
        f"{root}: no chat template (looked for {TEMPLATE_FILES[0]}, {TEMPLATE_FILES[1]} and the "
        f"chat_template key of {TOKENIZER_CONFIG})"
    )


def _image_settings(root: Path) -> tuple[dict[str, Any], Path]:
    pre = root / IMAGE_CONFIGS[0]
    if pre.is_file():
        data = _json(pre)
        if not isinstance(data, dict):
            raise CheckpointError(f"{pre}: expected a JSON object")
        return data, pre
    proc = root / IMAGE_CONFIGS[1]
    if proc.is_file():
        data = _json(proc)
        image = data.get("image_processor") if isinstance(data, dict) else None
        if not isinstance(image, dict):
            raise CheckpointError(f"{proc}: missing key 'image_processor'")
        return image, proc
    raise CheckpointError(f"{pre}: missing file (the image processor's patch/merge sizes, mean/std)")


def _pixel_limits(settings: dict[str, Any]) -> PixelLimits:
    raw_size = settings.get("size")
    size: dict[str, Any] = raw_size if isinstance(raw_size, dict) else {}
    low = settings.get("min_pixels", size.get("shortest_edge"))
    high = settings.get("max_pixels", size.get("longest_edge"))
    return PixelLimits(int(low) if low is not None else None, int(high) if high is not None else None)


def _check_geometry(files_root: Path, settings: dict[str, Any], source: Path, vision: Any) -> None:
    if "patch_size" not in settings:
        raise CheckpointError(f"{source}: missing key 'patch_size'")
    pairs = (
        ("patch_size", "patch_size"),
        ("merge_size", "spatial_merge_size"),
        ("temporal_patch_size", "temporal_patch_size"),
    )
    for key, vision_key in pairs:
        have = settings.get(key, 2)
        if not isinstance(have, int) or isinstance(have, bool) or have <= 0:
            raise CheckpointError(f"{source}: {key} must be a positive integer, got {have!r}")
        want = getattr(vision, vision_key)
        if have != int(want):
            raise CheckpointError(
                f"{source}: {key} {have} does not match {files_root / CONFIG} "
                f"vision_config.{vision_key} {want}"
            )


def inspect_backbone(path: str | Path, *, need_weights: bool = True) -> BackboneFiles:
    """Check a backbone directory (see the module docstring) and return what it holds."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory (expected a Hugging Face model directory)")
    raw = _json(root / CONFIG)
    model_type = _model_type(raw, root / CONFIG)
    dtype = str(raw.get("dtype") or raw.get("torch_dtype") or "float32")
    try:
        config = config_class(model_type).from_dict(raw)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{root / CONFIG}: not a valid {model_type} config: {exc}") from exc
    weights = _weight_files(root) if need_weights else ()
    _check_tokenizer_files(root)
    template, template_source = _chat_template(root)
    settings, source = _image_settings(root)
    _check_geometry(root, settings, source, config.vision_config)
    return BackboneFiles(
        root=root,
        model_type=model_type,
        config=config,
        weight_files=weights,
        image_settings=settings,
        image_source=source,
        chat_template=template,
        chat_template_source=template_source,
        pixel_limits=_pixel_limits(settings),
        absent_unused=tuple(n for n in UNUSED_FILES if not (root / n).is_file()),
        hidden_size=int(config.text_config.hidden_size),
        vocab_size=int(config.text_config.vocab_size),
        image_token_id=int(config.image_token_id),
        dtype=dtype,
    )
