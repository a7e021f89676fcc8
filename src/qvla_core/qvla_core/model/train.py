"""One flow-matching training step, through the policy's own preprocessing.

A batch is a sequence of ``(Observation, actions)`` pairs, ``actions`` float32
(horizon, n_action) in robot units. The observation goes through exactly the
inference path (prompt, image patches, state normalisation); the actions are
normalised with the same stats and padded to the decoder's action width, the
padded channels are masked out of the loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.policy import FloatArray, Observation

Batch = Sequence[tuple[Observation, FloatArray]]


def flow_matching_step(
    policy: QwenVLAPolicy,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    *,
    generator: torch.Generator | None = None,
    train_backbone: bool = False,
    max_grad_norm: float | None = 1.0,
) -> float:
    """Forward, backward and one optimizer step; returns the loss before the step.

    The optimizer decides what trains (e.g. ``policy.decoder.parameters()``);
    the backbone gets gradients only with ``train_backbone``.
    """
    policy.decoder.train()
    if train_backbone:
        policy.backbone.train()
    try:
        optimizer.zero_grad(set_to_none=True)
        loss = policy.training_loss(
            [obs for obs, _ in batch],
            [act for _, act in batch],
            generator=generator,
            train_backbone=train_backbone,
        )
        loss.backward()  # type: ignore[no-untyped-call]
        if max_grad_norm is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
    finally:
        policy.decoder.eval()
        policy.backbone.eval()
    return float(loss.detach())
