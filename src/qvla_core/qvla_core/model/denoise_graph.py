"""The whole denoising loop (all Euler steps) captured once as a CUDA graph and replayed.

A 10-step flow sample launches some hundred small kernels per step; on a GPU at batch 1 their
launch overhead, not their arithmetic, sets the denoise time. A CUDA graph records the launches of
one ``ActionDecoder.sample`` call on static input buffers and replays them with one launch.

What the graph needs, and how it is met:

* static shapes -- one graph per (batch, horizon, conditioning length, steps, prefix rows). The
  conditioning length depends on the prompt; it is padded up to a multiple of ``cond_bucket``
  with masked-out tokens (cross-attention ignores them exactly), so instructions of similar length
  share a graph. At most ``max_graphs`` are kept (least recently used dropped);
* no host syncs and no data-dependent control flow inside -- ``sample`` has none (its loop
  is over a precomputed time grid; tests/test_action_decoder.py checks it);
* randomness outside the graph -- the starting noise is drawn with the policy's generator
  before the replay, exactly as ``sample`` draws it, so a seeded policy gives the same chunks
  with and without the graph.

The buffer handling (padding, keying, copying in and out, eviction) is the same for the
``"replay"`` backend, which re-runs ``sample`` eagerly on the static buffers instead of replaying
a recorded graph: it runs on a CPU, so the tests check this logic without a GPU; only the
recording itself (``torch.cuda.graph``) is GPU-only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from qvla_core.errors import DeviceError
from qvla_core.model.action_decoder import ActionDecoder, draw_noise

BACKENDS = ("cuda", "replay")


@dataclass
class _Graph:
    inputs: dict[str, Tensor]
    output: Tensor
    graph: Any  # torch.cuda.CUDAGraph, or None for the replay backend


class DenoiseGraphs:
    """Captured ``decoder.sample`` calls, keyed by their static shapes (see the module docstring)."""

    def __init__(
        self,
        decoder: ActionDecoder,
        *,
        backend: str = "cuda",
        cond_bucket: int = 32,
        max_graphs: int = 8,
        warmup: int = 2,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        device = decoder.action_pos.device
        if backend == "cuda" and device.type != "cuda":
            raise DeviceError(f"CUDA-graph denoising needs the decoder on a CUDA device, it is on {device}")
        self.decoder = decoder
        self.backend = backend
        self.cond_bucket = cond_bucket
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.captures = 0
        self._graphs: OrderedDict[tuple[Any, ...], _Graph] = OrderedDict()
        self._pool: Any = torch.cuda.graph_pool_handle() if backend == "cuda" else None

    def __len__(self) -> int:
        return len(self._graphs)

    def sample(
        self,
        state: Tensor,
        cond: Tensor,
        cond_mask: Tensor,
        action_mask: Tensor,
        horizon: int,
        *,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
        prefix: Tensor | None = None,
        prefix_weight: Tensor | None = None,
    ) -> Tensor:
        """Same arguments and result as :meth:`ActionDecoder.sample` (a fresh tensor each call)."""
        steps = self.decoder.config.num_steps if num_steps is None else num_steps
        device = self.decoder.action_pos.device
        batch = state.shape[0]
        noise = draw_noise((batch, horizon, self.decoder.config.action_width), generator, device)
        padded = -(-cond.shape[1] // self.cond_bucket) * self.cond_bucket
        key = (
            batch,
            horizon,
            padded,
            steps,
            None if prefix is None else prefix.shape[1],
            prefix_weight is not None,
            cond.dtype,
            state.dtype,
        )
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(key, state, cond, padded, action_mask, noise, prefix, prefix_weight, steps)
        else:
            self._graphs.move_to_end(key)
        self._fill(entry, state, cond, cond_mask, action_mask, noise, prefix, prefix_weight)
        if entry.graph is not None:
            entry.graph.replay()
        else:
            entry.output.copy_(self._run(entry, horizon, steps))
        return entry.output.clone()

    # ----------------------------------------------------------------- internals

    def _run(self, entry: _Graph, horizon: int, steps: int) -> Tensor:
        i = entry.inputs
        out: Tensor = self.decoder.sample(
            i["state"],
            i["cond"],
            i["cond_mask"],
            i["action_mask"],
            horizon,
            num_steps=steps,
            noise=i["noise"],
            prefix=i.get("prefix"),
            prefix_weight=i.get("prefix_weight"),
        )
        return out

    @staticmethod
    def _fill(
        entry: _Graph,
        state: Tensor,
        cond: Tensor,
        cond_mask: Tensor,
        action_mask: Tensor,
        noise: Tensor,
        prefix: Tensor | None,
        prefix_weight: Tensor | None,
    ) -> None:
        i = entry.inputs
        length = cond.shape[1]
        i["state"].copy_(state)
        i["cond"][:, :length].copy_(cond)
        i["cond"][:, length:].zero_()
        i["cond_mask"][:, :length].copy_(cond_mask)
        i["cond_mask"][:, length:] = False
        i["action_mask"].copy_(action_mask)
        i["noise"].copy_(noise)
        if prefix is not None:
            i["prefix"].copy_(prefix)
        if prefix_weight is not None:
            i["prefix_weight"].copy_(prefix_weight)

    def _capture(
        self,
        key: tuple[Any, ...],
        state: Tensor,
        cond: Tensor,
        padded: int,
        action_mask: Tensor,
        noise: Tensor,
        prefix: Tensor | None,
        prefix_weight: Tensor | None,
        steps: int,
    ) -> _Graph:
        device = self.decoder.action_pos.device
        batch, horizon = noise.shape[0], noise.shape[1]
        inputs = {
            "state": torch.zeros_like(state, device=device),
            "cond": torch.zeros((batch, padded, cond.shape[2]), dtype=cond.dtype, device=device),
            "cond_mask": torch.zeros((batch, padded), dtype=torch.bool, device=device),
            "action_mask": torch.zeros_like(action_mask, device=device),
            "noise": torch.zeros_like(noise),
        }
        if prefix is not None:
            inputs["prefix"] = torch.zeros_like(prefix, device=device)
        if prefix_weight is not None:
            inputs["prefix_weight"] = torch.zeros_like(prefix_weight, device=device)
        entry = _Graph(inputs, torch.zeros_like(noise), None)
        # Real values for the warm-up runs (and the capture): cond_mask must keep a valid token.
        inputs["cond_mask"][:, 0] = True
        inputs["action_mask"].copy_(action_mask)
        if self.backend == "cuda":
            entry.graph = self._record(entry, horizon, steps)
        self.captures += 1
        self._graphs[key] = entry
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return entry

    def _record(self, entry: _Graph, horizon: int, steps: int) -> Any:
        # Warm up on a side stream (allocator pools, lazy kernel loading), then record on it.
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self._run(entry, horizon, steps)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            entry.output = self._run(entry, horizon, steps)
        return graph
