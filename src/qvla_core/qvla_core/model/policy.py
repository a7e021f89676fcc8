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
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qvla_core.embodiment import Embodiment, Normalization
from qvla_core.errors import CheckpointError, ObservationError
from qvla_core.model import checkpoint as ckpt
from qvla_core.model.action_decoder import ActionDecoder
from qvla_core.model.backbone import Backbone, model_class, quiet_hf, text_hidden_size
from qvla_core.model.normalization import EmbodimentNormalizer, resolve_normalization
from qvla_core.model.processor import QwenVLAProcessor
from qvla_core.policy import ActionChunk, FloatArray, Observation

STAGES = ("preprocess", "backbone", "denoise", "postprocess")


def _dtype(name: str) -> torch.dtype:
    if name not in ckpt.DTYPES:
        raise ValueError(f"dtype must be one of {sorted(ckpt.DTYPES)}, got {name!r}")
    return ckpt.DTYPES[name]


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
        """Load and validate a checkpoint directory (see :mod:`qvla_core.model.checkpoint`)."""
        torch_dtype = _dtype(dtype)
        root = ckpt.check_dir(path)
        cfg = ckpt.read_policy_config(root)
        stats = ckpt.read_norm_stats(root)
        ckpt.check_embodiment(cfg, embodiment, stats, root)
        normalizer = resolve_normalization(embodiment, stats, root / ckpt.NORM_STATS)
        backbone_dir = root / ckpt.BACKBONE_DIR
        backbone = Backbone.from_pretrained(
            backbone_dir,
            cond_layer=cfg.cond_layer,
            dtype=torch_dtype,
            device=device,
            attn_implementation=attn_implementation,
        )
        if backbone.backbone_type != cfg.backbone_type:
            raise CheckpointError(
                f"{root / ckpt.POLICY_CONFIG}: backbone_type {cfg.backbone_type!r} but "
                f"{backbone_dir / 'config.json'} has model_type {backbone.backbone_type!r}"
            )
        if cfg.decoder.cond_dim != backbone.hidden_size:
            raise CheckpointError(
                f"{root / ckpt.POLICY_CONFIG}: decoder.cond_dim {cfg.decoder.cond_dim} != backbone hidden "
                f"size {backbone.hidden_size} ({backbone_dir / 'config.json'})"
            )
        processor = QwenVLAProcessor.from_pretrained(backbone_dir, cfg.image_size)
        vision = backbone.vision_config
        if int(vision.patch_size) != processor.spec.patch_size or int(vision.spatial_merge_size) != (
            processor.spec.merge_size
        ):
            raise CheckpointError(
                f"{backbone_dir / 'preprocessor_config.json'}: patch_size/merge_size "
                f"{processor.spec.patch_size}/{processor.spec.merge_size} do not match the vision config "
                f"{vision.patch_size}/{vision.spatial_merge_size}"
            )
        if processor.image_token_id != backbone.image_token_id:
            raise CheckpointError(
                f"{backbone_dir}: the tokenizer's <|image_pad|> id {processor.image_token_id} != the model's "
                f"image_token_id {backbone.image_token_id}"
            )
        decoder = ckpt.load_decoder(root, cfg)
        decoder.to(device=device, dtype=torch_dtype).eval()
        policy = cls(
            backbone,
            decoder,
            processor,
            embodiment=embodiment,
            normalizer=normalizer,
            config=cfg,
            norm_stats=stats,
            device=device,
            num_steps=num_steps,
            seed=seed,
        )
        policy.checkpoint_path = root
        return policy

    def with_embodiment(self, embodiment: Embodiment, seed: int | None = None) -> QwenVLAPolicy:
        """A policy for another embodiment sharing this one's backbone and decoder (no reload).

        Qwen-VLA switches bodies by prompt; the same validation as
        :meth:`from_checkpoint` applies (fit to the decoder, norm stats).
        """
        root = self.checkpoint_path or Path("<checkpoint>")
        ckpt.check_embodiment(self.config, embodiment, self.norm_stats, root)
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
        return other

    def save(self, path: str | Path) -> Path:
        """Write this policy as a checkpoint directory (the inverse of :meth:`from_checkpoint`)."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        backbone_dir = root / ckpt.BACKBONE_DIR
        with quiet_hf():
            self.backbone.model.save_pretrained(str(backbone_dir))
        self.processor.save_pretrained(backbone_dir)
        ckpt.save_decoder(root, self.decoder)
        stats = dict(self.norm_stats)
        ckpt.write_norm_stats(root, stats)
        ckpt.write_json(root / ckpt.POLICY_CONFIG, self.config.to_dict())
        return root

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
            out = self.decoder.sample(
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
    ) -> Tensor:
        """Flow-matching loss of a batch, through exactly the inference preprocessing.

        ``actions[i]``: (horizon, n_action) in robot units. The backbone runs
        without gradients unless ``train_backbone``.
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
        inputs = self.processor(self._embodiment, [o.instruction for o in observations], images, self.device)
        state = self._state_tensor([o.state for o in observations])
        with torch.set_grad_enabled(train_backbone):
            cond, cond_mask = self.backbone(**inputs)
        act = torch.from_numpy(np.stack(actions).astype(np.float32)).to(self.device)
        target = torch.zeros(len(actions), h, self.config.decoder.action_width, device=self.device)
        target[:, :, :n] = self.normalizer.action.normalize(act)
        mask = self._action_mask.expand(len(actions), -1)
        loss: Tensor = self.decoder.loss(
            target, mask, state.to(self.decoder_dtype), cond, cond_mask, generator=generator
        )
        return loss

    # ----------------------------------------------------------------- helpers

    @property
    def decoder_dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def validate(self, obs: Observation) -> None:
        """Raise ObservationError if the observation does not fit the embodiment."""
        e = self._embodiment
        if not isinstance(obs.instruction, str) or not obs.instruction.strip():
            raise ObservationError("instruction must be a non-empty string")
        want = set(e.camera_names)
        got = set(obs.images)
        if got != want:
            missing, extra = sorted(want - got), sorted(got - want)
            raise ObservationError(
                f"camera images do not match embodiment '{e.name}': missing {missing}, unexpected {extra}"
            )
        for cam in e.cameras:
            img = obs.images[cam.name]
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
                kind = getattr(img, "dtype", type(img).__name__)
                raise ObservationError(f"camera {cam.name}: images must be uint8 numpy arrays, got {kind}")
            shape = (cam.history.frames, cam.height, cam.width, 3)
            if img.shape != shape:
                raise ObservationError(
                    f"camera {cam.name}: expected images shaped {shape} (frames, height, width, RGB), "
                    f"got {img.shape}"
                )
        state = np.asarray(obs.state)
        if state.shape != (len(e.state),):
            raise ObservationError(f"state must have shape ({len(e.state)},), got {state.shape}")
        if not np.all(np.isfinite(state)):
            bad = [e.state_names[i] for i in np.flatnonzero(~np.isfinite(state))]
            raise ObservationError(f"state has non-finite values in {bad}")
        if obs.action_prefix is not None:
            p = np.asarray(obs.action_prefix)
            if p.ndim != 2 or p.shape[1] != self._n_act or not 0 < p.shape[0] <= e.horizon:
                raise ObservationError(
                    f"action_prefix must have shape (k, {self._n_act}) with 1 <= k <= {e.horizon}, "
                    f"got {p.shape}"
                )
            if not np.all(np.isfinite(p)):
                raise ObservationError("action_prefix has non-finite values")
            if obs.prefix_weight is not None:
                w = np.asarray(obs.prefix_weight)
                if w.shape != (p.shape[0],) or not np.all(np.isfinite(w)) or np.any((w < 0) | (w > 1)):
                    raise ObservationError(
                        f"prefix_weight must be {p.shape[0]} finite values in [0, 1], got shape {w.shape}"
                    )
        elif obs.prefix_weight is not None:
            raise ObservationError("prefix_weight given without action_prefix")
        if not math.isfinite(float(obs.stamp)):
            raise ObservationError(f"stamp must be finite, got {obs.stamp}")

    def _image_tensors(self, obs: Observation) -> list[Tensor]:
        return [
            torch.from_numpy(np.ascontiguousarray(obs.images[name])) for name in self._embodiment.camera_names
        ]

    def _state_tensor(self, states: Sequence[FloatArray]) -> Tensor:
        d = self.config.decoder
        out = torch.zeros(len(states), d.state_width, device=self.device)
        if self._n_state:
            raw = torch.from_numpy(np.stack([np.asarray(s, dtype=np.float32) for s in states])).to(
                self.device
            )
            out[:, : self._n_state] = self.normalizer.state.normalize(raw)
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


def build_random_backbone(config: Any, dtype: torch.dtype, seed: int, device: str = "cpu") -> Any:
    """A randomly initialised ``...ForConditionalGeneration`` for ``config`` (builder helper)."""
    torch.manual_seed(seed)
    klass = model_class(config.model_type)
    with torch.device(device):
        model = klass._from_config(config, dtype=dtype)
    model.eval()
    if text_hidden_size(model.config) <= 0:
        raise CheckpointError("backbone hidden size must be positive")
    return model
