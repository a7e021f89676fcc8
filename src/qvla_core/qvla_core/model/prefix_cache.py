"""Run the prompt's shared text prefix through the language model once, not once per row.

The embodiment prompt (system message: body, control convention, rate, horizon, channel names) is
most of the sequence: ~320 of ~356 tokens for ALOHA with one camera. Everything before the first
image is the same for every row of a batch of one embodiment, and, the language model being causal,
so are its hidden states. :func:`forward_with_shared_prefix` runs that prefix with batch size 1,
repeats its key/value cache over the batch, and runs only the per-row suffix (images, task text)
against it. The result equals the full forward (to float rounding) and gradients flow through both
parts, so training and inference share it; on a CPU it cut a tiny backbone's forward + backward at
batch 32 from 545 to 155 ms.

At inference the weights do not change between calls, so :class:`PrefixMemo` keeps the prefix's
hidden states and cache from one call to the next (keyed by the prefix tokens and the parameters'
in-place version counters, so an optimizer step or a weight load invalidates it).

Only for language models whose layers all use softmax attention (Qwen2.5-VL, Qwen3-VL): their cache
is plain keys and values that can be repeated over the batch. Qwen3.5's Gated DeltaNet layers keep
a recurrent state that transformers updates in place and cannot repeat over a batch, so a Qwen3.5
backbone runs the whole sequence (:func:`supports_shared_prefix` says which).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


def supports_shared_prefix(model: Any) -> bool:
    """True when every language-model layer is softmax attention (see the module docstring)."""
    layer_types = getattr(model.config.text_config, "layer_types", None) or ()
    return all(t in ("full_attention", "sliding_attention") for t in layer_types)


def shared_prefix_length(input_ids: Tensor, attention_mask: Tensor, image_token_id: int) -> int:
    """Tokens before the first image that are identical (and unpadded) in every row; 0 if none.

    The token right before the first image pad (``<|vision_start|>``) stays in the suffix, so the
    suffix always starts with text and the image placeholders are all in it.
    """
    if input_ids.shape[0] == 0:
        return 0
    images = (input_ids[0] == image_token_id).nonzero()
    if images.numel() == 0:
        return 0
    length = int(images[0]) - 1
    if length <= 0:
        return 0
    head = input_ids[:, :length]
    if not bool((head == head[:1]).all()) or not bool(attention_mask[:, :length].all()):
        return 0
    return length


@dataclass
class _Prefix:
    key: tuple[Any, ...]
    hidden: Tensor  # (1, P, hidden)
    cache: Any


class PrefixMemo:
    """The last prefix computed without gradients, for reuse by the next inference call."""

    def __init__(self) -> None:
        self._entry: _Prefix | None = None

    def get(self, key: tuple[Any, ...]) -> _Prefix | None:
        return self._entry if self._entry is not None and self._entry.key == key else None

    def put(self, entry: _Prefix) -> None:
        self._entry = entry

    def clear(self) -> None:
        self._entry = None


def _weights_version(module: nn.Module) -> int:
    return sum(p._version for p in module.parameters())


def forward_with_shared_prefix(
    model: Any,
    *,
    input_ids: Tensor,
    attention_mask: Tensor,
    pixel_values: Tensor,
    image_grid_thw: Tensor,
    mm_token_type_ids: Tensor,
    prefix_length: int,
    memo: PrefixMemo | None = None,
) -> Tensor:
    """Last hidden states (B, L, hidden) of a Qwen-VL ``...ForConditionalGeneration`` for the batch,
    computing the first ``prefix_length`` tokens once (see the module docstring).

    ``memo`` is used only when gradients are off (inference).
    """
    from transformers import DynamicCache

    inner = model.model
    batch, p = input_ids.shape[0], prefix_length
    # Positions of the whole sequence (Qwen's 3-D multimodal rope), then split like the tokens.
    positions = inner.compute_3d_position_ids(
        input_ids=input_ids,
        image_grid_thw=image_grid_thw,
        video_grid_thw=None,
        inputs_embeds=None,
        attention_mask=attention_mask,
        cache=None,
        mm_token_type_ids=mm_token_type_ids,
    )
    prefix = None
    key: tuple[Any, ...] = ()
    if memo is not None and not torch.is_grad_enabled():
        key = (tuple(input_ids[0, :p].tolist()), _weights_version(model), str(input_ids.device))
        prefix = memo.get(key)
    if prefix is None:
        cache = DynamicCache(config=model.config.text_config)
        out = inner.language_model(
            input_ids=input_ids[:1, :p],
            position_ids=positions[..., :1, :p],
            attention_mask=attention_mask[:1, :p],
            cache=cache,
            use_cache=True,
        )
        prefix = _Prefix(key, out.last_hidden_state, cache)
        if memo is not None and key:
            memo.put(prefix)
    # The suffix forward appends to the cache: a reused prefix must stay as it was.
    cache = copy.deepcopy(prefix.cache) if memo is not None and key else prefix.cache
    if batch > 1:
        cache.batch_repeat_interleave(batch)
    out = inner(
        input_ids=input_ids[:, p:],
        attention_mask=attention_mask,
        position_ids=positions[..., p:],
        pixel_values=pixel_values,
        image_grid_thw=image_grid_thw,
        mm_token_type_ids=mm_token_type_ids[:, p:],
        cache=cache,
        use_cache=True,
        return_dict=True,
    )
    hidden: Tensor = torch.cat([prefix.hidden.expand(batch, -1, -1), out.last_hidden_state], dim=1)
    return hidden
