"""AdamW over what trains, and the learning-rate schedule (linear warm-up, then cosine decay).

Weight decay applies to matrices only: biases, norm scales and the like (1-D tensors) are left
undecayed, the usual practice for transformers. The decoder and the backbone (or its adapters) are
separate parameter groups so they can have different peak rates (``schedule.backbone_lr``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from qvla_core.training.config import Schedule


def _groups(
    params: Iterable[nn.Parameter], lr: float, weight_decay: float, name: str
) -> list[dict[str, object]]:
    decay: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for p in params:
        if p.requires_grad:
            (decay if p.dim() >= 2 else plain).append(p)
    groups: list[dict[str, object]] = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": f"{name}"})
    if plain:
        groups.append({"params": plain, "lr": lr, "weight_decay": 0.0, "name": f"{name}_no_decay"})
    return groups


def make_optimizer(
    decoder_params: Iterable[nn.Parameter], backbone_params: Iterable[nn.Parameter], schedule: Schedule
) -> torch.optim.AdamW:
    backbone_lr = schedule.backbone_lr if schedule.backbone_lr is not None else schedule.lr
    groups = _groups(decoder_params, schedule.lr, schedule.weight_decay, "decoder")
    groups += _groups(backbone_params, backbone_lr, schedule.weight_decay, "backbone")
    return torch.optim.AdamW(
        groups,
        lr=schedule.lr,
        betas=schedule.betas,
        weight_decay=schedule.weight_decay,
    )


def lr_factor(step: int, schedule: Schedule) -> float:
    """Multiplier of the peak rate at ``step`` (0-based): warm-up to 1, cosine down to min_lr_ratio."""
    warm = schedule.warmup_steps
    if warm and step < warm:
        return (step + 1) / warm
    span = max(1, schedule.steps - warm)
    progress = min(1.0, (step - warm) / span)
    floor = schedule.min_lr_ratio
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, schedule))
