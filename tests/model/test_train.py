"""flow_matching_step: the loss falls on a small fixed batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from qvla_core.embodiment import Embodiment
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.model.train import flow_matching_step
from qvla_core.policy import Observation


def test_loss_falls(ckpt_dir: Path, arm7: Embodiment, obs_factory: Callable[..., Observation]) -> None:
    policy = QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7, seed=0)
    rng = np.random.default_rng(0)
    t = np.linspace(0.0, 1.0, arm7.horizon, dtype=np.float32)[:, None]
    batch = []
    for i in range(2):
        obs = obs_factory(arm7, seed=i, instruction=["pick up the cube", "open the drawer"][i])
        start = np.asarray(obs.state, dtype=np.float32)
        goal = start + rng.normal(0.0, 0.3, size=start.shape).astype(np.float32)
        batch.append((obs, (start + t * (goal - start)).astype(np.float32)))
    optimizer = torch.optim.AdamW(policy.decoder.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        gen = torch.Generator().manual_seed(123)  # same noise and times each step: a fixed objective
        losses.append(flow_matching_step(policy, batch, optimizer, generator=gen))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses
    # the trained policy still infers, and the backbone was left frozen and in eval mode
    assert not policy.decoder.training and not policy.backbone.training
    assert policy.infer(batch[0][0]).actions.shape == (16, 8)
