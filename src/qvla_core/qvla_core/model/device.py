"""Where the model runs: every device-dependent decision of qvla_core, in one place.

The rest of the model code never asks ``torch.cuda`` anything itself. It gets a :class:`Placement`
from :func:`resolve_placement` (device + dtype, checked against what the machine offers) and calls
the helpers here for what differs per device: the ``device_map`` a backbone loads with, the
synchronisation that closes a timed stage, autocast for training, the memory numbers an
out-of-memory message quotes. What the machine offers is a :class:`DeviceCaps` value: tests pass
a made-up one (a CUDA machine with a pre-Ampere card, say) and so run the CUDA branches of these
decisions on a CPU.

Every refusal is a :class:`~qvla_core.errors.DeviceError`, one line that names the launch argument
to change (``device:=cpu``, ``dtype:=float32``), so the policy node reports it at configure and
stays up, unconfigured.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from qvla_core.errors import DeviceError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
GIB = float(1 << 30)
T = TypeVar("T")


@dataclass(frozen=True)
class CudaDevice:
    """One visible CUDA device, as torch reports it."""

    name: str
    capability: tuple[int, int]
    total_bytes: int

    @property
    def bf16(self) -> bool:
        # bfloat16 arithmetic needs Ampere (compute capability 8.0) or newer.
        return self.capability >= (8, 0)


@dataclass(frozen=True)
class DeviceCaps:
    """What this machine offers: the facts every placement decision is made from."""

    torch_version: str
    cuda_build: str | None  # torch.version.cuda: None for a CPU-only build of torch
    cuda_devices: tuple[CudaDevice, ...] = ()
    free_bytes: Callable[[int], int | None] = field(default=lambda index: None, compare=False)

    @property
    def cuda_available(self) -> bool:
        return bool(self.cuda_devices)


def probe() -> DeviceCaps:
    """The real machine's capabilities (touches CUDA only where torch was built with it)."""
    devices: list[CudaDevice] = []
    if torch.version.cuda is not None and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(CudaDevice(props.name, (props.major, props.minor), int(props.total_memory)))
    return DeviceCaps(torch.__version__, torch.version.cuda, tuple(devices), free_bytes=_cuda_free_bytes)


def _cuda_free_bytes(index: int) -> int | None:
    try:
        free, _ = torch.cuda.mem_get_info(index)
    except (RuntimeError, AssertionError):
        return None
    return int(free)


@dataclass(frozen=True)
class Placement:
    """A checked (device, dtype) pair and the machine it was checked against."""

    device: torch.device
    dtype: torch.dtype
    caps: DeviceCaps

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def dtype_name(self) -> str:
        return next(k for k, v in DTYPES.items() if v == self.dtype)

    def device_map(self) -> dict[str, str]:
        """The ``device_map`` a transformers model loads with: every weight straight onto this
        device, one shard at a time (no full copy in host memory first), on CPU and CUDA alike."""
        return {"": str(self.device)}

    def describe(self) -> str:
        if not self.is_cuda:
            return f"{self.device} ({self.dtype_name})"
        gpu = self.caps.cuda_devices[self.device.index or 0]
        return f"{self.device} ({gpu.name}, {gpu.total_bytes / GIB:.0f} GiB, {self.dtype_name})"


def resolve_placement(device: str, dtype: str, caps: DeviceCaps | None = None) -> Placement:
    """Check that ``device`` exists here and can run ``dtype``; raise DeviceError otherwise."""
    caps = caps or probe()
    if dtype not in DTYPES:
        raise DeviceError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}; pass dtype:=float32")
    try:
        where = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(
            f"device {device!r} is not a device name; pass device:=cpu or device:=cuda"
        ) from None
    if where.type == "cpu":
        return Placement(torch.device("cpu"), DTYPES[dtype], caps)
    if where.type != "cuda":
        raise DeviceError(f"device {device!r}: qvla runs on cpu or cuda only; pass device:=cpu")
    if not caps.cuda_available:
        why = (
            f"this torch ({caps.torch_version}) is a CPU-only build"
            if caps.cuda_build is None
            else f"torch {caps.torch_version} (CUDA {caps.cuda_build}) sees no GPU"
        )
        raise DeviceError(
            f"device {device!r}: CUDA is not available on this machine ({why}); pass device:=cpu"
        )
    index = 0 if where.index is None else where.index
    if index >= len(caps.cuda_devices):
        raise DeviceError(
            f"device {device!r}: only {len(caps.cuda_devices)} CUDA device(s) are visible "
            f"(cuda:0..cuda:{len(caps.cuda_devices) - 1}); pass device:=cuda:0"
        )
    gpu = caps.cuda_devices[index]
    if dtype == "bfloat16" and not gpu.bf16:
        raise DeviceError(
            f"dtype 'bfloat16' is not supported on cuda:{index} ({gpu.name}, compute capability "
            f"{gpu.capability[0]}.{gpu.capability[1]}; bfloat16 needs 8.0 or newer); pass dtype:=float16"
        )
    return Placement(torch.device("cuda", index), DTYPES[dtype], caps)


def require_accelerate() -> None:
    """transformers needs accelerate for any ``device_map`` (the loader always passes one)."""
    if importlib.util.find_spec("accelerate") is None:
        raise DeviceError(
            "loading a backbone needs the accelerate package (transformers requires it for device_map): "
            "pip install accelerate==1.15.0"
        )


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on a CPU, whose work is already done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[object]:
    """Mixed precision for training: ``dtype`` autocast on the device (CUDA bf16), else nothing."""
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _memory_line(placement: Placement) -> str:
    if not placement.is_cuda:
        return ""
    index = placement.device.index or 0
    total = placement.caps.cuda_devices[index].total_bytes
    free = placement.caps.free_bytes(index)
    have = (
        f"{free / GIB:.1f} GiB free of {total / GIB:.1f} GiB"
        if free is not None
        else f"{total / GIB:.1f} GiB"
    )
    return f"; {have} on {placement.device}"


def out_of_memory(placement: Placement, stage: str, need_bytes: int | None, advice: str) -> DeviceError:
    """The one-line error for an out-of-memory during ``stage``: what it needed, what is free, what to try."""
    need = f" (about {need_bytes / GIB:.1f} GiB of weights in {placement.dtype_name})" if need_bytes else ""
    where = "GPU" if placement.is_cuda else "host"
    return DeviceError(f"out of {where} memory while {stage}{need}{_memory_line(placement)}: {advice}")


LOAD_ADVICE = (
    "free the GPU (nvidia-smi lists the processes holding it), pass dtype:=bfloat16 (half the bytes of "
    "float32), or use a smaller backbone"
)
INFER_ADVICE = (
    "free the GPU (nvidia-smi lists the processes holding it), use fewer cameras or a smaller image_size "
    "in the checkpoint, or pass dtype:=bfloat16"
)


@contextmanager
def oom_as_error(
    placement: Placement, stage: str, advice: str, need_bytes: int | None = None
) -> Iterator[None]:
    """Turn torch's out-of-memory error inside the block into :func:`out_of_memory`'s DeviceError."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        if placement.is_cuda:
            torch.cuda.empty_cache()
        raise out_of_memory(placement, stage, need_bytes, advice) from exc


def parameter_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())
