"""``QwenVLAPolicy``: Qwen-VL backbone + DiT flow-matching decoder behind the ``Policy`` protocol.

One ``infer`` call:

1. **preprocess** -- validate the observation, render/tokenise the prompt (cached
   per instruction), resize and patchify the images on the policy's device,
   normalise the state and the optional inpainting prefix;
2. **backbone** -- one forward of the VLM over prompt + images -> conditioning
   tokens (hidden states of the configured layer) and their mask;
3. **denoise** -- ``ActionDecoder.sample`` (N Euler steps) in the padded action space;
4. **postprocess** -- keep the embodiment's columns, un-normalise, to numpy.

``ActionChunk.latency`` holds the seconds of each stage and ``total``; on CUDA
the stages are closed by ``torch.cuda.synchronize`` (only at stage boundaries).

Padded layout: the embodiment's n action channels are columns 0..n-1 of the
decoder's ``action_width`` columns (state likewise in ``state_width``); the other
columns are masked and dropped.

Why this file is over 400 lines: it is one class, and the training loss (``training_loss``,
``condition``, ``action_loss``, ``sample_actions``) stays in it on purpose, so that training and
inference share one preprocessing path. What stands apart lives apart: loading in model/loader.py,
saving in model/saving.py, the observation checks in model/observation_check.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from qvla_core.embodiment import Embodiment, Normalization
from qvla_core.model import checkpoint as ckpt
from qvla_core.model import saving
from qvla_core.model.action_decoder import ActionDecoder
from qvla_core.model.backbone import Backbone
from qvla_core.model.backbone_configs import build_random_backbone  # noqa: F401 (its old home)
from qvla_core.model.denoise_graph import DenoiseGraphs
from qvla_core.model.device import INFER_ADVICE, Placement, oom_as_error, resolve_placement, synchronize
from qvla_core.model.loader import CheckpointParts, check_embodiment, load_checkpoint
from qvla_core.model.normalization import EmbodimentNormalizer, resolve_normalization
from qvla_core.model.observation_check import check_observation
from qvla_core.model.processor import QwenVLAProcessor
from qvla_core.policy import ActionChunk, FloatArray, Observation

STAGES = ("preprocess", "backbone", "denoise", "postprocess")
DENOISE_MODES = ("eager", "compile", "cuda_graph")


class QwenVLAPolicy:
    """A Qwen-VLA policy for one embodiment (implements :class:`qvla_core.policy.Policy`)."""

    def __init__(
        self,
        backbone: Backbone,
        decoder: ActionDecoder,
        processor: QwenVLAProcessor,
        *,
        embodiment: Embodiment,
        normalizer: EmbodimentNormalizer,
        config: ckpt.PolicyConfig,
        norm_stats: dict[str, Normalization] | None = None,
        device: str | torch.device = "cpu",
        num_steps: int | None = None,
        seed: int | None = None,
        placement: Placement | None = None,
    ) -> None:
        self.backbone = backbone
        self.decoder = decoder
        self.processor = processor
        self.config = config
        self.norm_stats = dict(norm_stats or {})
        self.device = torch.device(device)
        self.num_steps = num_steps
        self.seed = seed
        self._embodiment = embodiment
        self.normalizer = normalizer
        self._generator: torch.Generator | None = None
        self.checkpoint_path: Path | None = None
        # Where the backbone came from and its weights' version then (saving by reference needs both).
        self.backbone_source: Path | None = None
        self.backbone_loaded_version: int | None = None
        self.placement: Placement = placement or resolve_placement(
            str(self.device), self._dtype_name(decoder)
        )
        self.denoise_mode = "eager"
        self._graphs: DenoiseGraphs | None = None
        self._warm = False
        self.reset()
        n_act, n_state = len(embodiment.action), len(embodiment.state)
        d = config.decoder
        self._action_mask = torch.zeros(1, d.action_width, dtype=torch.bool, device=self.device)
        self._action_mask[:, :n_act] = True
        self._n_act = n_act
        self._n_state = n_state

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        embodiment: Embodiment,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        num_steps: int | None = None,
        seed: int | None = None,
        attn_implementation: str = "sdpa",
    ) -> QwenVLAPolicy:
        """Load and validate a checkpoint directory (the checks: :mod:`qvla_core.model.loader`)."""
        parts = load_checkpoint(
            path, embodiment, device=device, dtype=dtype, attn_implementation=attn_implementation
        )
        return cls.from_parts(parts, embodiment, num_steps=num_steps, seed=seed)

    @classmethod
    def from_parts(
        cls,
        parts: CheckpointParts,
        embodiment: Embodiment,
        *,
        num_steps: int | None = None,
        seed: int | None = None,
    ) -> QwenVLAPolicy:
        """The policy of a loaded checkpoint (:func:`qvla_core.model.loader.load_checkpoint`), for the
        embodiment the parts were checked against."""
        policy = cls(
            parts.backbone,
            parts.decoder,
            parts.processor,
            embodiment=embodiment,
            normalizer=parts.normalizer,
            config=parts.config,
            norm_stats=parts.norm_stats,
            device=parts.placement.device,
            num_steps=num_steps,
            seed=seed,
            placement=parts.placement,
        )
        policy.checkpoint_path = parts.root
        policy.backbone_source = parts.backbone_source
        if policy.backbone_source is not None:
            policy.backbone_loaded_version = saving.weights_version(parts.backbone)
        return policy

    def with_embodiment(self, embodiment: Embodiment, seed: int | None = None) -> QwenVLAPolicy:
        """A policy for another embodiment sharing this one's backbone and decoder (no reload).

        Qwen-VLA switches bodies by prompt; the same validation as
        :meth:`from_checkpoint` applies (fit to the decoder, norm stats).
        """
        root = self.checkpoint_path or Path("<checkpoint>")
        check_embodiment(self.config, embodiment, self.norm_stats, root)
        normalizer = resolve_normalization(embodiment, self.norm_stats, root / ckpt.NORM_STATS)
        other = QwenVLAPolicy(
            self.backbone,
            self.decoder,
            self.processor,
            embodiment=embodiment,
            normalizer=normalizer,
            config=self.config,
            norm_stats=self.norm_stats,
            device=self.device,
            num_steps=self.num_steps,
            seed=self.seed if seed is None else seed,
        )
        other.checkpoint_path = self.checkpoint_path
        other.backbone_source = self.backbone_source
        other.backbone_loaded_version = self.backbone_loaded_version
        if self.denoise_mode != "eager":
            other.set_denoise_mode(self.denoise_mode, graph_backend=self._graph_backend())
        return other

    def save(self, path: str | Path, *, backbone: str = "full") -> Path:
        """Write this policy as a checkpoint directory (the inverse of :meth:`from_checkpoint`).

        ``backbone`` says what becomes of the backbone (model/saving.py): ``"full"`` writes its weights
        (a fine-tuned backbone; LoRA adapters merged in), ``"reference"`` points ``backbone_path`` at
        the directory it was loaded from (an untouched multi-GB backbone is not copied), ``"link"``
        hard-links that directory's files in, ``"adapter"`` writes only the LoRA adapter (peft) and
        references the base. The write is atomic: a failure leaves nothing half-written at ``path``.
        """
        return saving.save_policy(self, Path(path), backbone)

    # ----------------------------------------------------------------- denoising mode

    def set_denoise_mode(self, mode: str, *, graph_backend: str | None = None) -> None:
        """How the Euler loop runs: ``"eager"``, ``"compile"`` (each step through torch.compile) or
        ``"cuda_graph"`` (the whole loop captured once per shape, model/denoise_graph.py).

        ``graph_backend="replay"`` runs the CUDA-graph path's buffer logic without recording a graph
        (on a CPU too: how the tests check it).
        """
        if mode not in DENOISE_MODES:
            raise ValueError(f"denoise mode must be one of {DENOISE_MODES}, got {mode!r}")
        self.decoder.disable_compiled_step()
        self._graphs = None
        if mode == "compile":
            self.decoder.enable_compiled_step()
        elif mode == "cuda_graph":
            self._graphs = DenoiseGraphs(self.decoder, backend=graph_backend or "cuda")
        self.denoise_mode = mode

    def _graph_backend(self) -> str | None:
        return None if self._graphs is None else self._graphs.backend

    def _sample(self, *args: Any, **kwargs: Any) -> Tensor:
        if self._graphs is not None:
            return self._graphs.sample(*args, **kwargs)
        out: Tensor = self.decoder.sample(*args, **kwargs)
        return out

    # ----------------------------------------------------------------- Policy protocol

    @property
    def embodiment(self) -> Embodiment:
        return self._embodiment

    def reset(self) -> None:
        """Re-seed the noise generator (same seed -> same chunks from the start of each episode)."""
        if self.seed is None:
            self._generator = None
            return
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(int(self.seed))

    def infer(self, observation: Observation) -> ActionChunk:
        """Predict ``embodiment.horizon`` actions (robot units) from one observation."""
        stage = "running the first inference" if not self._warm else "running an inference"
        with oom_as_error(self.placement, stage, INFER_ADVICE):
            chunk = self._infer(observation)
        self._warm = True
        return chunk

    def _infer(self, observation: Observation) -> ActionChunk:
        sync = self._sync
        t0 = time.perf_counter()
        with torch.inference_mode():
            self.validate(observation)
            inputs = self.processor(
                self._embodiment, [observation.instruction], self._image_tensors(observation), self.device
            )
            state = self._state_tensor([observation.state])
            prefix, weight = self._prefix_tensors(observation)
            sync()
            t1 = time.perf_counter()
            cond, cond_mask = self.backbone(**inputs)
            sync()
            t2 = time.perf_counter()
            out = self._sample(
                state.to(self.decoder_dtype),
                cond,
                cond_mask,
                self._action_mask,
                self._embodiment.horizon,
                num_steps=self.num_steps,
                generator=self._generator,
                prefix=prefix,
                prefix_weight=weight,
            )
            sync()
            t3 = time.perf_counter()
            actions = self.normalizer.action.unnormalize(out[0, :, : self._n_act])
            result: FloatArray = actions.cpu().numpy().astype(np.float32, copy=False)
            t4 = time.perf_counter()
        latency = {
            "preprocess": t1 - t0,
            "backbone": t2 - t1,
            "denoise": t3 - t2,
            "postprocess": t4 - t3,
            "total": t4 - t0,
        }
        return ActionChunk(
            actions=result,
            channel_names=self._embodiment.action_names,
            dt=self._embodiment.dt,
            observation_stamp=observation.stamp,
            latency=latency,
        )

    # ----------------------------------------------------------------- training

    def training_loss(
        self,
        observations: Sequence[Observation],
        actions: Sequence[FloatArray],
        generator: torch.Generator | None = None,
        train_backbone: bool = False,
        action_is_pad: Sequence[npt.NDArray[np.bool_]] | None = None,
    ) -> Tensor:
        """Flow-matching loss of a batch, through exactly the inference preprocessing.

        ``actions[i]``: (horizon, n_action) in robot units; ``action_is_pad[i]`` (horizon,) marks rows
        past the episode's end (left out of the loss). The backbone runs without gradients unless
        ``train_backbone``. :meth:`condition` + :meth:`action_loss` are the same two halves for
        batches already stacked as tensors (the trainer's path).
        """
        if len(observations) != len(actions) or not observations:
            raise ValueError(
                f"need as many action chunks as observations, got {len(actions)} and {len(observations)}"
            )
        for obs in observations:
            self.validate(obs)
        h, n = self._embodiment.horizon, self._n_act
        for i, a in enumerate(actions):
            if a.shape != (h, n) or not np.all(np.isfinite(a)):
                raise ValueError(f"actions[{i}] must be finite ({h}, {n}), got shape {a.shape}")
        images: list[Tensor] = []
        for obs in observations:
            images.extend(self._image_tensors(obs))
        cond, cond_mask = self.condition(images, [o.instruction for o in observations], grad=train_backbone)
        act = torch.from_numpy(np.stack(actions).astype(np.float32))
        states = torch.from_numpy(np.stack([np.asarray(o.state, dtype=np.float32) for o in observations]))
        pad = None if action_is_pad is None else torch.from_numpy(np.stack(action_is_pad).astype(np.bool_))
        return self.action_loss(cond, cond_mask, states, act, pad, generator=generator)

    def condition(
        self, images: Sequence[Tensor], instructions: Sequence[str], *, grad: bool = False
    ) -> tuple[Tensor, Tensor]:
        """The backbone's conditioning tokens for a batch: (cond (B, L, hidden), cond_mask (B, L)).

        ``images``: uint8 (n, H, W, 3) tensors holding, in order, every row's images in prompt order
        (cameras in the embodiment's order, oldest frame first); any size (resized to the
        checkpoint's image size, skipped when they already have it).
        """
        inputs = self.processor(self._embodiment, list(instructions), list(images), self.device)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            cond, cond_mask = self.backbone(**inputs)
        return cond, cond_mask

    def action_loss(
        self,
        cond: Tensor,
        cond_mask: Tensor,
        states: Tensor,
        actions: Tensor,
        action_is_pad: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        state_noise: float = 0.0,
    ) -> Tensor:
        """Flow-matching loss given the conditioning (from :meth:`condition`, or cached features).

        ``states`` (B, n_state) and ``actions`` (B, horizon, n_action) in robot units;
        ``action_is_pad`` (B, horizon) bool, True rows are masked out; padded channels always are.
        ``state_noise``: std of Gaussian noise added to the normalised state (units where q01..q99
        spans -1..1), a training-time augmentation against relying on proprioception alone.
        """
        h, n = self._embodiment.horizon, self._n_act
        batch = actions.shape[0]
        if tuple(actions.shape) != (batch, h, n):
            raise ValueError(f"actions must be (batch, {h}, {n}), got {tuple(actions.shape)}")
        target = torch.zeros(batch, h, self.config.decoder.action_width, device=self.device)
        target[:, :, :n] = self.normalizer.action.normalize(actions.to(self.device))
        mask = self._action_mask.expand(batch, -1)
        step_mask = None if action_is_pad is None else ~action_is_pad.to(self.device, torch.bool)
        state = self._state_from_tensor(states.to(self.device))
        if state_noise > 0.0 and self._n_state:
            noise = torch.randn(
                (batch, self._n_state), generator=generator, device=generator.device if generator else None
            )
            state[:, : self._n_state] += state_noise * noise.to(state.device)
        loss: Tensor = self.decoder.loss(
            target,
            mask,
            state.to(self.decoder_dtype),
            cond,
            cond_mask,
            generator=generator,
            step_mask=step_mask,
        )
        return loss

    def sample_actions(
        self, cond: Tensor, cond_mask: Tensor, states: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Sampled chunks (B, horizon, n_action) in robot units from the conditioning and the states
        (``infer``'s denoise + postprocess for a batch; the trainer's action error uses it)."""
        state = self._state_from_tensor(states.to(self.device))
        batch = state.shape[0]
        out = self.decoder.sample(
            state.to(self.decoder_dtype),
            cond,
            cond_mask,
            self._action_mask.expand(batch, -1),
            self._embodiment.horizon,
            num_steps=self.num_steps,
            generator=generator,
        )
        return self.normalizer.action.unnormalize(out[:, :, : self._n_act])

    # ----------------------------------------------------------------- helpers

    @property
    def decoder_dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype

    def _sync(self) -> None:
        synchronize(self.device)

    @staticmethod
    def _dtype_name(decoder: ActionDecoder) -> str:
        dtype = next(decoder.parameters()).dtype
        return {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]

    def validate(self, obs: Observation) -> None:
        """Raise ObservationError if the observation does not fit the embodiment."""
        check_observation(self._embodiment, obs)

    def _image_tensors(self, obs: Observation) -> list[Tensor]:
        return [
            torch.from_numpy(np.ascontiguousarray(obs.images[name])) for name in self._embodiment.camera_names
        ]

    def _state_tensor(self, states: Sequence[FloatArray]) -> Tensor:
        raw = torch.from_numpy(
            np.stack([np.asarray(s, dtype=np.float32) for s in states]).reshape(len(states), self._n_state)
        )
        return self._state_from_tensor(raw.to(self.device))

    def _state_from_tensor(self, states: Tensor) -> Tensor:
        """(B, n_state) robot units -> (B, state_width) normalised, zero-padded."""
        out = torch.zeros(states.shape[0], self.config.decoder.state_width, device=self.device)
        if self._n_state:
            out[:, : self._n_state] = self.normalizer.state.normalize(states)
        return out

    def _prefix_tensors(self, obs: Observation) -> tuple[Tensor | None, Tensor | None]:
        if obs.action_prefix is None:
            return None, None
        p = torch.from_numpy(np.asarray(obs.action_prefix, dtype=np.float32)).to(self.device)
        k = p.shape[0]
        prefix = torch.zeros(1, k, self.config.decoder.action_width, device=self.device)
        prefix[0, :, : self._n_act] = self.normalizer.action.normalize(p)
        weight = None
        if obs.prefix_weight is not None:
            weight = torch.from_numpy(np.asarray(obs.prefix_weight, dtype=np.float32)).to(self.device)[None]
        return prefix, weight
