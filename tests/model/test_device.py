"""Device decisions on a CPU: the CUDA branches run against made-up machines (model/device.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from qvla_core.embodiment import Embodiment
from qvla_core.errors import DeviceError, QvlaError
from qvla_core.model import device as dev
from qvla_core.model.backbone import Backbone
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.policy import Observation

H100 = dev.CudaDevice("NVIDIA H100 80GB HBM3", (9, 0), 80 * 2**30)
V100 = dev.CudaDevice("Tesla V100-SXM2-16GB", (7, 0), 16 * 2**30)


def caps(*gpus: dev.CudaDevice, build: str | None = "12.8", free: int | None = 3 * 2**30) -> dev.DeviceCaps:
    return dev.DeviceCaps("2.13.0", build, gpus, free_bytes=lambda index: free)


@pytest.mark.parametrize(
    ("device", "dtype", "machine", "message"),
    [
        (
            "cuda",
            "bfloat16",
            caps(build=None),
            "CUDA is not available on this machine (this torch (2.13.0) is a CPU",
        ),
        ("cuda", "bfloat16", caps(), "(torch 2.13.0 (CUDA 12.8) sees no GPU); pass device:=cpu"),
        (
            "cuda:1",
            "float32",
            caps(H100),
            "only 1 CUDA device(s) are visible (cuda:0..cuda:0); pass device:=cuda:0",
        ),
        (
            "cuda",
            "bfloat16",
            caps(V100),
            "compute capability 7.0; bfloat16 needs 8.0 or newer); pass dtype:=float16",
        ),
        ("gpu", "float32", caps(H100), "device 'gpu' is not a device name; pass device:=cpu"),
        ("mps", "float32", caps(H100), "qvla runs on cpu or cuda only"),
        ("cpu", "float64", caps(), "dtype 'float64' is not one of float32, bfloat16, float16"),
    ],
)
def test_refusals_name_the_argument(device: str, dtype: str, machine: dev.DeviceCaps, message: str) -> None:
    with pytest.raises(DeviceError) as err:
        dev.resolve_placement(device, dtype, machine)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_accepted_placements() -> None:
    p = dev.resolve_placement("cuda", "bfloat16", caps(H100, V100))
    assert p.device == torch.device("cuda", 0) and p.dtype == torch.bfloat16 and p.is_cuda
    assert p.device_map() == {"": "cuda:0"} and "H100" in p.describe()
    assert dev.resolve_placement("cuda:1", "float16", caps(H100, V100)).device == torch.device("cuda", 1)
    cpu = dev.resolve_placement("cpu", "bfloat16", caps())
    assert cpu.device_map() == {"": "cpu"} and not cpu.is_cuda


def test_out_of_memory_messages() -> None:
    gpu = dev.resolve_placement("cuda", "bfloat16", caps(H100))
    text = str(dev.out_of_memory(gpu, "loading the qwen3_5 backbone", 9 * 2**30, dev.LOAD_ADVICE))
    assert (
        "out of GPU memory while loading the qwen3_5 backbone (about 9.0 GiB of weights in bfloat16)" in text
    )
    assert "3.0 GiB free of 80.0 GiB on cuda:0" in text and "nvidia-smi" in text
    cpu = dev.resolve_placement("cpu", "float32", caps())
    with (
        pytest.raises(DeviceError, match="out of host memory while testing: free"),
        dev.oom_as_error(cpu, "testing", "free some"),
    ):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_autocast_and_synchronize_on_cpu() -> None:
    cpu = torch.device("cpu")
    with dev.autocast(cpu, torch.bfloat16):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with dev.autocast(cpu, torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    dev.synchronize(cpu)  # a no-op, and no CUDA call on a CPU machine


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_policy_on_cuda_without_cuda(ckpt_dir: Path, arm7: Embodiment) -> None:
    with pytest.raises(QvlaError) as err:
        QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7, device="cuda", dtype="bfloat16")
    assert isinstance(err.value, DeviceError)
    assert "CUDA is not available" in str(err.value) and "pass device:=cpu" in str(err.value)


def test_backbone_loads_through_the_device_map(ckpt_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one load path every device takes: device_map with the placement's device, loading info checked."""
    from qvla_core.model import backbone as bb

    seen: dict[str, Any] = {}
    real = bb.model_class("qwen3_vl").from_pretrained

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return real(*args, **kwargs)

    klass = bb.model_class("qwen3_vl")
    monkeypatch.setattr(klass, "from_pretrained", spy)
    model = Backbone.from_pretrained(ckpt_dir / "backbone", dtype=torch.bfloat16)
    assert seen["device_map"] == {"": "cpu"} and seen["output_loading_info"] is True
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_oom_at_load_and_first_inference(
    ckpt_dir: Path, arm7: Embodiment, obs_factory: Callable[..., Observation], monkeypatch: pytest.MonkeyPatch
) -> None:
    from qvla_core.model import backbone as bb

    def oom(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    klass = bb.model_class("qwen3_vl")
    real = klass.from_pretrained
    monkeypatch.setattr(klass, "from_pretrained", oom)
    with pytest.raises(
        DeviceError, match=r"out of host memory while loading the qwen3_vl backbone from .*: free"
    ):
        QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7)
    monkeypatch.setattr(klass, "from_pretrained", real)
    policy = QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7)
    monkeypatch.setattr(policy.backbone, "forward", oom)
    with pytest.raises(
        DeviceError, match=r"while running the first inference: .*fewer cameras or a smaller image_size"
    ):
        policy.infer(obs_factory(arm7))


def test_missing_accelerate_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DeviceError, match=r"pip install accelerate==1.15.0"):
        dev.require_accelerate()


def test_engine_warm_up_reports_out_of_memory(
    ckpt_dir: Path, aloha: Embodiment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's configure runs warm_up: an OOM there fails configure instead of a warning and a
    robot left commanded by a model that cannot run."""
    from qvla_core.robot_io import load_robot_config
    from qvla_core.runtime.engine import PolicyEngine
    from tests.core.test_engine import ALOHA, RecordingSink

    policy = QwenVLAPolicy.from_checkpoint(ckpt_dir, aloha)

    def oom(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(policy.backbone, "forward", oom)
    engine = PolicyEngine(load_robot_config(ALOHA), policy, lambda: 0.0, RecordingSink(), decode=lambda i: i)
    try:
        with pytest.raises(DeviceError, match="while running the first inference"):
            engine.warm_up()
    finally:
        engine.shutdown()
