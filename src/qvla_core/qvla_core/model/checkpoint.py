"""A Qwen-VLA checkpoint is one directory.

Layout::

    CHECKPOINT/
      policy_config.json    format_version, backbone_type, cond_layer, decoder (DecoderConfig),
                            image_size [height, width], dtype (the weights' dtype); optional:
                            backbone_path, backbone_adapter, training, extra
      backbone/             a Hugging Face model directory (model/pretrained.py): config.json,
                            weights (model.safetensors or shards + index), tokenizer files, chat
                            template, preprocessor_config.json. Or wherever ``backbone_path`` says
                            (relative to CHECKPOINT, or absolute): a multi-GB pretrained backbone
                            is referenced, not copied. ``backbone/`` may also be a symlink.
      backbone_lora/        optional (``backbone_adapter``): a peft LoRA adapter on that backbone
                            (adapter_config.json + adapter_model.safetensors), merged on load
      decoder.safetensors   ActionDecoder state dict
      norm_stats.json       {embodiment name: {"state": NormStats, "action": NormStats}}

``training`` is free-form provenance a trainer writes (command, dataset fingerprints, git commit);
``extra`` is free-form too; neither is interpreted. The optional keys are read in format version 1
(a plain checkpoint stays byte-identical to one an older qvla wrote and reads).

Checkpoints are written with :func:`write_atomically`: into a sibling temporary directory that is
renamed into place only when complete, so a crash or a full disk never leaves half a checkpoint.

:func:`read_checkpoint` reads a checkpoint's own files in one pass; model/loader.py checks them against
the backbone and the robot and loads the weights. Every problem found on load is a
:class:`~qvla_core.errors.CheckpointError` naming the file and what is wrong.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from qvla_core.embodiment import Normalization
from qvla_core.errors import CheckpointError, ConfigError
from qvla_core.model.action_decoder import ActionDecoder, DecoderConfig
from qvla_core.model.backbone_types import BACKBONE_TYPES
from qvla_core.model.device import DTYPES

FORMAT_VERSION = 1
POLICY_CONFIG = "policy_config.json"
BACKBONE_DIR = "backbone"
DECODER_FILE = "decoder.safetensors"
NORM_STATS = "norm_stats.json"
ADAPTER_DIR = "backbone_lora"


@dataclass(frozen=True)
class PolicyConfig:
    """Contents of ``policy_config.json``."""

    backbone_type: str
    decoder: DecoderConfig
    image_size: tuple[int, int] = (224, 224)
    cond_layer: int = -1
    dtype: str = "float32"
    format_version: int = FORMAT_VERSION
    backbone_path: str = BACKBONE_DIR
    backbone_adapter: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "backbone_type": self.backbone_type,
            "cond_layer": self.cond_layer,
            "decoder": self.decoder.to_dict(),
            "image_size": list(self.image_size),
            "dtype": self.dtype,
            **({"backbone_path": self.backbone_path} if self.backbone_path != BACKBONE_DIR else {}),
            **({"backbone_adapter": self.backbone_adapter} if self.backbone_adapter else {}),
            **({"training": self.training} if self.training else {}),
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
        known = {*required, "cond_layer", "dtype", "backbone_path", "backbone_adapter", "training", "extra"}
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
        for key in ("training", "extra"):
            if not isinstance(data.get(key, {}), dict):
                raise CheckpointError(f"{source}: {key} must be an object, got {data[key]!r}")
        backbone_path = data.get("backbone_path", BACKBONE_DIR)
        if not isinstance(backbone_path, str) or not backbone_path:
            raise CheckpointError(f"{source}: backbone_path must be a non-empty path, got {backbone_path!r}")
        adapter = data.get("backbone_adapter")
        if adapter is not None and (
            not isinstance(adapter, str) or not adapter or Path(adapter).is_absolute()
        ):
            raise CheckpointError(
                f"{source}: backbone_adapter must be a directory name inside the checkpoint, got {adapter!r}"
            )
        return cls(
            backbone_type=backbone_type,
            decoder=decoder,
            image_size=(size[0], size[1]),
            cond_layer=cond_layer,
            dtype=dtype,
            backbone_path=backbone_path,
            backbone_adapter=adapter,
            training=data.get("training", {}),
            extra=data.get("extra", {}),
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
    """The checkpoint directory, with every required file present (the backbone: :func:`backbone_dir`)."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint directory does not exist")
    for name in (POLICY_CONFIG, DECODER_FILE, NORM_STATS):
        if not (root / name).is_file():
            raise CheckpointError(
                f"{root / name}: missing file (a checkpoint needs {POLICY_CONFIG}, "
                f"{BACKBONE_DIR}/, {DECODER_FILE}, {NORM_STATS})"
            )
    return root


def backbone_dir(root: Path, cfg: PolicyConfig) -> Path:
    """Where the checkpoint's backbone is (``backbone_path``, relative to ``root`` or absolute)."""
    path = Path(cfg.backbone_path).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_dir():
        named = "" if cfg.backbone_path == BACKBONE_DIR else f" (backbone_path in {root / POLICY_CONFIG})"
        raise CheckpointError(f"{path}: missing backbone directory{named}")
    return path


def adapter_dir(root: Path, cfg: PolicyConfig) -> Path | None:
    """The LoRA adapter directory named by ``backbone_adapter``, or None."""
    if cfg.backbone_adapter is None:
        return None
    path = root / cfg.backbone_adapter
    if not path.is_dir():
        raise CheckpointError(
            f"{path}: missing adapter directory (backbone_adapter in {root / POLICY_CONFIG})"
        )
    return path


@contextmanager
def write_atomically(path: str | Path) -> Iterator[Path]:
    """Write a checkpoint directory into a temporary sibling of ``path``; rename it into place at the end.

    If the block fails (a full disk, a crash, Ctrl-C) the temporary directory is removed and whatever
    was at ``path`` before is left as it was. An existing ``path`` is replaced only once the new
    one is complete (moved aside, the new one renamed in, the old one removed).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield tmp
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            kept = "the previous checkpoint there is unchanged" if final.exists() else "nothing was written"
            raise CheckpointError(
                f"{final}: no space left on the device while saving the checkpoint; {kept}; free some space "
                "and save again"
            ) from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}") if final.exists() else None
    if old is not None:
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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


@dataclass(frozen=True)
class CheckpointDir:
    """A checkpoint directory as read by :func:`read_checkpoint`: its config, stats and where its
    backbone (and LoRA adapter) are. Nothing here is checked against the backbone (model/loader.py)."""

    root: Path
    config: PolicyConfig
    norm_stats: dict[str, Normalization]
    backbone_dir: Path
    adapter_dir: Path | None


def read_checkpoint(path: str | Path) -> CheckpointDir:
    """Every file of the checkpoint's own format, read and checked in one pass: the required files are
    there, ``policy_config.json`` and ``norm_stats.json`` are valid, the backbone and adapter
    directories they name exist."""
    root = check_dir(path)
    cfg = read_policy_config(root)
    stats = read_norm_stats(root)
    return CheckpointDir(root, cfg, stats, backbone_dir(root, cfg), adapter_dir(root, cfg))


def save_decoder(root: Path, decoder: ActionDecoder) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in decoder.state_dict().items()}
    save_file(state, str(root / DECODER_FILE), metadata={"format": "pt"})
