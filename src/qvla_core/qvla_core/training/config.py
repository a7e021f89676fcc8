"""The training configuration (``train.yaml``): declared once here, validated on load.

Every key has a default, so an empty file (or none) is a valid configuration; an error names the
file, the key and the bad value, like the robot YAML. Command-line overrides (``--set
schedule.lr=1e-4``, ``--steps 2000``) are applied to the same dictionary before validation, so they
are checked the same way.

What trains (``train``):

* ``decoder`` -- the backbone is frozen; with ``features_cache`` its conditioning tokens are computed
  once per frame and reused (only when no image augmentation is on: augmented images change them);
* ``lora`` -- low-rank adapters on the backbone's language model (peft) + the whole decoder;
* ``all`` -- every weight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from qvla_core.embodiment import Strict, parse_model, read_yaml
from qvla_core.errors import ConfigError

TrainWhat = Literal["decoder", "lora", "all"]

DEFAULT_LORA_TARGETS = (
    # softmax attention (all three backbone types)
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    # Qwen3.5's Gated DeltaNet layers
    "in_proj_qkv",
    "in_proj_z",
    "out_proj",
    # MLPs
    "gate_proj",
    "up_proj",
    "down_proj",
)


class Schedule(Strict):
    """Optimisation: AdamW, linear warm-up then cosine decay, gradient clipping."""

    steps: int = Field(default=2000, ge=1, description="Optimizer steps in total.")
    batch_size: int = Field(default=16, ge=1, le=4096, description="Samples per step.")
    lr: float = Field(default=3e-4, gt=0, le=1.0, description="Peak learning rate of the decoder.")
    backbone_lr: float | None = Field(
        default=None, gt=0, le=1.0, description="Peak learning rate of backbone/LoRA weights; None = lr."
    )
    betas: tuple[float, float] = Field(default=(0.9, 0.95), description="AdamW betas.")
    weight_decay: float = Field(
        default=1e-4, ge=0, le=1.0, description="AdamW weight decay (matrices only; not biases, norms)."
    )
    warmup_steps: int = Field(default=100, ge=0, description="Linear warm-up from 0 to the peak rate.")
    min_lr_ratio: float = Field(
        default=0.05, ge=0, le=1.0, description="Cosine decay ends at this fraction of the peak rate."
    )
    grad_clip: float | None = Field(
        default=1.0, gt=0, description="Clip the global gradient norm to this; None = no clipping."
    )

    @model_validator(mode="after")
    def _betas_in_range(self) -> Schedule:
        """Each beta is in [0, 1)."""
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {list(self.betas)}")
        return self


class Lora(Strict):
    """LoRA adapters on the backbone's language model (``train: lora``)."""

    rank: int = Field(default=16, ge=1, le=1024, description="Adapter rank r.")
    alpha: float = Field(default=32.0, gt=0, description="Scaling alpha (the update is scaled by alpha/r).")
    dropout: float = Field(default=0.0, ge=0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        min_length=1,
        description="Linear layers of the language model to adapt, by name (those present are used).",
    )


class Augment(Strict):
    """Training-only image transforms, applied per camera at the model's image size."""

    crop_scale: float = Field(
        default=1.0, gt=0.5, le=1.0, description="Random crop keeps this fraction of each side (1 = off)."
    )
    shift: float = Field(
        default=0.0, ge=0, le=0.25, description="Random translation, fraction of the image size (0 = off)."
    )
    brightness: float = Field(default=0.0, ge=0, le=1.0, description="Colour jitter: brightness factor ±.")
    contrast: float = Field(default=0.0, ge=0, le=1.0, description="Colour jitter: contrast factor ±.")
    saturation: float = Field(default=0.0, ge=0, le=1.0, description="Colour jitter: saturation factor ±.")
    hue: float = Field(default=0.0, ge=0, le=0.5, description="Colour jitter: hue rotation ± (turns).")
    state_noise: float = Field(
        default=0.0,
        ge=0,
        le=2.0,
        description="Std of Gaussian noise on the normalised state (q01..q99 spans -1..1), so the policy "
        "cannot lean on proprioception alone (0 = off; does not affect the features cache).",
    )

    @property
    def enabled(self) -> bool:
        """Whether any image transform is on (state noise leaves the images, and their cache, alone)."""
        return (
            self.crop_scale < 1.0
            or self.shift > 0
            or self.brightness > 0
            or self.contrast > 0
            or self.saturation > 0
            or self.hue > 0
        )


class Validation(Strict):
    """Held-out episodes, evaluated every ``every_steps``."""

    episodes: int | list[int] = Field(
        default=1,
        description="Held out per dataset: a count (chosen with the seed) or a list of episode indexes.",
    )
    every_steps: int = Field(
        default=250, ge=1, description="Validate every this many steps (and at the end)."
    )
    max_frames: int = Field(
        default=256, ge=1, description="Validation loss over at most this many held-out frames."
    )
    action_samples: int = Field(
        default=32, ge=0, description="Held-out frames whose chunk is sampled for the action error (0 = off)."
    )
    action_steps: int = Field(
        default=10, ge=1, description="Action error over the chunk's first this many actions."
    )

    @model_validator(mode="after")
    def _episodes_valid(self) -> Validation:
        """A count is >= 0; a list has distinct indexes >= 0."""
        eps = self.episodes
        if isinstance(eps, int):
            if eps < 0:
                raise ValueError(f"episodes must be >= 0, got {eps}")
        elif any(e < 0 for e in eps) or len(set(eps)) != len(eps):
            raise ValueError(f"episodes must be distinct indexes >= 0, got {eps}")
        return self


class Checkpointing(Strict):
    """Checkpoints under OUT/checkpoints/step_N; OUT/latest points at the newest complete one."""

    every_steps: int = Field(default=500, ge=1, description="Save every this many steps (and at the end).")
    keep: int = Field(default=2, ge=1, description="Step checkpoints kept (older ones are deleted).")


class Data(Strict):
    """How samples reach the model."""

    frame_cache: bool = Field(
        default=True,
        description="Read every sample once, resized to the model's image size, into arrays on disk "
        "(cache_dir); each step is then an array slice. Off: read samples from the dataset every step.",
    )
    workers: int = Field(
        default=0, ge=0, le=64, description="DataLoader worker processes (0 = load in the training process)."
    )
    prefetch: int = Field(default=2, ge=1, le=64, description="Batches each worker loads ahead.")
    early_frames: int = Field(
        default=0,
        ge=0,
        description="Oversample the first this many frames of every episode (with early_weight): at the "
        "start of an episode the joint state is the same in every scene, so only these frames make the "
        "policy look where the object is (0 = off).",
    )
    early_weight: int = Field(
        default=1, ge=1, le=100, description="Each of those early frames is drawn this many times per epoch."
    )
    mix: dict[str, float] | None = Field(
        default=None,
        description="Share of the steps each embodiment's batches take, by embodiment name (e.g. "
        "{aloha: 0.5, vln_nav: 0.5}; normalised to sum 1; datasets of one embodiment split its share by "
        "size). None = every dataset in proportion to its frames, which lets a large dataset crowd out "
        "a small robot.",
    )

    @model_validator(mode="after")
    def _mix_positive(self) -> Data:
        if self.mix is not None and (not self.mix or min(self.mix.values()) <= 0):
            raise ValueError(f"mix needs a positive share for every embodiment it names, got {self.mix}")
        return self


class TrainConfig(Strict):
    """Everything about a training run except the model, the datasets and the robots."""

    train: TrainWhat = Field(default="decoder", description="What trains: decoder, lora or all.")
    features_cache: bool = Field(
        default=True,
        description="train: decoder without augmentation: compute the frozen backbone's conditioning "
        "once per frame and reuse it.",
    )
    features_cache_max_gb: float = Field(
        default=4.0, gt=0, description="Skip the features cache (with a log line) above this size."
    )
    schedule: Schedule = Field(default_factory=Schedule, description="Optimizer and learning-rate schedule.")
    lora: Lora = Field(default_factory=Lora, description="LoRA settings (train: lora).")
    augment: Augment = Field(default_factory=Augment, description="Image augmentation (training only).")
    validation: Validation = Field(default_factory=Validation, description="Held-out evaluation.")
    checkpoint: Checkpointing = Field(default_factory=Checkpointing, description="Checkpoint cadence.")
    data: Data = Field(default_factory=Data, description="Data loading.")
    seed: int = Field(
        default=0,
        ge=0,
        description="Seeds the episode split, the sampler, the noise, augmentation and new (LoRA) weights.",
    )
    device: str = Field(
        default="cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="Where training runs: cpu or cuda[:N]."
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="auto: bf16 autocast on CUDA, fp32 on a CPU; bfloat16: bf16 autocast anywhere; "
        "float32: no autocast. Trained weights stay fp32.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="torch CPU threads; None = 1 on a CPU (small ops do not split well, and a thread "
        "that waits for a busy core stalls every op), torch's default with CUDA.",
    )
    log_every: int = Field(default=10, ge=1, description="Write a log line every this many steps.")


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str = "--set") -> dict[str, Any]:
    """``["schedule.lr=1e-4", "train=all"]`` -> ``data`` with those keys set (values parsed as YAML)."""
    out: dict[str, Any] = _copy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: expected KEY=VALUE (e.g. schedule.lr=1e-4), got {item!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source} {key}: value {text!r} is not valid YAML: {exc}") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{source} {key}: {part} is not a section (got {child!r})")
            node = child
        node[parts[-1]] = value
    return out


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read ``path`` (None = all defaults), apply ``overrides``, validate."""
    data: dict[str, Any] = {}
    source = "train config"
    if path is not None:
        source = str(path)
        if Path(path).is_file() and not Path(path).read_text(encoding="utf-8").strip():
            data = {}
        else:
            data = read_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} (with overrides)"
    config: TrainConfig = parse_model(TrainConfig, data, source)
    return config


def dump_train_config(config: TrainConfig) -> str:
    """The resolved configuration as YAML (written into every run and checkpoint)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def reference_markdown() -> str:
    """The config keys as Markdown tables (docs/training.md embeds this; a test keeps it current)."""
    lines: list[str] = []
    sections: list[tuple[str, type[Strict]]] = [("(top level)", TrainConfig)]
    for name, field in TrainConfig.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Strict):
            sections.append((name, annotation))
    for title, model in sections:
        lines += [f"**{title}**", "", "| key | default | meaning |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if model is TrainConfig and isinstance(annotation, type) and issubclass(annotation, Strict):
                continue
            default = field.get_default(call_default_factory=True)
            shown = default if isinstance(default, int | float | str | type(None)) else list(default)
            lines.append(f"| `{name}` | `{shown}` | {field.description or ''} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown())
