"""DiT flow-matching action decoder (Qwen-VLA style), pure PyTorch.

Qwen-VLA publishes only the outline (a 1.15B-parameter DiT with 16 blocks on a Qwen3.5-4B backbone,
one shared padded action vector with per-embodiment channel masks). The details below follow pi0
(openpi) and GR00T's flow head where Qwen-VLA is silent; each choice is stated here.

Tokens and conditioning
    One state token (``Linear([state, action_mask])`` -- the mask tells the model which channels this
    embodiment uses) followed by H action tokens (``Linear(x_t)`` + a learned position embedding of
    ``max_horizon`` rows). Each DiT block: adaLN-Zero on the flow-time embedding (sinusoidal(t*1000)
    -> MLP) modulating three branches: bidirectional self-attention over [state + H actions],
    cross-attention to the backbone tokens ``cond`` (LayerNorm'd once, padded tokens masked out),
    GELU MLP. Final adaLN + zero-initialised linear to A channels, so the untrained decoder
    predicts velocity 0.

Pooled conditioning (``pooled_cond``, the ``small_conv`` preset)
    The masked mean of the (LayerNorm'd) backbone tokens, through a linear layer, is added to the
    flow-time embedding, so every block's adaLN shift, scale and gate depend on the scene (FiLM, as
    Diffusion Policy conditions its U-Net on the image features; SD3 adds a pooled text embedding
    to its timestep embedding the same way). Why: cross-attention alone, from a vision stem trained
    from scratch, reached the actions too slowly for a CPU budget (docs/bench/learned_policy_probe.md:
    after 900 steps the first chunk still followed the cube with slope 0.28). ``cross_gate_init``
    opens the cross-attention gates at initialisation for the same reason (adaLN-Zero starts them at 0).

Flow-matching convention (pi0's)
    x_t = t * noise + (1 - t) * action, target velocity u = noise - action. Training draws
    t = 0.001 + 0.999 * Beta(1.5, 1) (more weight on noisy times, as pi0), sampled by inverse CDF
    (u ** (2/3)) so a ``torch.Generator`` controls it. Inference integrates from t = 1 (pure noise)
    to t = 0 with N Euler steps on a precomputed uniform grid: x <- x + (t_next - t) * v(x, t).

Padded channels
    Zeroed on input (noise and actions), excluded from the loss, zeroed in the predicted velocity,
    and the sampler returns exactly 0 in them (``torch.where`` on the mask at the end).

Inpainting (real-time chunking)
    Given a prefix P (B, k, A) and weights w (B, k) in [0, 1] (clamped, default 1): after every
    Euler step, landing at time t_next, the first k rows become
    ``w * (t_next * noise + (1 - t_next) * P) + (1 - w) * x``, i.e. they are pulled towards the
    prefix noised to the current time with the same noise the chain started from. At the last step
    t_next = 0, so rows with w = 1 equal P exactly; w = 0 leaves the sample unconstrained (the
    result equals the sample without a prefix); intermediate w give a soft guide (RTC's decaying
    weights). This is hard/soft replacement inpainting, not RTC's gradient guidance.

GPU readiness
    Time features and the loss are computed in fp32; the Euler state is kept in fp32 and only each
    step's network input is cast to the parameter dtype (bf16 works). The denoising loop has no
    host syncs: the time grid is precomputed, there is no ``.item()`` and no branching on tensor
    values. Cross-attention K/V of the backbone tokens are projected once per ``sample()`` and
    reused by every step. :meth:`ActionDecoder.enable_compiled_step` wraps the per-step function
    with ``torch.compile`` (off by default); model/denoise_graph.py captures the whole loop as a CUDA
    graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from qvla_core.errors import ConfigError
from qvla_core.model.dit_blocks import CrossKV, DiTBlock, FinalLayer, TimeEmbedding, cond_attention_mask

# pi0: t ~ Beta(1.5, 1) * 0.999 + 0.001 (density rising towards t = 1, the noisy end).
BETA_ALPHA = 1.5
T_MIN = 0.001


class StepContext(NamedTuple):
    """What every denoising step of one sample() call shares, computed once."""

    state_token: Tensor  # (B, 1, D): state + channel mask
    cross_kv: tuple[CrossKV, ...]  # per block, from the backbone tokens
    cond_attn_mask: Tensor  # (B, 1, 1, L) bool
    action_mask: Tensor  # (B, A) bool
    pooled: Tensor  # (B, D): added to the time embedding (zeros without pooled_cond)


StepFn = Callable[[Tensor, Tensor, StepContext], Tensor]


# DecoderConfig fields that are not positive integers: what from_dict expects of each.
_KIND = {"mlp_ratio": "a number", "cross_gate_init": "a number", "pooled_cond": "true or false"}
_NOT_POSITIVE = ("pooled_cond", "cross_gate_init")


@dataclass(frozen=True)
class DecoderConfig:
    """Shape of the decoder; the defaults are the tiny test model."""

    action_width: int = 32  # padded action channels shared by all embodiments
    state_width: int = 32  # padded state channels
    max_horizon: int = 256  # size of the action-position table; horizon <= this
    hidden: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    cond_dim: int = 64  # backbone hidden size (cross-attention key/value input)
    num_steps: int = 10  # Euler steps at inference
    # FiLM path (module docstring, "Pooled conditioning"): the mean of the backbone tokens, projected,
    # joins the flow-time embedding that modulates every block. Off in checkpoints written before it.
    pooled_cond: bool = False
    # Initial value of every block's cross-attention gate (0: DiT's adaLN-Zero).
    cross_gate_init: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _NOT_POSITIVE:
                continue
            if value <= 0:
                raise ConfigError(f"DecoderConfig.{f.name} must be > 0, got {value!r}")
        if self.hidden % self.heads:
            raise ConfigError(
                f"DecoderConfig.hidden ({self.hidden}) must be divisible by heads ({self.heads})"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecoderConfig:
        """Build from a plain dict (e.g. a checkpoint's JSON); unknown keys and wrong types are errors."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"DecoderConfig: unknown key(s) {unknown}; allowed keys are {sorted(known)}")
        for name, value in d.items():
            kind = _KIND.get(name, "an integer")
            if kind == "true or false":
                ok = isinstance(value, bool)
            elif kind == "a number":
                ok = isinstance(value, int | float) and not isinstance(value, bool)
            else:
                ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok:
                raise ConfigError(f"DecoderConfig.{name} must be {kind}, got {value!r}")
        values = dict(d)
        for name in ("mlp_ratio", "cross_gate_init"):
            if name in values:
                values[name] = float(values[name])
        return cls(**values)


DECODER_PRESETS: dict[str, DecoderConfig] = {
    # Fast on a CPU; what the tests and the tiny end-to-end model use.
    "tiny": DecoderConfig(),
    # Trainable on a CPU in well under an hour (the learned TransferCube demo): 1.7M parameters.
    "small": DecoderConfig(hidden=128, depth=4, heads=4),
    # `small` for a vision stem learned from scratch: the image reaches the actions from the first
    # step (open cross-attention gates, pooled FiLM conditioning); docs/bench/learned_policy_probe.md.
    "small_conv": DecoderConfig(hidden=128, depth=4, heads=4, pooled_cond=True, cross_gate_init=1.0),
    # Qwen-VLA scale: 16 blocks on a Qwen3.5-4B backbone (hidden 2560) -> 1,153,710,112 parameters
    # (the published 1.15B). Width 1536 = 24 heads x 64 (a head size fused GPU attention kernels
    # like, GR00T's width); the wider MLP (6x) makes up the count with 16 blocks (4x gives 1.00B).
    "full": DecoderConfig(hidden=1536, depth=16, heads=24, mlp_ratio=6.0, cond_dim=2560),
}


def _randn(
    shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """fp32 normal noise drawn on the generator's device (a CPU generator works for a GPU model)."""
    where = device if generator is None else generator.device
    return torch.randn(shape, generator=generator, device=where, dtype=torch.float32).to(device)


def draw_noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """The starting noise of :meth:`ActionDecoder.sample` as it draws it (for callers that draw it
    outside, e.g. a CUDA-graph replay: same generator, same noise)."""
    return _randn(shape, generator, device)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    where = device if generator is None else generator.device
    return torch.rand(shape, generator=generator, device=where, dtype=torch.float32).to(device)


class ActionDecoder(nn.Module):
    """Predicts an action chunk (B, H, A) by flow matching, conditioned on backbone tokens and state."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.action_in = nn.Linear(c.action_width, c.hidden)
        self.state_in = nn.Linear(c.state_width + c.action_width, c.hidden)
        self.action_pos = nn.Parameter(torch.empty(c.max_horizon, c.hidden))
        nn.init.normal_(self.action_pos, std=0.02)
        self.time_embed = TimeEmbedding(c.hidden)
        self.cond_norm = nn.LayerNorm(c.cond_dim)
        self.blocks = nn.ModuleList(
            DiTBlock(c.hidden, c.heads, c.mlp_ratio, c.cond_dim, cross_gate_init=c.cross_gate_init)
            for _ in range(c.depth)
        )
        self.cond_pool = nn.Linear(c.cond_dim, c.hidden) if c.pooled_cond else None
        self.final = FinalLayer(c.hidden, c.action_width)
        self._step: StepFn = self._velocity

    # ----------------------------------------------------------------- public API

    def forward(
        self,
        noisy_actions: Tensor,
        t: Tensor,
        state: Tensor,
        cond: Tensor,
        cond_mask: Tensor,
        action_mask: Tensor,
    ) -> Tensor:
        """Predicted velocity (B, H, A) at flow time t (B,); zero in padded channels."""
        batch, _ = self._check_actions("noisy_actions", noisy_actions)
        self._check_context(batch, state, cond, cond_mask, action_mask)
        self._check_shape("t", t, (batch,))
        return self._velocity(noisy_actions, t, self._context(state, cond, cond_mask, action_mask))

    def loss(
        self,
        actions: Tensor,
        action_mask: Tensor,
        state: Tensor,
        cond: Tensor,
        cond_mask: Tensor,
        *,
        generator: torch.Generator | None = None,
        step_mask: Tensor | None = None,
    ) -> Tensor:
        """Flow-matching MSE (fp32 scalar) over valid channels (and valid rows, if step_mask (B, H))."""
        batch, horizon = self._check_actions("actions", actions)
        self._check_context(batch, state, cond, cond_mask, action_mask)
        weight = action_mask[:, None, :].to(torch.float32).expand(batch, horizon, -1)
        if step_mask is not None:
            self._check_bool("step_mask", step_mask, (batch, horizon))
            weight = weight * step_mask[:, :, None].to(torch.float32)
        noise = _randn(actions.shape, generator, actions.device)
        u = _rand((batch,), generator, actions.device)
        t = T_MIN + (1.0 - T_MIN) * u.pow(1.0 / BETA_ALPHA)  # inverse CDF of Beta(1.5, 1)
        target_actions = actions.to(torch.float32) * weight
        noise = noise * weight
        tb = t[:, None, None]
        x_t = tb * noise + (1.0 - tb) * target_actions
        velocity = self.forward(x_t, t, state, cond, cond_mask, action_mask).to(torch.float32)
        err = (velocity - (noise - target_actions)).square() * weight
        return err.sum() / weight.sum().clamp_min(1.0)

    @torch.no_grad()
    def sample(
        self,
        state: Tensor,
        cond: Tensor,
        cond_mask: Tensor,
        action_mask: Tensor,
        horizon: int,
        *,
        num_steps: int | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        prefix: Tensor | None = None,
        prefix_weight: Tensor | None = None,
    ) -> Tensor:
        """Integrate the flow from noise (t=1) to actions (t=0); returns fp32 (B, H, A).

        ``noise`` (B, H, A) fixes the starting point (else drawn with ``generator``). ``prefix``
        (B, k, A) with optional ``prefix_weight`` (B, k) inpaints the first k rows (module docstring).
        """
        if state.dim() != 2:
            raise ValueError(f"state has shape {tuple(state.shape)}; expected (batch, state_width)")
        batch = state.shape[0]
        self._check_context(batch, state, cond, cond_mask, action_mask)
        self._check_horizon(horizon)
        steps = self.config.num_steps if num_steps is None else num_steps
        if steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {steps}")
        shape = (batch, horizon, self.config.action_width)
        device = self.action_pos.device
        if noise is None:
            noise = _randn(shape, generator, device)
        self._check_shape("noise", noise, shape)
        mask = action_mask[:, None, :]
        noise = torch.where(mask, noise.to(device=device, dtype=torch.float32), 0.0)
        guide = self._prefix_guide(prefix, prefix_weight, shape, mask)

        ctx = self._context(state, cond, cond_mask, action_mask)  # once, reused by every step
        grid = torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float32)
        x = noise
        for i in range(steps):
            t, t_next = grid[i], grid[i + 1]
            v = self._step(x, t.expand(batch), ctx)
            x = x + (t_next - t) * v.to(torch.float32)
            if guide is not None:
                x = self._inpaint(x, noise, t_next, *guide)
        return torch.where(mask, x, 0.0)

    def encode_cond(self, cond: Tensor, cond_mask: Tensor) -> tuple[tuple[CrossKV, ...], Tensor]:
        """Per-block cross-attention K/V of the backbone tokens and the SDPA mask (B, 1, 1, L)."""
        return self._encode_normed(self._norm_cond(cond), cond_mask)

    def enable_compiled_step(self, mode: str | None = None, fullgraph: bool = True) -> None:
        """Run each denoising step through ``torch.compile`` (shapes static per horizon/batch)."""
        self._step = torch.compile(self._velocity, mode=mode, fullgraph=fullgraph, dynamic=False)

    def disable_compiled_step(self) -> None:
        self._step = self._velocity

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ----------------------------------------------------------------- internals

    @property
    def _dtype(self) -> torch.dtype:
        return self.action_pos.dtype

    def _dit_blocks(self) -> list[DiTBlock]:
        return [b for b in self.blocks if isinstance(b, DiTBlock)]

    def _state_token(self, state: Tensor, action_mask: Tensor) -> Tensor:
        """(B, 1, D): the state plus the embodiment's channel mask, constant across steps."""
        features = torch.cat([state.to(self._dtype), action_mask.to(self._dtype)], dim=-1)
        token: Tensor = self.state_in(features)
        return token[:, None, :]

    def _norm_cond(self, cond: Tensor) -> Tensor:
        normed: Tensor = self.cond_norm(cond.to(self._dtype))
        return normed

    def _encode_normed(self, normed: Tensor, cond_mask: Tensor) -> tuple[tuple[CrossKV, ...], Tensor]:
        kv = tuple(block.project_cond(normed) for block in self._dit_blocks())
        return kv, cond_attention_mask(cond_mask.to(normed.device))

    def _context(self, state: Tensor, cond: Tensor, cond_mask: Tensor, action_mask: Tensor) -> StepContext:
        normed = self._norm_cond(cond)  # once: the cross-attention K/V and the pooled mean read it
        kv, attn_mask = self._encode_normed(normed, cond_mask)
        pooled = self._pooled(normed, cond_mask)
        return StepContext(self._state_token(state, action_mask), kv, attn_mask, action_mask, pooled)

    def _pooled(self, normed: Tensor, cond_mask: Tensor) -> Tensor:
        """(B, hidden): the projected mean of the real (normalised) backbone tokens, or zeros without
        the FiLM path."""
        if self.cond_pool is None:
            return torch.zeros(normed.shape[0], self.config.hidden, device=normed.device, dtype=self._dtype)
        weight = cond_mask.to(device=normed.device, dtype=self._dtype)[:, :, None]
        mean = (normed * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)
        out: Tensor = self.cond_pool(mean)
        return out

    def _velocity(self, x: Tensor, t: Tensor, ctx: StepContext) -> Tensor:
        """One network evaluation: (B, H, A) noisy actions at time t (B,) -> velocity (B, H, A)."""
        horizon = x.shape[1]
        mask = ctx.action_mask[:, None, :]
        x = torch.where(mask, x, 0.0).to(self._dtype)
        tokens = torch.cat([ctx.state_token, self.action_in(x) + self.action_pos[:horizon]], dim=1)
        c = self.time_embed(t) + ctx.pooled
        for block, block_kv in zip(self._dit_blocks(), ctx.cross_kv, strict=True):
            tokens = block(tokens, c, block_kv, ctx.cond_attn_mask)
        velocity = self.final(tokens[:, 1:], c)
        return torch.where(mask, velocity, 0.0)

    def _prefix_guide(
        self, prefix: Tensor | None, weight: Tensor | None, shape: tuple[int, int, int], mask: Tensor
    ) -> tuple[Tensor, Tensor] | None:
        """Validated (prefix (B, k, A) fp32, weight (B, k, 1) fp32 in [0, 1]) or None."""
        if prefix is None:
            if weight is not None:
                raise ValueError("prefix_weight was given without a prefix")
            return None
        batch, horizon, width = shape
        if prefix.dim() != 3 or prefix.shape[0] != batch or prefix.shape[2] != width:
            raise ValueError(
                f"prefix has shape {tuple(prefix.shape)}; expected (batch={batch}, k, action_width={width})"
            )
        k = prefix.shape[1]
        if k > horizon:
            raise ValueError(f"prefix has {k} rows but the horizon is only {horizon}")
        device = mask.device
        if weight is None:
            weight = torch.ones((batch, k), device=device)
        self._check_shape("prefix_weight", weight, (batch, k))
        # Clamped rather than checked: checking values would need a host sync.
        w = weight.to(device=device, dtype=torch.float32).clamp(0.0, 1.0)[:, :, None]
        p = torch.where(mask, prefix.to(device=device, dtype=torch.float32), 0.0)
        return p, w

    @staticmethod
    def _inpaint(x: Tensor, noise: Tensor, t: Tensor, prefix: Tensor, weight: Tensor) -> Tensor:
        """Pull the first k rows of x_t towards the prefix noised to time t (exact at w = 1, t = 0)."""
        k = prefix.shape[1]
        target = t * noise[:, :k] + (1.0 - t) * prefix
        head = weight * target + (1.0 - weight) * x[:, :k]
        return torch.cat([head, x[:, k:]], dim=1)

    # ----------------------------------------------------------------- shape checks

    def _check_actions(self, name: str, x: Tensor) -> tuple[int, int]:
        width = self.config.action_width
        if x.dim() != 3 or x.shape[2] != width:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}; expected (batch, horizon, action_width={width}) "
                "-- pad every embodiment's actions to the shared width"
            )
        self._check_horizon(x.shape[1])
        return x.shape[0], x.shape[1]

    def _check_horizon(self, horizon: int) -> None:
        limit = self.config.max_horizon
        if not 1 <= horizon <= limit:
            raise ValueError(f"horizon {horizon} is outside [1, max_horizon={limit}]")

    def _check_context(
        self, batch: int, state: Tensor, cond: Tensor, cond_mask: Tensor, action_mask: Tensor
    ) -> None:
        cfg = self.config
        self._check_shape("state", state, (batch, cfg.state_width))
        if cond.dim() != 3 or cond.shape[0] != batch or cond.shape[2] != cfg.cond_dim or cond.shape[1] < 1:
            raise ValueError(
                f"cond has shape {tuple(cond.shape)}; expected (batch={batch}, tokens>=1, "
                f"cond_dim={cfg.cond_dim})"
            )
        self._check_bool("cond_mask", cond_mask, (batch, cond.shape[1]))
        self._check_bool("action_mask", action_mask, (batch, cfg.action_width))

    @staticmethod
    def _check_shape(name: str, x: Tensor, expected: tuple[int, ...]) -> None:
        if tuple(x.shape) != expected:
            raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {expected}")

    def _check_bool(self, name: str, x: Tensor, expected: tuple[int, ...]) -> None:
        self._check_shape(name, x, expected)
        if x.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor (True = valid), got {x.dtype}")
