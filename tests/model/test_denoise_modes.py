"""The policy's denoising modes give the same chunks: eager, CUDA-graph buffers (replay on a CPU)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from qvla_core.embodiment import Embodiment
from qvla_core.errors import DeviceError
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.policy import Observation

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_graph_mode_equals_eager(
    ckpt_dir: Path, arm7: Embodiment, obs_factory: Callable[..., Observation]
) -> None:
    policy = QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7, seed=4)
    obs = [obs_factory(arm7, seed=i, instruction=t) for i, t in enumerate(["pick", "open the drawer now"])]
    eager = [policy.infer(o).actions for o in obs]
    policy.set_denoise_mode("cuda_graph", graph_backend="replay")
    policy.reset()
    for o, ref in zip(obs, eager, strict=True):
        np.testing.assert_allclose(policy.infer(o).actions, ref, atol=1e-5)
    other = policy.with_embodiment(arm7)
    assert other.denoise_mode == "cuda_graph"
    with pytest.raises(ValueError, match="denoise mode must be one of"):
        policy.set_denoise_mode("fast")
    policy.set_denoise_mode("eager")
    policy.reset()
    np.testing.assert_array_equal(policy.infer(obs[0]).actions, eager[0])


def test_cuda_graph_mode_on_a_cpu_policy(ckpt_dir: Path, arm7: Embodiment) -> None:
    policy = QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7)
    with pytest.raises(DeviceError, match="needs the decoder on a CUDA device"):
        policy.set_denoise_mode("cuda_graph")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_cuda_load_infer_and_modes(
    dtype: str, ckpt_dir: Path, arm7: Embodiment, obs_factory: Callable[..., Observation]
) -> None:
    """The CUDA path end to end: device_map load, every weight on the GPU, the three denoise modes agree."""
    policy = QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7, device="cuda", dtype=dtype, seed=0)
    assert {p.device.type for p in policy.backbone.parameters()} == {"cuda"}
    assert {p.device.type for p in policy.decoder.parameters()} == {"cuda"}
    obs = obs_factory(arm7)
    chunks = {}
    for mode in ("eager", "cuda_graph", "compile"):
        policy.set_denoise_mode(mode)
        policy.reset()
        chunks[mode] = policy.infer(obs).actions
        assert np.all(np.isfinite(chunks[mode]))
    span = np.array([c.upper - c.lower for c in arm7.action], dtype=np.float32)
    for mode in ("cuda_graph", "compile"):
        assert (np.abs(chunks[mode] - chunks["eager"]) / span).max() < 0.02, mode
    cpu = QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7, seed=0, dtype=dtype)
    assert (np.abs(cpu.infer(obs).actions - chunks["eager"]) / span).max() < 0.05
