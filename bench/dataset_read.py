"""How fast LeRobotDataset hands out training samples, next to a tiny-model training step.

Writes a made-up ALOHA-like dataset with our writer (``--episodes`` x ``--frames`` frames, 14-D
state/action, ``--cameras`` cameras of ``--size``, the first with a ``--history``-frame history),
then times ``dataset[i]``:

* without a cache, in episode order (each episode is decoded once, then sliced) and in random
  order (nearly every sample decodes a whole episode: the case the cache is for);
* with ``cache_dir``: building the decoded-frame cache (once per dataset), then random order;

and one training step of the tiny Qwen-VLA preset (``training_loss`` + backward + AdamW, batch
``--batch``) on samples of that dataset. Prints a Markdown table and writes it to ``--out``.

    PYTHONPATH=src/qvla_core python bench/dataset_read.py --out docs/bench/dataset_read_cpu.md
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src" / "qvla_core"))

from qvla_core.data.dataset import LeRobotDataset  # noqa: E402
from qvla_core.data.writer import DatasetWriter  # noqa: E402
from qvla_core.embodiment import Embodiment, load_embodiment  # noqa: E402

ALOHA = REPO / "config" / "robots" / "aloha.yaml"


def robot(cameras: int, size: tuple[int, int], history: int) -> Embodiment:
    base = load_embodiment(ALOHA).model_dump(mode="json")
    h, w = size
    base["cameras"] = [
        {
            "name": f"cam_{i}",
            "height": h,
            "width": w,
            "history": {"frames": history if i == 0 else 1, "stride_s": 0.1},
        }
        for i in range(cameras)
    ]
    return Embodiment.model_validate(base)


def scene(episode: int, frame: int, camera: int, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    r = 128 + 90 * np.sin(x / 14.0 + frame * 0.1 + episode)
    g = 128 + 90 * np.sin(y / 10.0 - frame * 0.07 + camera)
    b = 100 + 60 * np.sin((x + y) / 30.0 + frame * 0.05)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def write(root: Path, e: Embodiment, episodes: int, frames: int) -> float:
    cams = {c.name: (c.height, c.width) for c in e.cameras}
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with DatasetWriter.for_embodiment(root, e) as writer:
        for ep in range(episodes):
            for k in range(frames):
                images = {c: scene(ep, k, i, s) for i, (c, s) in enumerate(cams.items())}
                state = rng.uniform(-1, 1, 14).astype(np.float32)
                writer.add_frame(state=state, action=state, images=images, timestamp=k / e.control_rate_hz)
            writer.save_episode("transfer the cube")
    return time.perf_counter() - start


def rate(ds: LeRobotDataset, order: list[int]) -> float:
    start = time.perf_counter()
    for i in order:
        ds[i]
    return len(order) / (time.perf_counter() - start)


def train_step_s(ds: LeRobotDataset, e: Embodiment, batch: int, steps: int, work: Path, size: int) -> float:
    from qvla_core.model.builder import build_checkpoint
    from qvla_core.model.policy import QwenVLAPolicy

    build_checkpoint(
        work / "ckpt", preset="tiny", embodiments=[e], stats_from_limits=True, image_size=(size, size)
    )
    policy = QwenVLAPolicy.from_checkpoint(work / "ckpt", e)
    params = [p for p in policy.decoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    rng = np.random.default_rng(1)
    times = []
    for step in range(steps + 1):
        samples = [ds[int(i)] for i in rng.integers(0, len(ds), batch)]
        start = time.perf_counter()
        loss = policy.training_loss([s.observation for s in samples], [s.actions for s in samples])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step > 0:  # the first step pays one-off costs
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=6)
    p.add_argument("--frames", type=int, default=150, help="frames per episode (3 s at 50 Hz)")
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--size", default="96x128", help="camera HEIGHTxWIDTH")
    p.add_argument("--history", type=int, default=2, help="frames of the first camera's history")
    p.add_argument("--samples", type=int, default=300, help="samples per timed read")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--image-size", type=int, default=224, help="the tiny checkpoint's model image size")
    p.add_argument("--out", type=Path, help="write the table to this Markdown file")
    p.add_argument("--append", action="store_true", help="add to --out instead of replacing it")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    e = robot(args.cameras, (h, w), args.history)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_s = write(work / "ds", e, args.episodes, args.frames)
        total = args.episodes * args.frames
        rng = np.random.default_rng(0)
        plain = LeRobotDataset(work / "ds", e)
        in_order = rate(plain, list(range(min(args.samples, total))))
        few = max(10, args.samples // 20)  # random access without a cache is slow: fewer samples
        random_plain = rate(LeRobotDataset(work / "ds", e), [int(i) for i in rng.integers(0, total, few)])
        start = time.perf_counter()
        cached = LeRobotDataset(work / "ds", e, cache_dir=work / "cache")
        cached.prepare_cache()
        build_s = time.perf_counter() - start
        random_cached = rate(cached, [int(i) for i in rng.integers(0, total, args.samples)])
        step_s = train_step_s(cached, e, args.batch, args.steps, work, args.image_size)
    batch_ms = {
        k: 1000 * args.batch / v
        for k, v in (("order", in_order), ("random", random_plain), ("cached", random_cached))
    }
    rows = [
        ("no cache, episode order", in_order, batch_ms["order"]),
        ("no cache, random order", random_plain, batch_ms["random"]),
        ("cache_dir, random order", random_cached, batch_ms["cached"]),
    ]
    lines = [
        "# LeRobotDataset read speed (CPU)",
        "",
        f"`{shlex.join(['python', 'bench/dataset_read.py', *sys.argv[1:]])}`  ",
        f"{platform.processor() or platform.machine()}, {args.threads} torch threads, "
        f"Python {platform.python_version()}; machine shared with other jobs (expect ±30 %).",
        "",
        f"Dataset: {args.episodes} episodes x {args.frames} frames, {args.cameras} cameras {h}x{w} "
        f"(cam_0 with {args.history} history frames), 14-D state/action, horizon {e.horizon}. "
        f"Writing it took {write_s:.1f} s ({total * args.cameras / write_s:.0f} camera frames/s encoded); "
        f"building the frame cache {build_s:.2f} s.",
        "",
        f"| read | samples/s | ms per batch of {args.batch} | share of a training step |",
        "| --- | ---: | ---: | ---: |",
    ]
    step_ms = 1000 * step_s
    for name, per_s, ms in rows:
        lines.append(f"| {name} | {per_s:.0f} | {ms:.1f} | {100 * ms / step_ms:.1f} % |")
    step = f"tiny Qwen-VLA training step ({args.image_size}x{args.image_size} images, batch {args.batch})"
    lines.append(f"| {step} | {args.batch / step_s:.1f} | {step_ms:.1f} | 100 % |")
    notes = [
        "",
        "A batch's reads compared with one training step on it (the trainer reads in DataLoader workers, so",
        "reads overlap steps; a share near or above 100 % means the step waits for data). Without a cache,",
        "random order decodes a whole episode per sample; with `cache_dir` a sample is a slice of a",
        "memory-mapped array.",
    ]
    text = "\n".join(lines + notes) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.append and args.out.exists():
            text = args.out.read_text() + "\n" + "\n".join(lines[2:]) + "\n"
        args.out.write_text(text)


if __name__ == "__main__":
    main()
