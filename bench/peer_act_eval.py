"""Evaluate a LeRobot ACT checkpoint in the project's MuJoCo ALOHA on given seeds (LeRobot venv only).

Run by ``bench/peer_act.py eval`` with the python of the LeRobot venv (lerobot 0.6.1, Python 3.12): it
imports lerobot and torch from there, and the project's ``aloha_env.py`` and ``peer_act.py`` by file
path (they need only mujoco, numpy, gym_aloha and the standard library).

Per seed: ``AlohaSim.reset(seed)`` (the cube pose gym-aloha draws from the seed), then the start pose
held for ``--settle-steps`` control steps (the dataset's first frames were recorded while the ROS sim
node held it; the sim's state right after reset is up to 0.009 rad off them), then every 20 ms of sim
time: render ``cam_high`` (HxWx3 uint8 -> 1x3xHxW float 0..1, as LeRobot's own eval feeds images), the
14 joint positions (left arm first, grippers normalised 0 closed .. 1 open: the dataset's
``observation.state``), the checkpoint's pre-processor, ``ACTPolicy.select_action`` (a 100-step chunk
when its queue is empty, executed whole: ACT's defaults), the post-processor, and ``AlohaSim.step``
with the action as it comes (absolute joint targets, grippers 0..1: the dataset's ``action``). No
real-time limit: the sim waits for the policy. The episode's score is its maximum reward level (1
right gripper touches the cube, 2 lifts it, 3 left touches it, 4 left holds it in the air = success);
an episode ends at level 4 or after ``--seconds`` of sim time.

Writes a JSON with per-seed results, successes, n, the Wilson 95% interval, the number of episodes
reaching each level, and the median time of the calls that predicted a chunk.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]
TASK = "pick up the red cube with the right arm and hand it over to the left arm"
CAMERA = "cam_high"
IMAGE_KEY = f"observation.images.{CAMERA}"


def load_by_path(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a pretrained_model folder")
    p.add_argument("--seeds", default="2000-2049")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--settle-steps", type=int, default=10)
    p.add_argument("--image-size", default="256x192", help="WxH")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    os.environ.setdefault("MUJOCO_GL", "egl")
    aloha = load_by_path("qvla_aloha_env", ROOT / "src" / "qvla_core" / "qvla_core" / "sim" / "aloha_env.py")
    peer = load_by_path("qvla_peer_act", ROOT / "bench" / "peer_act.py")

    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    t_load = time.monotonic()
    policy = ACTPolicy.from_pretrained(str(args.checkpoint))
    policy.eval()
    preprocessor, postprocessor = make_pre_post_processors(
        policy.config,
        pretrained_path=str(args.checkpoint),
        preprocessor_overrides={"device_processor": {"device": "cpu"}},
    )
    print(
        f"loaded {args.checkpoint} in {time.monotonic() - t_load:.1f} s: chunk {policy.config.chunk_size}, "
        f"n_action_steps {policy.config.n_action_steps}, "
        f"temporal_ensemble_coeff {policy.config.temporal_ensemble_coeff}",
        flush=True,
    )

    width, height = (int(v) for v in args.image_size.split("x"))
    sim = aloha.AlohaSim(cameras={CAMERA: "top"}, width=width, height=height)
    seeds = peer.seeds_range(args.seeds)
    n_steps = round(args.seconds / aloha.CONTROL_DT)
    episodes = []
    chunk_ms: list[float] = []
    step_ms: list[float] = []
    actions = out_of_range = 0
    z_max = (0.0, -1)  # the largest normalised state |(x - mean) / std| fed to ACT, and its channel
    t0 = time.monotonic()
    for seed in seeds:
        t_ep = time.monotonic()
        sim.reset(seed)
        hold = sim.joint_positions()
        for _ in range(args.settle_steps):
            sim.step(hold)
        policy.reset()
        max_level, success_at = 0, None
        for k in range(n_steps):
            image = sim.render([CAMERA])[CAMERA]
            state = sim.joint_positions()
            observation = {
                IMAGE_KEY: torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float().div(255.0),
                "observation.state": torch.from_numpy(state).float().unsqueeze(0),
                "task": [TASK],
            }
            new_chunk = len(policy._action_queue) == 0
            start = time.perf_counter()
            with torch.inference_mode():
                batch = preprocessor(observation)
                action = postprocessor(policy.select_action(batch))
            elapsed = (time.perf_counter() - start) * 1e3
            z = batch["observation.state"].abs().squeeze(0)
            if float(z.max()) > z_max[0]:
                z_max = (float(z.max()), int(z.argmax()))
            (chunk_ms if new_chunk else step_ms).append(elapsed)
            target = action.squeeze(0).to(torch.float64).numpy()
            actions += 1
            out_of_range += int(any(g < -0.05 or g > 1.05 for g in (target[6], target[13])))
            sim.step(target)
            level = sim.reward()
            max_level = max(max_level, level)
            if level == 4:
                success_at = (k + 1) * aloha.CONTROL_DT
                break
        episodes.append(
            {
                "seed": seed,
                "max_level": max_level,
                "success": max_level == 4,
                "time_to_success": success_at,
                "wall_s": round(time.monotonic() - t_ep, 2),
            }
        )
        print(
            f"seed {seed}: {'SUCCESS' if max_level == 4 else 'fail'} max level {max_level}"
            + (f" at {success_at:.2f} s" if success_at else "")
            + f" ({time.monotonic() - t_ep:.1f} s wall)",
            flush=True,
        )
    sim.close()
    n = len(episodes)
    successes = sum(e["success"] for e in episodes)
    lo, hi = peer.wilson(successes, n)
    result = {
        "checkpoint": str(args.checkpoint.resolve()),
        "step": peer.checkpoint_step(args.checkpoint.resolve()),
        "seeds": args.seeds,
        "seconds": args.seconds,
        "settle_steps": args.settle_steps,
        "image_size": args.image_size,
        "threads": args.threads,
        "n": n,
        "successes": successes,
        "wilson95": [lo, hi],
        "levels": [sum(e["max_level"] >= k for e in episodes) for k in (1, 2, 3, 4)],
        "median_chunk_ms": statistics.median(chunk_ms) if chunk_ms else None,
        "median_queued_step_ms": statistics.median(step_ms) if step_ms else None,
        "chunks": len(chunk_ms),
        "actions": actions,
        "gripper_out_of_range": out_of_range,
        "max_abs_normalised_state": round(z_max[0], 2),
        "max_abs_normalised_state_channel": z_max[1],
        "wall_s": round(time.monotonic() - t0, 1),
        "machine": peer.machine(),
        "episodes": episodes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{successes}/{n} = {successes / max(n, 1):.0%} [{lo:.0%}, {hi:.0%}]; reaching levels 1/2/3/4: "
        + " / ".join(str(c) for c in result["levels"])
        + f"; median chunk {result['median_chunk_ms'] or float('nan'):.0f} ms; wrote {args.out}",
        flush=True,
    )


if __name__ == "__main__":
    main()
