"""Training throughput of qvla-train's step: samples/s, s/step, the share spent waiting for data, peak memory.

Builds a random-initialised checkpoint (or uses ``--checkpoint``) and, without ``--dataset``, an
in-memory synthetic dataset of an ALOHA-like robot (14 joints, horizon 50, 50 Hz, ``--cameras``
cameras of ``--camera-size``), then runs the trainer's own set-up (frame cache, features cache) and
its step function (:meth:`qvla_core.training.loop.Loop.step`) for ``--warmup`` + ``--steps`` steps
through its DataLoader, timing each step's wait for data and its compute separately. One
invocation measures one configuration and adds (or replaces) its row in the Markdown table
``--out``, so several invocations build one table.

CPU, tiny preset (what runs here)::

    PYTHONPATH=src/qvla_core python bench/train_throughput.py --preset tiny --backbone qwen3_vl \\
        --device cpu --dtype float32 --train all --steps 30 --batch-size 16 \\
        --out docs/bench/train_throughput_cpu.md

GPU, Qwen-VLA scale (Qwen3.5-4B shape + 1.15B DiT; random weights drawn on the GPU)::

    PYTHONPATH=src/qvla_core python bench/train_throughput.py --preset full --backbone qwen3_5 \\
        --device cuda --dtype bfloat16 --train lora --steps 20 --batch-size 8 \\
        --out docs/bench/train_throughput_h200.md

``--profile`` also prints the torch.profiler table of the timed steps and the time in each part
of the step (the ``qvla.*`` scopes: augment, condition, decoder_loss, backward, optimizer).
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src" / "qvla_core"))
sys.path.insert(0, str(REPO / "bench"))

from machine_info import cpu_model  # noqa: E402

from qvla_core.embodiment import Embodiment, load_embodiment  # noqa: E402
from qvla_core.model.backbone import BACKBONE_TYPES  # noqa: E402
from qvla_core.model.builder import build_checkpoint  # noqa: E402
from qvla_core.model.train import linear_patch_embed  # noqa: E402
from qvla_core.training.config import load_train_config  # noqa: E402
from qvla_core.training.datasets import DatasetSpec  # noqa: E402
from qvla_core.training.frames import TrainingBatch  # noqa: E402
from qvla_core.training.loop import Loop  # noqa: E402
from qvla_core.training.session import RunSpec, Session  # noqa: E402
from qvla_core.training.synthetic import SyntheticSource  # noqa: E402

ALOHA = REPO / "config" / "robots" / "aloha.yaml"
COLUMNS = (
    "preset", "backbone", "device", "dtype", "train", "batch", "cache", "threads", "s/step", "CPU s/step",
    "samples/s", "data wait", "peak memory", "set-up s", "load",
)  # fmt: skip
KEY_COLUMNS = 8  # a row with the same first eight cells is replaced
BEGIN, END = "<!-- rows -->", "<!-- /rows -->"
LEGEND = (
    "s/step: mean (median) wall-clock seconds of the trainer's step (data + forward + backward + AdamW) "
    "over the timed steps; CPU s/step: the process's CPU time per step (with one thread: what the step "
    "costs on an unshared core); samples/s = batch / mean s/step; data wait: share of the step spent "
    "waiting for the DataLoader; cache: frames (samples read once into arrays) or features (the frozen "
    "backbone's conditioning computed once per frame, train: decoder); set-up: model load, frame and "
    "features caches. Peak memory: the CUDA allocator's peak, or the process's peak RSS on a CPU. load: "
    "the machine's 1-minute load average after the run (above the core count, other work shared the "
    "cores and wall-clock times are inflated)."
)


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} (torch {torch.__version__})"
    cpu = cpu_model()
    return f"CPU {cpu}, {os.cpu_count()} cores (torch {torch.__version__})"


def size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def robot(cameras: int, camera_size: tuple[int, int], directory: Path) -> Embodiment:
    data = yaml.safe_load(ALOHA.read_text(encoding="utf-8"))
    w, h = camera_size
    cams = data["embodiment"]["cameras"][:cameras]
    data["embodiment"]["cameras"] = [{**c, "width": w, "height": h} for c in cams]
    path = directory / "robot.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_embodiment(path)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=("tiny", "full"), default="tiny")
    p.add_argument("--backbone", choices=BACKBONE_TYPES, default="qwen3_vl")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="autocast precision")
    p.add_argument("--train", choices=("decoder", "lora", "all"), default="all")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, help="Markdown table to add the row to")
    p.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of building one")
    p.add_argument("--image-size", type=lambda t: tuple(reversed(size(t))), default=None, metavar="WxH",
                   help="model image size (tiny: 128x96, qwen2_5_vl 112x84; full: 224x224)")  # fmt: skip
    p.add_argument("--cameras", type=int, default=1, help="ALOHA cameras in the synthetic robot (1-4)")
    p.add_argument(
        "--camera-size", type=size, default=(128, 96), metavar="WxH", help="their size in the YAML"
    )
    p.add_argument("--episodes", type=int, default=8, help="synthetic episodes")
    p.add_argument("--frames", type=int, default=100, help="frames per synthetic episode")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument(
        "--no-features-cache", action="store_true", help="train: decoder without the features cache"
    )
    p.add_argument("--no-frame-cache", action="store_true", help="read samples from the dataset every step")
    p.add_argument("--augment", action="store_true", help="crop 0.9, shift 0.04, colour jitter 0.2")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of the timed steps")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also time, interleaved step by step, the trainer's step with the Conv3d patch embedding and "
        "the plain path: QwenVLAPolicy.training_loss on samples read every step (per-sample "
        "preprocessing, Conv3d), as the old one-step helper did",
    )
    return p


def baseline_step(session: Session, source: SyntheticSource, rows: list[int]) -> torch.Tensor:
    """The plain training step the trainer replaced (see --baseline)."""
    policy = next(iter(session.policies.values()))
    samples = [source[r] for r in rows]
    loss = policy.training_loss(
        [x.observation for x in samples],
        [x.actions for x in samples],
        generator=session.noise_gen,
        train_backbone=session.train_backbone,
        action_is_pad=[x.action_is_pad for x in samples],
    )
    session.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(session.trainable, 1.0)
    session.optimizer.step()
    return loss.detach()


def conv_patch_embed(model: torch.nn.Module) -> None:
    """Undo model/train.py's linear patch embedding (the instance forward falls back to the class's)."""
    for module in model.modules():
        if type(module).__name__.endswith("PatchEmbed") and "forward" in module.__dict__:
            del module.forward


def peak_memory(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB (CUDA)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (RSS)"


def measure(args: argparse.Namespace, work: Path) -> list[dict[str, str]]:
    e = robot(args.cameras, args.camera_size, work)
    # tiny: 12 tokens per image (patch 16: 96x128; Qwen2.5-VL's patch 14: 84x112); full: 224x224
    tiny = (84, 112) if args.backbone == "qwen2_5_vl" else (96, 128)
    image = args.image_size or (tiny if args.preset == "tiny" else (224, 224))
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = work / "ckpt"
        build_checkpoint(
            ckpt, preset=args.preset, backbone_type=args.backbone, embodiments=[e], stats_from_limits=True,
            image_size=image, instructions=["transfer the cube"], device=args.device,
        )  # fmt: skip
    overrides = [
        f"train={args.train}", f"device={args.device}", f"dtype={args.dtype}",
        f"schedule.steps={(args.warmup + args.steps) * (3 if args.baseline else 1)}",  # every variant
        f"schedule.batch_size={args.batch_size}",
        "validation.episodes=0", "checkpoint.every_steps=1000000", f"data.workers={args.workers}",
        f"features_cache={not args.no_features_cache}", f"data.frame_cache={not args.no_frame_cache}",
    ]  # fmt: skip
    if args.augment:
        overrides += ["augment.crop_scale=0.9", "augment.shift=0.04", "augment.brightness=0.2",
                      "augment.contrast=0.2", "augment.saturation=0.2"]  # fmt: skip
    if args.threads:
        overrides.append(f"threads={args.threads}")
    config = load_train_config(None, overrides)
    source = SyntheticSource(e, episodes=args.episodes, frames=args.frames)
    run = RunSpec(
        checkpoint=ckpt, datasets=[DatasetSpec(source, e, "synthetic")], out=work / "out", config=config,
        progress=False, command=sys.argv,
    )  # fmt: skip
    t0 = time.perf_counter()
    session = Session.open(run)
    setup = time.perf_counter() - t0
    loop = Loop(session)
    session.set_mode(training=True)
    batches = loop._loader(0)
    cached = "features" if session.train_features else ("frames" if config.data.frame_cache else "none")
    cached += f", {args.workers} workers" if args.workers else ""
    model = session.policy.backbone.model

    def trainer(batch: TrainingBatch) -> torch.Tensor:
        return loop.step(batch)[0]

    def trainer_conv(batch: TrainingBatch) -> torch.Tensor:
        conv_patch_embed(model)
        try:
            return loop.step(batch)[0]
        finally:
            linear_patch_embed(model)

    def baseline(batch: TrainingBatch) -> torch.Tensor:
        conv_patch_embed(model)
        try:
            return baseline_step(session, source, batch.rows.tolist())
        finally:
            linear_patch_embed(model)

    variants: dict[str, Callable[[TrainingBatch], torch.Tensor]] = {cached: trainer}
    if args.baseline:  # interleaved in one process, so a busy machine slows all of them alike
        if not session.train_features:  # with the features cache the backbone does not run
            variants[f"{cached}; Conv3d patch embed"] = trainer_conv
        variants["baseline: training_loss on samples, Conv3d"] = baseline
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times: dict[str, dict[str, list[float]]] = {k: {"wait": [], "total": [], "cpu": []} for k in variants}
    prof = None
    for i in range(args.warmup + args.steps):
        if i == args.warmup and args.profile:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
            prof = profile(activities=activities)
            prof.__enter__()
        for name, step in variants.items():
            t_start = time.perf_counter()
            c_start = time.process_time()
            batch = next(batches)
            t_data = time.perf_counter()
            float(step(batch))
            sync()
            if i >= args.warmup:
                times[name]["wait"].append(t_data - t_start)
                times[name]["total"].append(time.perf_counter() - t_start)
                times[name]["cpu"].append(time.process_time() - c_start)
    if prof is not None:
        prof.__exit__(None, None, None)
        print_profile(prof, args.steps * len(variants))
    return [row(args, name, t, setup) for name, t in times.items()]


def row(args: argparse.Namespace, cache: str, t: dict[str, list[float]], setup: float) -> dict[str, str]:
    mean = statistics.mean(t["total"])
    return {
        "preset": args.preset,
        "backbone": args.backbone,
        "device": args.device,
        "dtype": args.dtype,
        "train": args.train + (" +aug" if args.augment else ""),
        "batch": str(args.batch_size),
        "cache": cache,
        "threads": str(torch.get_num_threads()),
        "s/step": f"{mean:.3f} (median {statistics.median(t['total']):.3f})",
        "CPU s/step": f"{statistics.mean(t['cpu']):.3f}",
        "samples/s": f"{args.batch_size / mean:.1f}",
        "data wait": f"{100 * sum(t['wait']) / sum(t['total']):.1f}%",
        "peak memory": peak_memory(args.device),
        "set-up s": f"{setup:.1f}",
        "load": f"{os.getloadavg()[0]:.1f}",
    }


def print_profile(prof: Any, steps: int) -> None:
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=20))
    scopes = {e.key: e.cpu_time_total / 1e3 / steps for e in events if e.key.startswith("qvla.")}
    print("per step, ms:", {k: round(v, 1) for k, v in sorted(scopes.items())})


def write_table(path: Path, entry: dict[str, Any], device: str, command: str) -> None:
    rows: list[list[str]] = []
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if BEGIN in text and END in text:
            body = text.split(BEGIN, 1)[1].split(END, 1)[0]
            for line in body.strip().splitlines()[2:]:
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if len(cells) == len(COLUMNS):
                    rows.append(cells)
    new = [str(entry[c]) for c in COLUMNS]
    rows = [r for r in rows if r[:KEY_COLUMNS] != new[:KEY_COLUMNS]] + [new]
    rows.sort(key=lambda r: r[:KEY_COLUMNS])
    lines = [
        "# Training throughput (bench/train_throughput.py)",
        "",
        f"Machine: {device}. Last command: `{command}`.",
        "",
        *textwrap.wrap(LEGEND, 100),
        "",
        BEGIN,
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(r) + " |" for r in rows),
        END,
        "",
    ]
    extra = ""
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if END in text:
            extra = text.split(END, 1)[1].lstrip("\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + extra, encoding="utf-8")


def main() -> int:
    args = parser().parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("train_throughput: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="qvla-train-bench-") as tmp:
        rows = measure(args, Path(tmp))
    print("| " + " | ".join(COLUMNS) + " |")
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in COLUMNS) + " |")
    if args.out:
        command = "python bench/train_throughput.py " + shlex.join(sys.argv[1:])
        for r in rows:
            write_table(args.out, r, device_name(args.device), command)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
