"""Everything a run holds between steps, and how it is set up, resumed and saved.

Setting up, in order: check the output directory and every dataset against its robot YAML; compute
each embodiment's norm stats from its dataset; load the input checkpoint (its loader validates
backbone against decoder); one policy per embodiment sharing backbone and decoder
(``with_embodiment``); choose what trains (freeze, LoRA, or all); split episodes; read the frames
(cache); the frozen backbone's features (cache); AdamW and the schedule; and with ``--resume`` the
trained weights, optimizer, schedule, step and random states of ``OUT/latest``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qvla_core.embodiment import Embodiment, Normalization, NormStats
from qvla_core.errors import QvlaError, TrainingError
from qvla_core.logs import get_logger
from qvla_core.model import checkpoint as ckpt
from qvla_core.model import lora
from qvla_core.model.device import resolve_placement
from qvla_core.model.loader import check_checkpoint, load_checkpoint, load_weights
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.model.train import linear_patch_embed
from qvla_core.training import checkpoints as out_dir
from qvla_core.training.config import TrainConfig, dump_train_config
from qvla_core.training.datasets import DatasetSpec, check_source, frame_set, split_episodes
from qvla_core.training.evaluate import eval_rows
from qvla_core.training.features import FeatureStore, build_features, estimate_bytes
from qvla_core.training.frames import FrameSet
from qvla_core.training.logbook import Logbook
from qvla_core.training.optim import make_optimizer, make_scheduler
from qvla_core.training.provenance import git_commit, provenance
from qvla_core.training.stats import norm_stats_from_source

log = get_logger("qvla.train")


@dataclass
class RunSpec:
    """A training run: input checkpoint, datasets (each with its robot YAML), output, settings."""

    checkpoint: Path
    datasets: Sequence[DatasetSpec]
    out: Path
    config: TrainConfig
    resume: bool = False
    command: Sequence[str] = field(default_factory=lambda: list(sys.argv))
    cache_dir: Path | None = None
    progress: bool = True
    # Which device type decides the autocast default (None: the device's own); tests set "cuda" to
    # exercise the bf16 branch on a CPU.
    autocast_device_type: str | None = None


def autocast_dtype(setting: str, device_type: str) -> torch.dtype | None:
    """bf16 autocast on CUDA (``auto``) or wherever asked (``bfloat16``); none for fp32."""
    if setting == "bfloat16" or (setting == "auto" and device_type == "cuda"):
        return torch.bfloat16
    return None


def merge_stats(a: Normalization, b: Normalization) -> Normalization:
    """Two datasets of one embodiment: the wider of their quantile ranges, per channel."""

    def one(x: NormStats, y: NormStats) -> NormStats:
        assert x.q01 is not None and x.q99 is not None and y.q01 is not None and y.q99 is not None
        return NormStats(
            mode="quantile",
            q01=[min(p, q) for p, q in zip(x.q01, y.q01, strict=True)],
            q99=[max(p, q) for p, q in zip(x.q99, y.q99, strict=True)],
        )

    return Normalization(state=one(a.state, b.state), action=one(a.action, b.action))


def episode_ranges(episodes: Sequence[int]) -> str:
    """Episode indexes as runs of consecutive ones, e.g. ``0-46,48-96`` (``""`` for none)."""
    runs: list[list[int]] = []
    for ep in sorted(episodes):
        if runs and ep == runs[-1][1] + 1:
            runs[-1][1] = ep
        else:
            runs.append([ep, ep])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


class Session:
    """A set-up run (see the module docstring); :meth:`save` writes a step checkpoint."""

    policies: dict[str, QwenVLAPolicy]
    backbone_source: Path | None  # the loader's: the input checkpoint's backbone files, if unchanged
    train_parts: list[FrameSet]
    val_parts: dict[int, FrameSet]
    val_rows: dict[int, list[int]]
    train_features: dict[int, FeatureStore]
    val_features: dict[int, FeatureStore]
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    noise_gen: torch.Generator
    aug_gen: torch.Generator
    logbook: Logbook
    start_step: int

    def __init__(self, run: RunSpec) -> None:
        self.run = run
        self.config: TrainConfig = run.config
        self.out = Path(run.out)
        self.progress = run.progress
        self.started = time.time()
        self.saved_step: int | None = None
        self.peft_model: Any = None
        self.dataset_info: list[dict[str, Any]] = []
        self.commit = git_commit()

    # ----------------------------------------------------------------- set-up

    @classmethod
    def open(cls, run: RunSpec) -> Session:
        s = cls(run)
        cfg = s.config
        threads = cfg.threads or (1 if torch.device(cfg.device).type == "cpu" else None)
        if threads:
            torch.set_num_threads(threads)
            log.info(
                "torch threads: %d%s", threads, "" if cfg.threads else " (on a CPU unless --threads says so)"
            )
        torch.manual_seed(cfg.seed)
        out_dir.check_out_dir(s.out, run.resume)
        if not run.datasets:
            raise TrainingError("no --dataset given")
        embodiments = s._check_datasets(run.datasets)
        stats = s._stats(run.datasets)
        s._load(run.checkpoint, embodiments, stats)
        s._choose_trainable()
        s.start_step = 0
        if run.resume:
            s._restore_weights(next(iter(embodiments.values())))
        s._frames(run.datasets)
        s._features()
        s.optimizer = make_optimizer(s.policy.decoder.parameters(), s.backbone_trainable, cfg.schedule)
        s.scheduler = make_scheduler(s.optimizer, cfg.schedule)
        s.noise_gen = torch.Generator(device=s.policy.device).manual_seed(cfg.seed * 7919 + 1)
        s.aug_gen = torch.Generator(device=s.policy.device).manual_seed(cfg.seed * 7919 + 2)
        s.logbook = Logbook(s.out / "training")
        if run.resume:
            s._restore_state()
        else:
            (s.out / "training" / "config.yaml").write_text(dump_train_config(cfg), encoding="utf-8")
        s.logbook.write("start", step=s.start_step, resume=run.resume, command=list(run.command))
        return s

    def _check_datasets(self, datasets: Sequence[DatasetSpec]) -> dict[str, Embodiment]:
        by_name: dict[str, Embodiment] = {}
        for spec in datasets:
            check_source(spec)
            e = spec.embodiment
            if e.name in by_name and by_name[e.name] != e:
                raise TrainingError(
                    f"{spec.label}: embodiment {e.name!r} is also used by another dataset with a different "
                    "robot YAML; one name, one YAML"
                )
            by_name[e.name] = e
        mix = self.config.data.mix
        if mix is not None and set(mix) != set(by_name):
            raise TrainingError(
                f"data.mix names {sorted(mix)} but the datasets' embodiments are {sorted(by_name)}: give "
                "every embodiment of the run a share, and no other"
            )
        return by_name

    def _stats(self, datasets: Sequence[DatasetSpec]) -> dict[str, Normalization]:
        stats: dict[str, Normalization] = {}
        for spec in datasets:
            one = norm_stats_from_source(spec.source, spec.embodiment, spec.label)
            name = spec.embodiment.name
            stats[name] = merge_stats(stats[name], one) if name in stats else one
        return stats

    def _load(self, path: Path, embodiments: dict[str, Embodiment], stats: dict[str, Normalization]) -> None:
        cfg = self.config
        device_type = torch.device(cfg.device).type
        self.autocast_to = autocast_dtype(cfg.dtype, self.run.autocast_device_type or device_type)
        first = next(iter(embodiments.values()))
        # A frozen base under bf16 autocast on a GPU is loaded in bf16 (half the memory, and what
        # autocast would compute in anyway); trained weights (decoder, adapters, `all`) stay fp32.
        frozen_bf16 = device_type == "cuda" and self.autocast_to is torch.bfloat16 and cfg.train != "all"
        with_stats = first.model_copy(update={"normalization": stats[first.name]})
        try:
            parts = load_checkpoint(
                path,
                with_stats,
                device=cfg.device,
                dtype="bfloat16" if frozen_bf16 else "float32",
                new_embodiment=True,  # training is how a checkpoint learns a robot
            )
            base = QwenVLAPolicy.from_parts(parts, with_stats)
        except QvlaError as exc:
            raise TrainingError(f"--checkpoint {path}: {exc}") from exc
        # The input checkpoint's backbone files as they are (None when an adapter was merged on load).
        self.backbone_source = parts.backbone_source
        base.decoder.float()
        linear_patch_embed(base.backbone.model)
        for name, st in stats.items():
            base.norm_stats[name] = st
        self.policy = base
        try:
            self.policies = {name: base.with_embodiment(e, seed=cfg.seed) for name, e in embodiments.items()}
        except QvlaError as exc:
            raise TrainingError(f"--checkpoint {path}: {exc}") from exc
        self.frames_per_camera = {
            name: [c.history.frames for c in e.cameras] for name, e in embodiments.items()
        }

    def _choose_trainable(self) -> None:
        cfg = self.config
        backbone = self.policy.backbone
        if cfg.train == "decoder":
            backbone.requires_grad_(False)
            self.backbone_trainable: list[nn.Parameter] = []
        elif cfg.train == "lora":
            lo = cfg.lora
            self.peft_model = lora.apply_lora(
                backbone, rank=lo.rank, alpha=lo.alpha, dropout=lo.dropout, target_modules=lo.target_modules
            )
            self.backbone_trainable = lora.lora_parameters(backbone)
        else:
            backbone.requires_grad_(True)
            self.backbone_trainable = [p for p in backbone.parameters() if p.requires_grad]
        self.policy.decoder.requires_grad_(True)
        self.trainable = [*self.policy.decoder.parameters(), *self.backbone_trainable]
        self.train_backbone = cfg.train != "decoder"
        n_dec = sum(p.numel() for p in self.policy.decoder.parameters())
        n_bb = sum(p.numel() for p in self.backbone_trainable)
        log.info("train: %s (%d decoder + %d backbone parameters trainable)", cfg.train, n_dec, n_bb)

    def _frames(self, datasets: Sequence[DatasetSpec]) -> None:
        cfg = self.config
        size = self.policy.config.image_size
        cache_root = self.run.cache_dir or self.out / "cache"
        self.train_parts, self.val_parts, self.val_rows = [], {}, {}
        for spec in datasets:
            train_eps, val_eps = split_episodes(spec.source.episodes, cfg.validation, cfg.seed, spec.label)
            part = len(self.train_parts)
            source = spec.source.select_episodes(train_eps) if val_eps else spec.source
            self.train_parts.append(
                frame_set(source, spec, train_eps, size, cfg.data, cache_root, "train", self.progress)
            )
            if val_eps:
                val = frame_set(
                    spec.source.select_episodes(val_eps), spec, val_eps, size, cfg.data, cache_root, "val",
                    self.progress,
                )  # fmt: skip
                self.val_parts[part] = val
                self.val_rows[part] = eval_rows(val, cfg.validation.max_frames, cfg.seed + part)
            self.dataset_info.append(
                {
                    "path": spec.label,
                    "embodiment": spec.embodiment.name,
                    "fingerprint": spec.source.fingerprint,
                    "frames": len(spec.source),
                    "episodes_train": episode_ranges(train_eps),  # 8,000 indexes took 360 KB
                    "episodes_validation": val_eps,
                }
            )
            log.info(
                "%s: %d training frames (%d episodes), %d held out (%d episodes)",
                spec.label,
                len(self.train_parts[-1]),
                len(train_eps),
                len(self.val_parts[part]) if val_eps else 0,
                len(val_eps),
            )

    def _features(self) -> None:
        cfg = self.config
        self.train_features, self.val_features = {}, {}
        if cfg.train != "decoder" or not cfg.features_cache:
            return
        if cfg.augment.enabled:
            log.info("features cache off: image augmentation changes the backbone's input every step")
            return
        if not cfg.data.frame_cache:
            log.info("features cache off: it needs data.frame_cache")
            return
        sets = [(i, p, self.train_features) for i, p in enumerate(self.train_parts)]
        sets += [(i, p, self.val_features) for i, p in self.val_parts.items()]
        need = sum(
            estimate_bytes(self.policies[p.embodiment.name], p, p[0].instruction)
            for _, p, _ in sets
            if len(p)
        )
        if need > cfg.features_cache_max_gb * 1e9:
            log.info(
                "features cache off: about %.1f GB > features_cache_max_gb %.1f",
                need / 1e9,
                cfg.features_cache_max_gb,
            )
            return
        self.set_mode(training=False)
        for i, p, store in sets:
            store[i] = build_features(
                self.policies[p.embodiment.name],
                p,
                cfg.schedule.batch_size,
                progress=self.progress,
                autocast=self.autocast,
            )

    def autocast(self) -> AbstractContextManager[object]:
        if self.autocast_to is None:
            return nullcontext()
        return torch.autocast(self.policy.device.type, dtype=self.autocast_to)

    def set_mode(self, training: bool) -> None:
        self.policy.decoder.train(training)
        self.policy.backbone.train(training and self.train_backbone)

    # ----------------------------------------------------------------- saving

    def backbone_mode(self) -> str:
        """How a step checkpoint holds the backbone (``QwenVLAPolicy.save(backbone=...)``).

        Trained (``all``): its weights. LoRA: the adapter, the base referenced. Frozen: hard links to
        the input checkpoint's files (no extra space, the step directory stays self-contained), or a
        reference when they lie on another filesystem (a link would be a multi-GB copy per step).
        A base whose adapter was merged on load has no file to point at: its weights are written.
        """
        train = self.config.train
        source = self.backbone_source
        if train == "all" or source is None:
            return "full"
        if train == "lora":
            return "adapter"
        self.out.mkdir(parents=True, exist_ok=True)
        same_fs = source.stat().st_dev == self.out.resolve().stat().st_dev
        return "link" if same_fs else "reference"

    def _provenance(self, step: int) -> dict[str, Any]:
        return provenance(
            command=self.run.command,
            base_checkpoint=Path(self.run.checkpoint).resolve(),
            datasets=self.dataset_info,
            config=self.config.model_dump(mode="json"),
            step=step,
            commit=self.commit,
            started=self.started,
        )

    def _write(self, directory: Path, step: int) -> None:
        policy = self.policy
        policy.config = dataclasses.replace(policy.config, training=self._provenance(step))
        policy.save(directory, backbone=self.backbone_mode())
        (directory / out_dir.TRAIN_CONFIG).write_text(dump_train_config(self.config), encoding="utf-8")
        state = out_dir.trainer_state(step, self.optimizer, self.scheduler, self.noise_gen, self.aug_gen)
        torch.save(state, directory / out_dir.TRAINER_STATE)

    def save(self, step: int) -> Path:
        previous = out_dir.latest_step(self.out)
        path = out_dir.write_step(
            self.out, step, lambda d: self._write(d, step), self.config.checkpoint.keep, previous
        )
        self.saved_step = step
        self.logbook.write("checkpoint", step=step, path=str(path))
        return path

    # ----------------------------------------------------------------- resume

    def _restore_weights(self, first: Embodiment) -> None:
        """Trained weights of OUT/latest into the freshly loaded model (the loader reads and checks them)."""
        path = out_dir.latest(self.out)
        assert path is not None
        try:
            checked = check_checkpoint(path, first, resolve_placement(self.config.device, "float32"))
        except QvlaError as exc:
            raise TrainingError(f"--resume: {path}: {exc}") from exc
        now = [(spec.label, spec.source.fingerprint) for spec in self.run.datasets]
        out_dir.check_same_datasets(path, checked.config.training, now)
        try:
            saved = load_weights(checked)
        except QvlaError as exc:
            raise TrainingError(f"--resume: {path}: {exc}") from exc
        self.policy.decoder.load_state_dict(saved.decoder.state_dict())
        if self.config.train == "lora":
            lora.load_adapter_weights(self.peft_model, path / ckpt.ADAPTER_DIR)
        elif self.config.train == "all":
            self.policy.backbone.model.load_state_dict(saved.backbone.model.state_dict())
        self.policy.backbone.prefix_memo.clear()

    def _restore_state(self) -> None:
        path = out_dir.latest(self.out)
        assert path is not None
        self.start_step = out_dir.restore_trainer_state(
            path, self.optimizer, self.scheduler, self.noise_gen, self.aug_gen
        )
        self.saved_step = self.start_step
        if self.start_step > self.config.schedule.steps:
            raise TrainingError(
                f"--resume: {path} is at step {self.start_step}, past schedule.steps "
                f"{self.config.schedule.steps}; raise --steps to train longer"
            )
        log.info("resuming from %s (step %d)", path, self.start_step)

    def close(self) -> None:
        """Nothing to release but the DataLoader (closed by the loop); kept for symmetry."""
        return None
