"""A Qwen-VLA checkpoint is one directory.

Layout::

    CHECKPOINT/
      policy_config.json    format_version, backbone_type, cond_layer, decoder (DecoderConfig),
                            image_size [height, width], dtype (the weights' dtype)
      backbone/             Hugging Face save_pretrained output: config.json + model weights
                            (model.safetensors), tokenizer (tokenizer.json, tokenizer_config.json,
                            chat_template.jinja) and preprocessor_config.json (image processor)
      decoder.safetensors   ActionDecoder state dict
      norm_stats.json       {embodiment name: {"state": NormStats, "action": NormStats}}

Every problem found on load is a :class:`~qvla_core.errors.CheckpointError`
naming the file and what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from qvla_core.embodiment import Embodiment, Normalization
from qvla_core.errors import CheckpointError, ConfigError
from qvla_core.model.action_decoder import ActionDecoder, DecoderConfig
from qvla_core.model.backbone import BACKBONE_TYPES

FORMAT_VERSION = 1
POLICY_CONFIG = "policy_config.json"
BACKBONE_DIR = "backbone"
DECODER_FILE = "decoder.safetensors"
NORM_STATS = "norm_stats.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class PolicyConfig:
    """Contents of ``policy_config.json``."""

    backbone_type: str
    decoder: DecoderConfig
    image_size: tuple[int, int] = (224, 224)
    cond_layer: int = -1
    dtype: str = "float32"
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "backbone_type": self.backbone_type,
            "cond_layer": self.cond_layer,
            "decoder": self.decoder.to_dict(),
            "image_size": list(self.image_size),
            "dtype": self.dtype,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = POLICY_CONFIG) -> PolicyConfig:
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: expected a JSON object, got {type(data).__name__}")
        required = ("format_version", "backbone_type", "decoder", "image_size")
        missing = [k for k in required if k not in data]
        if missing:
            raise CheckpointError(f"{source}: missing key(s) {missing}")
        known = {*required, "cond_layer", "dtype", "extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(known)}")
        if data["format_version"] != FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: format_version {data['format_version']!r} is not supported "
                f"(this qvla reads version {FORMAT_VERSION})"
            )
        backbone_type = data["backbone_type"]
        if backbone_type not in BACKBONE_TYPES:
            raise CheckpointError(
                f"{source}: unknown backbone_type {backbone_type!r}; supported: {', '.join(BACKBONE_TYPES)}"
            )
        size = data["image_size"]
        if not (
            isinstance(size, list)
            and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise CheckpointError(
                f"{source}: image_size must be [height, width] positive integers, got {size!r}"
            )
        cond_layer = data.get("cond_layer", -1)
        if not isinstance(cond_layer, int) or isinstance(cond_layer, bool):
            raise CheckpointError(f"{source}: cond_layer must be an integer, got {cond_layer!r}")
        dtype = data.get("dtype", "float32")
        if dtype not in DTYPES:
            raise CheckpointError(f"{source}: dtype {dtype!r} is not one of {sorted(DTYPES)}")
        if not isinstance(data["decoder"], dict):
            raise CheckpointError(f"{source}: decoder must be an object, got {data['decoder']!r}")
        try:
            decoder = DecoderConfig.from_dict(data["decoder"])
        except (ConfigError, TypeError) as exc:
            raise CheckpointError(f"{source}: decoder: {exc}") from exc
        extra = data.get("extra", {})
        return cls(
            backbone_type=backbone_type,
            decoder=decoder,
            image_size=(size[0], size[1]),
            cond_layer=cond_layer,
            dtype=dtype,
            extra=extra if isinstance(extra, dict) else {},
        )


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from exc


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def check_dir(path: str | Path) -> Path:
    """The checkpoint directory, with every required entry present."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint directory does not exist")
    for name in (POLICY_CONFIG, DECODER_FILE, NORM_STATS):
        if not (root / name).is_file():
            raise CheckpointError(
                f"{root / name}: missing file (a checkpoint needs {POLICY_CONFIG}, "
                f"{BACKBONE_DIR}/, {DECODER_FILE}, {NORM_STATS})"
            )
    if not (root / BACKBONE_DIR).is_dir():
        raise CheckpointError(f"{root / BACKBONE_DIR}: missing backbone directory")
    if not (root / BACKBONE_DIR / "config.json").is_file():
        raise CheckpointError(f"{root / BACKBONE_DIR / 'config.json'}: missing file")
    return root


def read_policy_config(root: Path) -> PolicyConfig:
    path = root / POLICY_CONFIG
    return PolicyConfig.from_dict(read_json(path), str(path))


def read_norm_stats(root: Path) -> dict[str, Normalization]:
    path = root / NORM_STATS
    data = read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path}: expected an object keyed by embodiment name, got {type(data).__name__}"
        )
    out: dict[str, Normalization] = {}
    for name, entry in data.items():
        try:
            out[name] = Normalization.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
            )
            raise CheckpointError(f"{path}: {name}: {problems}") from None
    return out


def write_norm_stats(root: Path, stats: dict[str, Normalization]) -> None:
    write_json(root / NORM_STATS, {k: v.model_dump(exclude_none=True) for k, v in sorted(stats.items())})


def check_embodiment(
    cfg: PolicyConfig, embodiment: Embodiment, stats: dict[str, Normalization], root: Path
) -> None:
    """The embodiment must fit the decoder, and the checkpoint's stats must fit the embodiment."""
    d = cfg.decoder
    e = embodiment
    if e.horizon > d.max_horizon:
        raise CheckpointError(
            f"{root / POLICY_CONFIG}: embodiment '{e.name}' horizon {e.horizon} exceeds the decoder's "
            f"max_horizon {d.max_horizon}"
        )
    if len(e.action) > d.action_width:
        raise CheckpointError(
            f"{root / POLICY_CONFIG}: embodiment '{e.name}' has {len(e.action)} action channels but the "
            f"decoder's action_width is {d.action_width}"
        )
    if len(e.state) > d.state_width:
        raise CheckpointError(
            f"{root / POLICY_CONFIG}: embodiment '{e.name}' has {len(e.state)} state channels but the "
            f"decoder's state_width is {d.state_width}"
        )
    if e.name in stats:
        for label, width in (("state", len(e.state)), ("action", len(e.action))):
            got = getattr(stats[e.name], label).width()
            if got != width:
                raise CheckpointError(
                    f"{root / NORM_STATS}: {e.name}.{label} has {got} values but the embodiment has "
                    f"{width} {label} channels"
                )


def load_decoder(root: Path, cfg: PolicyConfig) -> ActionDecoder:
    """Build the decoder from its config and load ``decoder.safetensors`` strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = root / DECODER_FILE
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


def save_decoder(root: Path, decoder: ActionDecoder) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in decoder.state_dict().items()}
    save_file(state, str(root / DECODER_FILE), metadata={"format": "pt"})
