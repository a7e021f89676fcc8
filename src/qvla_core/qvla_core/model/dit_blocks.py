"""Building blocks of the DiT action decoder.

* :func:`timestep_features` / :class:`TimeEmbedding` -- flow time t in [0, 1] -> conditioning vector.
* :class:`DiTBlock` -- adaLN-Zero block: self-attention, cross-attention to backbone tokens, MLP.
* :class:`FinalLayer` -- adaLN + linear projection back to the action channels.

All attention goes through :func:`torch.nn.functional.scaled_dot_product_attention`, so the fused
flash / memory-efficient kernels are picked on a GPU.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TIME_FEATURES = 256
# t in [0, 1] is scaled like a DiT timestep in [0, 1000]; without it the 10 points of an Euler grid
# differ only in the lowest frequencies and the embedding can barely tell them apart.
TIME_SCALE = 1000.0


def timestep_features(t: Tensor, dim: int = TIME_FEATURES, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of the flow time, (B,) -> (B, dim), always computed in float32.

    The phases reach ~1000 rad; in bf16 (8 mantissa bits) they would be off by several radians,
    so the features are computed in fp32 and cast only afterwards (values in [-1, 1] are safe).
    """
    half = dim // 2
    exponent = torch.arange(half, device=t.device, dtype=torch.float32) / half
    freqs = torch.exp(-math.log(max_period) * exponent)
    phases = t.to(torch.float32)[:, None] * TIME_SCALE * freqs[None, :]
    return torch.cat([torch.cos(phases), torch.sin(phases)], dim=-1)


class TimeEmbedding(nn.Module):
    """Sinusoidal features -> MLP -> (B, hidden) conditioning vector."""

    def __init__(self, hidden: int, features: int = TIME_FEATURES) -> None:
        super().__init__()
        self.features = features
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, t: Tensor) -> Tensor:
        feats = timestep_features(t, self.features).to(self.fc1.weight.dtype)
        out: Tensor = self.fc2(F.silu(self.fc1(feats)))
        return out


class CrossKV(NamedTuple):
    """Cross-attention keys and values of one block, each (B, heads, L, head_dim)."""

    key: Tensor
    value: Tensor


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, N, D) -> (B, heads, N, D // heads)."""
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, heads, N, head_dim) -> (B, N, heads * head_dim)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: per-sample affine transform of a normalised sequence; shift/scale are (B, 1, D)."""
    return x * (1.0 + scale) + shift


# The adaLN modulation of a DiTBlock: 9 chunks, shift/scale/gate of self-attention, cross-attention and
# MLP in that order (see DiTBlock.forward); chunk 5 is the cross-attention gate.
MODULATION_CHUNKS = 9
CROSS_GATE_CHUNK = 5


def set_cross_gate(modulation_bias: Tensor, value: float) -> None:
    """Set, in place, the cross-attention gate's part of a DiTBlock's modulation bias (9 * hidden,)."""
    width = modulation_bias.shape[0] // MODULATION_CHUNKS
    with torch.no_grad():
        modulation_bias[CROSS_GATE_CHUNK * width : (CROSS_GATE_CHUNK + 1) * width] = value


def _layer_norm(hidden: int) -> nn.LayerNorm:
    # No learned affine: the adaLN shift/scale replace it (DiT).
    return nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)


class DiTBlock(nn.Module):
    """adaLN-Zero DiT block with three residual branches, each modulated by the time embedding.

    x <- x + g1 * SelfAttn(mod(LN(x)));  x <- x + g2 * CrossAttn(mod(LN(x)), cond);
    x <- x + g3 * MLP(mod(LN(x))).  The modulation layer is zero-initialised, so every gate g is 0
    at init and the block starts as the identity (DiT's adaLN-Zero); ``cross_gate_init`` starts g2
    at that value instead, so the backbone tokens reach the actions from the first step.
    """

    def __init__(
        self, hidden: int, heads: int, mlp_ratio: float, cond_dim: int, *, cross_gate_init: float = 0.0
    ) -> None:
        super().__init__()
        self.heads = heads
        self.norm_self = _layer_norm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.self_out = nn.Linear(hidden, hidden)
        self.norm_cross = _layer_norm(hidden)
        self.cross_q = nn.Linear(hidden, hidden)
        # K/V read the backbone tokens at their own width, so no shared down-projection is needed.
        self.cross_kv = nn.Linear(cond_dim, 2 * hidden)
        self.cross_out = nn.Linear(hidden, hidden)
        self.norm_mlp = _layer_norm(hidden)
        mlp_hidden = round(hidden * mlp_ratio)
        self.mlp_in = nn.Linear(hidden, mlp_hidden)
        self.mlp_out = nn.Linear(mlp_hidden, hidden)
        self.modulation = nn.Linear(hidden, MODULATION_CHUNKS * hidden)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        set_cross_gate(self.modulation.bias, cross_gate_init)

    def project_cond(self, cond: Tensor) -> CrossKV:
        """Cross-attention K/V of the (normalised) backbone tokens (B, L, C); reusable across steps."""
        key, value = self.cross_kv(cond).chunk(2, dim=-1)
        return CrossKV(split_heads(key, self.heads), split_heads(value, self.heads))

    def forward(self, x: Tensor, c: Tensor, kv: CrossKV, cond_attn_mask: Tensor) -> Tensor:
        """x (B, N, D) tokens, c (B, D) time embedding, cond_attn_mask (B, 1, 1, L) bool."""
        mods: tuple[Tensor, ...] = self.modulation(F.silu(c))[:, None, :].chunk(MODULATION_CHUNKS, dim=-1)
        h = modulate(self.norm_self(x), mods[0], mods[1])
        x = x + mods[2] * self._self_attention(h)
        h = modulate(self.norm_cross(x), mods[3], mods[4])
        x = x + mods[CROSS_GATE_CHUNK] * self._cross_attention(h, kv, cond_attn_mask)
        h = modulate(self.norm_mlp(x), mods[6], mods[7])
        mlp: Tensor = self.mlp_out(F.gelu(self.mlp_in(h), approximate="tanh"))
        return x + mods[8] * mlp

    def _self_attention(self, h: Tensor) -> Tensor:
        # Bidirectional over [state token, action tokens]: a chunk is denoised as a whole.
        q, k, v = (split_heads(p, self.heads) for p in self.qkv(h).chunk(3, dim=-1))
        out: Tensor = self.self_out(merge_heads(F.scaled_dot_product_attention(q, k, v)))
        return out

    def _cross_attention(self, h: Tensor, kv: CrossKV, cond_attn_mask: Tensor) -> Tensor:
        q = split_heads(self.cross_q(h), self.heads)
        att = F.scaled_dot_product_attention(q, kv.key, kv.value, attn_mask=cond_attn_mask)
        out: Tensor = self.cross_out(merge_heads(att))
        return out


class FinalLayer(nn.Module):
    """adaLN (shift, scale from the time embedding) + linear projection to the action channels.

    Both the modulation and the projection start at zero, so the untrained decoder predicts a zero
    velocity (DiT's initialisation).
    """

    def __init__(self, hidden: int, out_width: int) -> None:
        super().__init__()
        self.norm = _layer_norm(hidden)
        self.modulation = nn.Linear(hidden, 2 * hidden)
        self.proj = nn.Linear(hidden, out_width)
        for layer in (self.modulation, self.proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.modulation(F.silu(c))[:, None, :].chunk(2, dim=-1)
        out: Tensor = self.proj(modulate(self.norm(x), shift, scale))
        return out


def cond_attention_mask(cond_mask: Tensor) -> Tensor:
    """(B, L) bool (True = real token) -> (B, 1, 1, L) bool mask for SDPA.

    A row with no real token would give NaN (softmax over nothing); such rows attend to all their
    tokens instead. Done with tensor ops, so it costs no host sync.
    """
    none_valid = ~cond_mask.any(dim=-1, keepdim=True)
    return (cond_mask | none_valid)[:, None, None, :]


__all__ = [
    "CrossKV",
    "DiTBlock",
    "FinalLayer",
    "TimeEmbedding",
    "cond_attention_mask",
    "merge_heads",
    "modulate",
    "set_cross_gate",
    "split_heads",
    "timestep_features",
]
