"""The frozen backbone's conditioning, computed once per frame (``train: decoder``).

With the backbone frozen and no image augmentation, a frame's conditioning tokens never change, so
they are computed once (a progress bar over the frames) and every step only runs the decoder. The
embodiment prompt's text before the first image is the same for every frame of a dataset and, the
language model being causal, so are its hidden states: they are kept once (``prefix``), and only
each frame's remaining tokens (images and task text) per frame (``suffix``, right-padded), which is
about a tenth of the memory of whole sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from qvla_core.logs import get_logger
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.training.frames import FrameSet, TrainingBatch

log = get_logger("qvla.train")


@dataclass
class FeatureStore:
    """Conditioning of every frame of one frame set."""

    prefix: Tensor  # (P, hidden)
    suffix: Tensor  # (N, S, hidden), right-padded
    suffix_mask: Tensor  # (N, S) bool

    def lookup(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(cond (B, P + S, hidden), cond_mask (B, P + S)) for frame rows ``rows``."""
        b = rows.shape[0]
        suffix = self.suffix[rows.to(self.suffix.device)]
        cond = torch.cat([self.prefix.expand(b, -1, -1), suffix], dim=1)
        ones = torch.ones(b, self.prefix.shape[0], dtype=torch.bool, device=self.suffix.device)
        return cond, torch.cat([ones, self.suffix_mask[rows.to(self.suffix.device)]], dim=1)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.prefix, self.suffix, self.suffix_mask))


def prefix_length(policy: QwenVLAPolicy, instruction: str) -> int:
    """Prompt tokens before the first image minus one (the shared part; see model/prefix_cache.py)."""
    ids = policy.processor.prompt_ids(policy.embodiment, instruction)
    return max(0, ids.index(policy.processor.image_token_id) - 1)


def estimate_bytes(policy: QwenVLAPolicy, frames: FrameSet, instruction: str) -> int:
    """Rough size of a :class:`FeatureStore` for ``frames`` (to decide whether to build one)."""
    ids = policy.processor.prompt_ids(policy.embodiment, instruction)
    suffix = len(ids) - prefix_length(policy, instruction)
    return len(frames) * suffix * policy.backbone.hidden_size * 4


def _batches(frames: FrameSet, batch_size: int) -> Iterator[TrainingBatch]:
    for start in range(0, len(frames), batch_size):
        yield frames.batch(list(range(start, min(start + batch_size, len(frames)))), 0)


def build_features(
    policy: QwenVLAPolicy,
    frames: FrameSet,
    batch_size: int,
    *,
    progress: bool = True,
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> FeatureStore:
    """Run the frozen backbone over every frame of ``frames`` once."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    prefix: Tensor | None = None
    suffixes: list[Tensor] = []
    masks: list[Tensor] = []
    bar = tqdm(
        total=len(frames), desc=f"backbone features {frames.label}", unit="frame", disable=not progress
    )
    with torch.no_grad():
        for batch in _batches(frames, batch_size):
            with autocast():
                cond, mask = policy.condition(batch.image_list(), batch.instructions)
            p = min(prefix_length(policy, ins) for ins in batch.instructions)
            if prefix is None:
                prefix = cond[0, :p].detach().clone()
            elif prefix.shape[0] != p:
                raise RuntimeError(
                    f"prompt prefix length changed within {frames.label}: {prefix.shape[0]} vs {p}"
                )
            suffixes.append(cond[:, p:].detach())
            masks.append(mask[:, p:])
            bar.update(len(batch))
    bar.close()
    assert prefix is not None
    width = max(s.shape[1] for s in suffixes)
    n = sum(s.shape[0] for s in suffixes)
    suffix = suffixes[0].new_zeros(n, width, suffixes[0].shape[2])
    suffix_mask = torch.zeros(n, width, dtype=torch.bool, device=suffix.device)
    row = 0
    for s, m in zip(suffixes, masks, strict=True):
        suffix[row : row + s.shape[0], : s.shape[1]] = s
        suffix_mask[row : row + s.shape[0], : s.shape[1]] = m
        row += s.shape[0]
    store = FeatureStore(prefix, suffix, suffix_mask)
    log.info(
        "features cache %s: %d frames, %d shared + %d per-frame tokens, %.1f MB",
        frames.label,
        n,
        prefix.shape[0],
        width,
        store.nbytes / 1e6,
    )
    return store
