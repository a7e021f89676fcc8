"""Held-out evaluation: the flow-matching loss and the action error in robot units, per channel.

Both use fixed random draws (generators seeded by the run's seed), so numbers from different steps
of a run compare. The action error samples a chunk for each of ``action_samples`` held-out frames
(the policy's own denoising and un-normalisation, as at inference) and averages, per action channel,
the absolute difference to the demonstration over the chunk's first ``action_steps`` actions (rows
past the episode's end are left out).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.training.features import FeatureStore
from qvla_core.training.frames import FrameSet, TrainingBatch

Conditioner = Callable[[TrainingBatch], tuple[Tensor, Tensor]]


@dataclass
class Evaluation:
    """Held-out results of one embodiment."""

    frames: int
    loss: float
    action_mae: dict[str, float] = field(default_factory=dict)  # channel -> robot units

    @property
    def action_mae_mean(self) -> float | None:
        return float(np.mean(list(self.action_mae.values()))) if self.action_mae else None

    def to_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "loss": self.loss,
            "action_mae_mean": self.action_mae_mean,
            "action_mae": self.action_mae,
        }


def eval_rows(frames: FrameSet, limit: int, seed: int) -> list[int]:
    """A fixed, seeded subset of at most ``limit`` rows."""
    order = np.random.default_rng([seed, 4]).permutation(len(frames))
    return sorted(int(r) for r in order[:limit])


def conditioner(policy: QwenVLAPolicy, store: FeatureStore | None) -> Conditioner:
    """Conditioning of a batch: from the features cache, else the backbone (no gradients)."""

    def cond(batch: TrainingBatch) -> tuple[Tensor, Tensor]:
        if store is not None:
            return store.lookup(batch.rows)
        return policy.condition(batch.image_list(), batch.instructions)

    return cond


@torch.no_grad()
def evaluate(
    policy: QwenVLAPolicy,
    frames: FrameSet,
    rows: list[int],
    condition: Conditioner,
    *,
    batch_size: int,
    action_samples: int,
    action_steps: int,
    seed: int,
    autocast: Callable[[], AbstractContextManager[object]],
) -> Evaluation:
    device = policy.device
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) * 1000 + 17)
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = frames.batch(rows[start : start + batch_size], 0)
        with autocast():
            cond, mask = condition(batch)
            loss = policy.action_loss(
                cond, mask, batch.state, batch.actions, batch.action_is_pad, generator=gen
            )
        total += float(loss) * len(batch)
        count += len(batch)
    result = Evaluation(frames=count, loss=total / max(1, count))
    if action_samples <= 0 or not rows:
        return result
    names = policy.embodiment.action_names
    k = min(action_steps, policy.embodiment.horizon)
    err_sum = np.zeros(len(names))
    n_valid = np.zeros(len(names))
    chosen = rows[:action_samples]
    for start in range(0, len(chosen), batch_size):
        batch = frames.batch(chosen[start : start + batch_size], 0)
        with autocast():
            cond, mask = condition(batch)
            sampled = policy.sample_actions(cond, mask, batch.state, generator=gen)
        diff = (sampled[:, :k].float().cpu() - batch.actions[:, :k]).abs().numpy()
        valid = (~batch.action_is_pad[:, :k]).numpy()[:, :, None]
        err_sum += (diff * valid).sum(axis=(0, 1))
        n_valid += np.broadcast_to(valid, diff.shape).sum(axis=(0, 1))
    result.action_mae = {n: float(e / max(1.0, v)) for n, e, v in zip(names, err_sum, n_valid, strict=True)}
    return result
