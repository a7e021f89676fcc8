"""The training run: set up (:mod:`qvla_core.training.session`), then step, validate, checkpoint.

:func:`train` is what ``qvla-train`` calls. One step: a batch of one embodiment from the DataLoader
(time spent waiting for it is measured), optional augmentation, the conditioning (backbone, or the
features cache), the policy's own flow-matching loss (padded channels and rows past the episode's
end masked), backward, gradient clipping, AdamW, the warm-up + cosine schedule. Ctrl-C (SIGINT)
finishes the step, saves a checkpoint and returns; a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.profiler import record_function

from qvla_core.errors import TrainingError
from qvla_core.logs import get_logger
from qvla_core.training.augment import augment_images
from qvla_core.training.evaluate import conditioner, evaluate
from qvla_core.training.frames import FramePool, FrameSet, TrainingBatch
from qvla_core.training.sampler import StepSampler
from qvla_core.training.session import RunSpec, Session

log = get_logger("qvla.train")

StepHook = Callable[[int, float], None]


@dataclass
class TrainResult:
    """What a run did."""

    out: Any
    step: int
    interrupted: bool
    seconds: float
    steps_run: int
    data_wait_share: float
    last_loss: float | None = None
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(1, self.steps_run)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError ("not enough memory")."""
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "not enough memory" in text)
    )


class _StopFlag:
    """SIGINT -> finish the step, save, stop; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: saving a checkpoint after this step (press again to abort without saving)")


def early_oversampled(part: FrameSet, early_frames: int, weight: int) -> np.ndarray | None:
    """The rows of one epoch of ``part`` with each episode's first ``early_frames`` frames ``weight``
    times (config ``data.early_frames`` / ``early_weight``); None when off."""
    if early_frames <= 0 or weight <= 1:
        return None
    frames = part.frame_indices()
    rows = np.arange(len(frames))
    early = rows[frames < early_frames]
    return np.concatenate([rows, *([early] * (weight - 1))])


def part_shares(embodiments: list[str], sizes: list[int], mix: dict[str, float] | None) -> list[float] | None:
    """Each frame set's share of the steps: its embodiment's share of ``mix``, split between that
    embodiment's sets by size. None (no mix) = in proportion to size. The session has checked that
    ``mix`` names exactly the run's embodiments."""
    if mix is None:
        return None
    total = {e: sum(n for f, n in zip(embodiments, sizes, strict=True) if f == e) for e in set(embodiments)}
    return [mix[e] * n / total[e] for e, n in zip(embodiments, sizes, strict=True)]


class Loop:
    """Steps a prepared :class:`Session`."""

    def __init__(self, session: Session, on_step: StepHook | None = None) -> None:
        self.s = session
        self.on_step = on_step

    def _loader(self, start: int) -> Iterator[TrainingBatch]:
        s = self.s
        cfg = s.config
        early = cfg.data.early_frames, cfg.data.early_weight
        sampler = StepSampler(
            [len(p) for p in s.train_parts], cfg.schedule.batch_size, cfg.seed, start, cfg.schedule.steps,
            row_maps=[early_oversampled(p, *early) for p in s.train_parts],
            shares=part_shares([p.embodiment.name for p in s.train_parts], [len(p) for p in s.train_parts],
                               cfg.data.mix),
        )  # fmt: skip
        workers = cfg.data.workers
        loader = torch.utils.data.DataLoader(
            FramePool(s.train_parts),
            batch_sampler=sampler,
            collate_fn=_identity,
            num_workers=workers,
            prefetch_factor=cfg.data.prefetch if workers else None,
            persistent_workers=False,
        )
        return iter(loader)

    def step(self, batch: TrainingBatch) -> tuple[Tensor, Tensor | None]:
        """One optimizer step; returns (loss, gradient norm) as tensors (no host sync).

        The ``record_function`` scopes name the parts of a step in a torch.profiler trace
        (bench/train_throughput.py --profile); they cost nothing without a profiler.
        """
        s = self.s
        policy = s.policies[batch.embodiment]
        device = policy.device
        with record_function("qvla.augment"):
            images = batch.images.to(device, non_blocking=True)
            if s.config.augment.enabled:
                frames = s.frames_per_camera[batch.embodiment]
                images = augment_images(images, frames, s.config.augment, s.aug_gen)
        with s.autocast():
            with record_function("qvla.condition"):
                store = s.train_features.get(batch.part)
                if store is not None:
                    cond, mask = store.lookup(batch.rows)
                else:
                    b, n, h, w, c = images.shape
                    cond, mask = policy.condition(
                        [images.reshape(b * n, h, w, c)], batch.instructions, grad=s.train_backbone
                    )
            with record_function("qvla.decoder_loss"):
                loss = policy.action_loss(
                    cond,
                    mask,
                    batch.state,
                    batch.actions,
                    batch.action_is_pad,
                    generator=s.noise_gen,
                    state_noise=s.config.augment.state_noise,
                )
        with record_function("qvla.backward"):
            s.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
        with record_function("qvla.optimizer"):
            grad_norm = None
            if s.config.schedule.grad_clip is not None:
                grad_norm = torch.nn.utils.clip_grad_norm_(s.trainable, s.config.schedule.grad_clip)
            s.optimizer.step()
            s.scheduler.step()
        return loss.detach(), grad_norm

    def _oom(self, step: int, exc: BaseException) -> TrainingError:
        s = self.s
        b = s.config.schedule.batch_size
        hint = f"--batch-size {max(1, b // 2)}"
        if s.config.train != "decoder":
            hint += " (or --train decoder, which keeps the backbone frozen)"
        return TrainingError(
            f"out of memory at step {step + 1} with batch size {b} (train: {s.config.train}, device "
            f"{s.config.device}): try {hint}. ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        )

    def validate(self, step: int) -> dict[str, Any]:
        s = self.s
        cfg = s.config.validation
        results: dict[str, Any] = {}
        if not s.val_parts:
            return results
        s.set_mode(training=False)
        try:
            total, frames = 0.0, 0
            for part, val in s.val_parts.items():
                policy = s.policies[val.embodiment.name]
                ev = evaluate(
                    policy,
                    val,
                    s.val_rows[part],
                    conditioner(policy, s.val_features.get(part)),
                    batch_size=s.config.schedule.batch_size,
                    action_samples=cfg.action_samples,
                    action_steps=cfg.action_steps,
                    seed=s.config.seed + part,
                    autocast=s.autocast,
                )
                results[val.embodiment.name] = ev.to_dict()
                total += ev.loss * ev.frames
                frames += ev.frames
        finally:
            s.set_mode(training=True)
        loss = total / max(1, frames)
        s.logbook.write("validation", step=step, loss=loss, per_embodiment=results)
        mae = {k: v["action_mae_mean"] for k, v in results.items()}
        log.info("step %d: validation loss %.4f, action error (mean abs, robot units) %s", step, loss, mae)
        return {"loss": loss, "per_embodiment": results}

    def run(self) -> TrainResult:
        from tqdm import tqdm  # type: ignore[import-untyped]

        s = self.s
        cfg = s.config
        total = cfg.schedule.steps
        step = s.start_step
        start_time = time.perf_counter()
        wait = compute = 0.0
        # the log window's loss sum and steps per embodiment (the whole window's are their totals)
        window: dict[str, tuple[Tensor, int]] = {}
        window_s = 0.0  # seconds of the window's steps (data + compute; validation and saving excluded)
        last_loss: float | None = None
        validation: dict[str, Any] = {}
        steps_run = 0
        interrupted = False
        s.set_mode(training=True)
        bar = tqdm(
            total=total, initial=step, desc="qvla-train", unit="step", disable=not s.progress, smoothing=0.1
        )
        with _StopFlag() as stop:
            batches = self._loader(step) if step < total else iter(())
            while step < total:
                t0 = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                try:
                    loss, grad_norm = self.step(batch)
                except Exception as exc:
                    if is_out_of_memory(exc):
                        raise self._oom(step, exc) from exc
                    raise
                t2 = time.perf_counter()
                wait += t1 - t0
                compute += t2 - t1
                window_s += t2 - t0
                step += 1
                steps_run += 1
                by_sum, by_n = window.get(batch.embodiment, (torch.zeros_like(loss), 0))
                window[batch.embodiment] = (by_sum + loss, by_n + 1)
                bar.update(1)
                if step % cfg.log_every == 0 or step == total or stop.requested:
                    window_n = sum(n for _, n in window.values())
                    last_loss = float(sum(v for v, _ in window.values())) / window_n
                    if not math.isfinite(last_loss):
                        raise TrainingError(
                            f"the loss became {last_loss} at step {step}; lower schedule.lr (now "
                            f"{cfg.schedule.lr:g}) or check the dataset"
                        )
                    lr = s.optimizer.param_groups[0]["lr"]
                    s.logbook.write(
                        "train",
                        step=step,
                        loss=last_loss,
                        lr=lr,
                        grad_norm=None if grad_norm is None else float(grad_norm),
                        steps_per_s=window_n / max(window_s, 1e-9),
                        data_wait_share=wait / max(wait + compute, 1e-9),
                        embodiment=batch.embodiment,
                        # the window's steps per robot: a joint run's curve per embodiment
                        loss_by_embodiment={e: float(v) / n for e, (v, n) in window.items()},
                        steps_by_embodiment={e: n for e, (_, n) in window.items()},
                    )
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
                    window, window_s = {}, 0.0
                if self.on_step is not None:
                    self.on_step(step, float(loss))
                if stop.requested:
                    interrupted = True
                    break
                if step % cfg.validation.every_steps == 0 or step == total:
                    validation = self.validate(step)
                if step % cfg.checkpoint.every_steps == 0 or step == total:
                    s.save(step)
                    s.logbook.plot()
        bar.close()
        if interrupted or (steps_run and s.saved_step != step):
            s.save(step)
            s.logbook.plot()
        seconds = time.perf_counter() - start_time
        s.logbook.write(
            "end",
            step=step,
            interrupted=interrupted,
            seconds=seconds,
            data_wait_share=wait / max(wait + compute, 1e-9),
        )
        return TrainResult(
            out=s.out,
            step=step,
            interrupted=interrupted,
            seconds=seconds,
            steps_run=steps_run,
            data_wait_share=wait / max(wait + compute, 1e-9),
            last_loss=last_loss,
            validation=validation,
        )


def _identity(x: Any) -> Any:
    return x


def train(run: RunSpec, on_step: StepHook | None = None) -> TrainResult:
    """Set up and run a training run (see :class:`RunSpec`)."""
    session = Session.open(run)
    try:
        return Loop(session, on_step).run()
    finally:
        session.close()
