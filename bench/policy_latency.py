"""Per-stage latency of QwenVLAPolicy.infer: 1/2/4 cameras x horizon 16/50 x denoising mode.

Builds a random-initialised checkpoint (or uses ``--checkpoint``), then for each
configuration runs ``--warmup`` + ``--runs`` inferences on random 640x480 frames
of an ALOHA-like 14-channel body and reports the median and p90 of each stage
(preprocess, backbone, denoise, postprocess, total) in milliseconds, for each
``--denoise`` mode (``eager``, ``compile``: each Euler step through torch.compile,
``cuda_graph``: the whole loop replayed as one CUDA graph), with the peak memory
(CUDA: allocated by torch; CPU: the process's peak RSS) and the host's peak RSS
after loading. The table is printed and written as Markdown (``--out``), with the
device and command.

CPU, tiny model (what runs here)::

    PYTHONPATH=src/qvla_core python bench/policy_latency.py

GPU, full Qwen-VLA scale (Qwen3.5-4B + 1.15B DiT, bf16, SDPA)::

    PYTHONPATH=src/qvla_core python bench/policy_latency.py --preset full --backbone qwen3_5 \\
        --device cuda --dtype bfloat16 --cameras 2 --horizons 50 --num-steps 10 \\
        --denoise eager compile cuda_graph --out docs/bench/policy_latency_h200.md

With ``--preset full`` and no ``--checkpoint`` the random weights are drawn on
``--device`` and written to a temporary directory (about 11 GB for qwen3_5) before
loading; pass ``--checkpoint DIR`` to reuse one. bench/gpu_check.sh runs the GPU set.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src" / "qvla_core"))
sys.path.insert(0, str(REPO / "bench"))

from machine_info import cpu_model  # noqa: E402

from qvla_core.embodiment import Embodiment, load_embodiment  # noqa: E402
from qvla_core.model.backbone import BACKBONE_TYPES  # noqa: E402
from qvla_core.model.builder import build_checkpoint  # noqa: E402
from qvla_core.model.policy import DENOISE_MODES, QwenVLAPolicy  # noqa: E402
from qvla_core.policy import Observation  # noqa: E402

STAGES = ("preprocess", "backbone", "denoise", "postprocess", "total")


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} (torch {torch.__version__})"
    cpu = cpu_model()
    return f"CPU {cpu}, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


def variant(base: Embodiment, cameras: int, horizon: int) -> Embodiment:
    cams = list(base.cameras[:cameras])
    return base.model_copy(update={"cameras": cams, "horizon": horizon})


def observation(e: Embodiment, rng: np.random.Generator) -> Observation:
    images = {
        c.name: rng.integers(0, 256, (c.history.frames, c.height, c.width, 3), dtype=np.uint8)
        for c in e.cameras
    }
    lo = np.array([c.lower for c in e.state], dtype=np.float32)
    hi = np.array([c.upper for c in e.state], dtype=np.float32)
    state = (lo + (hi - lo) * rng.random(len(lo))).astype(np.float32)
    return Observation(
        images=images, state=state, instruction="transfer the cube to the right arm", stamp=0.0
    )


def peak_rss_gib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (CUDA)"
    return f"{peak_rss_gib():.2f} GiB (RSS)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=("tiny", "full"), default="tiny")
    p.add_argument("--backbone", choices=BACKBONE_TYPES, default="qwen3_vl")
    p.add_argument("--checkpoint", default=None, help="use this checkpoint instead of building one")
    p.add_argument("--robot", default=str(REPO / "config" / "robots" / "aloha.yaml"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--compile", action="store_true", help="same as --denoise compile")
    p.add_argument(
        "--denoise",
        nargs="+",
        default=None,
        choices=DENOISE_MODES,
        help="denoising modes to time (default: eager)",
    )
    p.add_argument("--image-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    p.add_argument("--cameras", type=int, nargs="+", default=(1, 2, 4))
    p.add_argument("--horizons", type=int, nargs="+", default=(16, 50))
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--num-steps", type=int, default=None, help="Euler steps (default: the checkpoint's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=str(REPO / "docs" / "bench" / "policy_latency_cpu.md"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *(argv or sys.argv[1:])])

    base = load_embodiment(args.robot)
    tmp = None
    build_s = 0.0
    if args.checkpoint:
        ckpt_dir = Path(args.checkpoint)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="qvla-bench-")
        ckpt_dir = Path(tmp.name) / "ckpt"
        t = time.perf_counter()
        build_checkpoint(
            ckpt_dir,
            preset=args.preset,
            backbone_type=args.backbone,
            embodiments=[base],
            stats_from_limits=True,
            image_size=tuple(args.image_size),
            device=args.device,
        )
        build_s = time.perf_counter() - t
    t = time.perf_counter()
    policy = QwenVLAPolicy.from_checkpoint(
        ckpt_dir, base, device=args.device, dtype=args.dtype, num_steps=args.num_steps, seed=0
    )
    load_s = time.perf_counter() - t
    load_rss = peak_rss_gib()
    modes = args.denoise or (["compile"] if args.compile else ["eager"])
    n_backbone = sum(x.numel() for x in policy.backbone.parameters())
    n_decoder = sum(x.numel() for x in policy.decoder.parameters())
    steps = args.num_steps or policy.config.decoder.num_steps

    rows = []
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()
    for mode in modes:
        # On a CPU the CUDA-graph mode runs its buffer logic without a graph (the rehearsal of a GPU run).
        replay = mode == "cuda_graph" and not args.device.startswith("cuda")
        policy.set_denoise_mode(mode, graph_backend="replay" if replay else None)
        label = "cuda_graph (replay, no graph on a CPU)" if replay else mode
        for cams in args.cameras:
            for horizon in args.horizons:
                e = variant(base, cams, horizon)
                pol = policy.with_embodiment(e)
                obs = observation(e, rng)
                tokens = len(pol.processor.prompt_ids(e, obs.instruction))
                reset_peak(args.device)
                t = time.perf_counter()
                for _ in range(args.warmup):
                    pol.infer(obs)
                warm_s = time.perf_counter() - t
                lat = {s: [] for s in STAGES}
                for _ in range(args.runs):
                    chunk = pol.infer(obs)
                    for s in STAGES:
                        lat[s].append(chunk.latency[s] * 1000.0)
                stats = {s: (float(np.median(v)), float(np.percentile(v, 90))) for s, v in lat.items()}
                rows.append((label, cams, horizon, tokens, stats, peak_memory(args.device), warm_s))
                print(
                    f"{label} cameras={cams} H={horizon} tokens={tokens} total median "
                    f"{stats['total'][0]:.1f} ms (warm-up {warm_s:.1f} s)",
                    flush=True,
                )
    load_after = os.getloadavg()
    head = (
        "| denoise | cameras | H | prompt tokens | "
        + " | ".join(f"{s} p50 / p90 [ms]" for s in STAGES)
        + " | peak memory | warm-up [s] |"
    )
    sep = "|---|---:|---:|---:|" + "---:|" * len(STAGES) + "---:|---:|"
    lines = [head, sep]
    for mode, cams, horizon, tokens, stats, peak, warm_s in rows:
        cells = " | ".join(f"{stats[s][0]:.1f} / {stats[s][1]:.1f}" for s in STAGES)
        lines.append(f"| {mode} | {cams} | {horizon} | {tokens} | {cells} | {peak} | {warm_s:.1f} |")
    table = "\n".join(lines)
    spec = policy.processor.spec
    doc = "\n".join(
        [
            f"# QwenVLAPolicy latency: {args.preset} preset, {args.backbone}, {args.device}, {args.dtype}",
            "",
            f"- Device: {device_name(args.device)}",
            f"- Command: `{command}`",
            f"- Model: backbone {policy.backbone.backbone_type} ({n_backbone / 1e6:.2f} M params), "
            f"DiT decoder ({n_decoder / 1e6:.2f} M params), {steps} Euler steps, "
            f"denoise modes: {', '.join(modes)}",
            f"- Images: 640x480 RGB per camera, resized to {spec.height}x{spec.width} "
            f"({spec.tokens_per_image} tokens per image); ALOHA's 14 action channels",
            f"- {args.runs} timed runs after {args.warmup} warm-up runs per row (the warm-up column: "
            f"compilation / graph capture); checkpoint build {build_s:.1f} s, load {load_s:.1f} s, host "
            f"peak RSS after the load {load_rss:.2f} GiB",
            f"- Host load average (1/5/15 min) before: {'/'.join(f'{v:.2f}' for v in load_before)}, "
            f"after: {'/'.join(f'{v:.2f}' for v in load_after)} (a shared host: other jobs inflate p90)",
            "- Stages as reported in `ActionChunk.latency` (preprocess: validation, prompt tokens "
            "(cached), image resize + patchify, state normalisation; backbone: one VLM forward; denoise: "
            "all Euler steps; postprocess: un-normalise + copy to numpy).",
            "",
            table,
            "",
        ]
    )
    print()
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    print(f"\nwritten to {out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
