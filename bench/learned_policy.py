"""A Qwen-VLA policy learned with qvla's own tools solves TransferCube through ROS 2: collect -> train
-> evaluate, in one command.

1. **collect**: ``qvla-collect`` drives the MuJoCo ALOHA with the scripted expert through the ROS 2
   stack (sim node, policy node, recorder node) on the training seeds and converts the recordings
   into a LeRobot v3.0 dataset (top camera only, at ``--image-size``);
2. **init**: ``qvla-build-checkpoint --preset small_conv`` (Qwen3-VL-shaped backbone with random
   weights and a small convolutional vision stem in place of the vision tower: no Qwen weights are
   downloaded, the model learns vision from scratch; ``--preset small`` keeps the 64-wide ViT), the
   embodiment prompt of the collected robot YAML;
3. **train**: ``qvla-train`` (everything trains; norm stats from the dataset), config in
   ``bench/learned_policy_train.yaml``;
4. **evaluate**: the installed sim node + policy node with the trained checkpoint, exactly as
   ``aloha_sim.launch.py`` starts them, on evaluation seeds disjoint from the training seeds, once
   per chunk-splicing mode, and the scripted expert on the same seeds; success with a 95% Wilson
   interval, the reward levels reached (1: right gripper touches the cube, 2: lifts it, 3: left
   gripper touches it, 4: left holds it in the air = success), median time to success, and how often
   the policy node's safety filter clamped or rejected the learned chunks.

Writes ``docs/bench/learned_policy.md`` (+ the loss curve next to it) and, with ``--export DIR``,
copies the trained checkpoint there (the demo's committed checkpoint).

Run (from the repository root, after scripts/setup.sh)::

    source scripts/env.sh && python bench/learned_policy.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from closed_loop import through_ros  # noqa: E402
from success_stats import seeds_range, wilson  # noqa: E402

from qvla_ros.tools.bringup import write_robot_variant  # noqa: E402
from qvla_ros.tools.sim_monitor import EpisodeResult  # noqa: E402

MODES = ("replace", "temporal_ensemble", "rtc")
TASK = "pick up the red cube with the right arm and hand it over to the left arm"
TRAIN_CONFIG = ROOT / "bench" / "learned_policy_train.yaml"


@dataclass
class Phase:
    name: str
    seconds: float
    command: str


def run_phase(name: str, cmd: list[str], phases: list[Phase], log: Path) -> None:
    """Run one phase's command (output tee'd to ``log``); raise with its tail if it fails."""
    shown = " ".join(cmd)
    print(f"\n== {name}: {shown}", flush=True)
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if "it/s" not in line and "s/it" not in line:  # keep progress bars out of the console
                print(f"   {line}", end="", flush=True)
        code = proc.wait()
    if code != 0:
        raise SystemExit(f"{name} failed (exit {code}); see {log}:\n{log.read_text()[-3000:]}")
    phases.append(Phase(name, time.monotonic() - start, shown))


def levels(results: list[EpisodeResult]) -> str:
    n = len(results)
    return " / ".join(f"{sum(r.max_reward >= k for r in results)}" for k in (1, 2, 3, 4)) + f" of {n}"


def row(label: str, results: list[EpisodeResult], chunks_total: int | None) -> str:
    n, ok = len(results), sum(r.success for r in results)
    lo, hi = wilson(ok, n)
    tts = [r.time_to_success for r in results if r.time_to_success is not None]
    median_tts = f"{statistics.median(tts):.2f}" if tts else "-"
    if chunks_total:
        shares = [
            sum(getattr(r, f"safety_{kind}") for r in results) / chunks_total
            for kind in ("velocity_clamped", "limit_clamped", "rejected")
        ]
        safety = " / ".join(f"{x:.1%}" for x in shares) + f" of {chunks_total}"
    else:
        safety = "-"
    infer = [r.median_inference_ms for r in results if math.isfinite(r.median_inference_ms)]
    infer_text = f"{statistics.median(infer):.0f}" if infer else "-"
    return (
        f"| {label} | {ok}/{n} = {ok / max(n, 1):.0%} [{lo:.0%}, {hi:.0%}] | {levels(results)} "
        f"| {median_tts} | {safety} | {infer_text} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-seeds", default="1000-1099", help="collection seeds, e.g. 1000-1099")
    p.add_argument("--eval-seeds", default="2000-2049", help="evaluation seeds (disjoint from training)")
    p.add_argument("--image-size", default="256x192", help="top camera WxH (rendered, recorded, evaluated)")
    p.add_argument("--model-image", default="192x256", help="the model's image size HxW")
    p.add_argument("--episode-seconds", type=float, default=6.0, help="sim seconds per collected episode")
    p.add_argument("--eval-seconds", type=float, default=8.0, help="sim seconds per evaluated episode")
    p.add_argument("--collect-rtf", type=float, default=1.0, help="sim speed while collecting")
    p.add_argument("--eval-rtf", type=float, default=1.0, help="sim speed while evaluating")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--task", default=TASK, help="the instruction: collected, trained on and evaluated")
    p.add_argument("--steps", type=int, help="override the training steps of the config")
    p.add_argument("--preset", default="small_conv", choices=("small", "small_conv"), help="model preset")
    p.add_argument("--config", type=Path, default=TRAIN_CONFIG, help="qvla-train config")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "learned_policy")
    p.add_argument("--skip", nargs="*", default=[], choices=("collect", "train", "expert"))
    p.add_argument("--out", type=Path, default=ROOT / "docs/bench/learned_policy.md")
    p.add_argument("--export", type=Path, help="copy the trained checkpoint here (e.g. the demo's)")
    p.add_argument("--json", type=Path, help="also write the results here (peer_act.py --qvla-json reads it)")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    train_seeds, eval_seeds = seeds_range(args.train_seeds), seeds_range(args.eval_seeds)
    if set(train_seeds) & set(eval_seeds):
        raise SystemExit("--train-seeds and --eval-seeds overlap: evaluation must use unseen scenes")
    width, height = (int(v) for v in args.image_size.split("x"))
    collect_dir, init_dir, model_dir = args.work / "collect", args.work / "init", args.work / "model"
    robot = collect_dir / "robot.yaml"
    phases: list[Phase] = []
    t0 = time.monotonic()

    if "collect" not in args.skip:
        run_phase(
            "collect",
            ["qvla-collect", "--robot", "aloha", "--seeds", args.train_seeds, "--out", str(collect_dir),
             "--cameras", "cam_high", "--image-size", args.image_size, "--episode-seconds",
             str(args.episode_seconds), "--real-time-factor", str(args.collect_rtf), "--task", args.task,
             "--delete-bags", "--overwrite"],
            phases, args.work / "collect.log",
        )  # fmt: skip
    if "train" not in args.skip:
        shutil.rmtree(init_dir, ignore_errors=True)
        shutil.rmtree(model_dir, ignore_errors=True)
        run_phase(
            "init",
            ["qvla-build-checkpoint", "--out", str(init_dir), "--preset", args.preset, "--backbone",
             "qwen3_vl", "--robot", str(robot), "--stats-from-limits", "--image-size", args.model_image,
             "--instruction", args.task],
            phases, args.work / "init.log",
        )  # fmt: skip
        dataset = str(collect_dir / "dataset")
        train_cmd = ["qvla-train", "--checkpoint", str(init_dir), "--dataset", dataset, "--robot",
                     str(robot), "--out", str(model_dir), "--config", str(args.config)]  # fmt: skip
        if args.steps:
            train_cmd += ["--steps", str(args.steps)]
        run_phase("train", train_cmd, phases, args.work / "train.log")

    evaluations: dict[str, list[EpisodeResult]] = {}
    chunks: dict[str, int] = {}
    speeds: dict[str, float] = {}
    delays: dict[str, float] = {}
    runs = [("expert", "rtc")] if "expert" not in args.skip else []
    runs += [("learned", mode) for mode in args.modes]
    for who, mode in runs:
        start = time.monotonic()
        print(f"\n== evaluate {who} ({mode}) on seeds {args.eval_seeds}", flush=True)
        results, (_, wall), speed = through_ros(
            mode, eval_seeds[0], len(eval_seeds), args.eval_seconds, (width, height), args.eval_rtf,
            args.work / "eval", robot=robot,
            policy="expert_transfer_cube" if who == "expert" else "qwen_vla",
            checkpoint=None if who == "expert" else model_dir, instruction=args.task,
            on_episode=lambda r: print(
                f"   seed {r.seed}: {'SUCCESS' if r.success else 'fail'} max reward {r.max_reward}, "
                f"{r.chunks} chunks; safety slowed {r.safety_velocity_clamped}, limit-clamped "
                f"{r.safety_limit_clamped}, rejected {r.safety_rejected}", flush=True
            ),
        )  # fmt: skip
        key = f"{who}, {mode}"
        evaluations[key] = results
        chunks[key] = sum(r.chunks for r in results)
        speeds[key] = speed
        finite = wall[np.isfinite(wall)]
        delays[key] = float(np.median(finite) * 1e3) if finite.size else float("nan")
        phases.append(Phase(f"evaluate {key}", time.monotonic() - start, "bench/closed_loop.through_ros"))
    total = time.monotonic() - t0

    loss_png = args.out.with_name("learned_policy_loss.png")
    if (model_dir / "training" / "loss.png").exists():
        shutil.copyfile(model_dir / "training" / "loss.png", loss_png)
    report(args, phases, evaluations, chunks, speeds, delays, total, model_dir, loss_png)
    if args.json:
        write_json(args.json, args.preset, evaluations, model_dir)
    if args.export:
        export(model_dir, args.export, robot, best_mode(evaluations))


def write_json(path: Path, preset: str, evaluations: dict[str, list[EpisodeResult]], model_dir: Path) -> None:
    """The learned policy's results per chunking mode, in the format bench/peer_act.py reads."""
    modes = {
        mode: {
            "successes": sum(r.success for r in results),
            "n": len(results),
            "levels": [sum(r.max_reward >= k for r in results) for k in (1, 2, 3, 4)],
        }
        for mode, results in learned_modes(evaluations).items()
    }
    data: dict[str, object] = {"label": f"qvla {preset}", "modes": modes}
    log = model_dir / "training" / "log.jsonl"
    if log.exists():
        train = [json.loads(line) for line in log.read_text().splitlines() if '"train"' in line]
        if train:
            data["steps"] = train[-1]["step"]
            data["train_minutes"] = (train[-1]["time"] - train[0]["time"]) / 60.0
    path.write_text(json.dumps(data, indent=2) + "\n")


def training_summary(model_dir: Path) -> str:
    """The run's steps, final loss, and validation (held-out episodes) from qvla-train's log."""
    log = model_dir / "training" / "log.jsonl"
    if not log.exists():
        return "(no training log)"
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "validation"]
    text = ""
    if train:
        rate = statistics.median(r["steps_per_s"] for r in train if "steps_per_s" in r)
        last = train[-1]
        text += f"{last['step']} steps at {rate:.2f} steps/s, final training loss {last['loss']:.4f}.\n\n"
    if val:
        text += "| step | validation loss | action error, first actions, mean abs [rad or opening] |\n"
        text += "|---|---|---|\n"
        for r in val:
            mae = [e["action_mae_mean"] for e in r.get("per_embodiment", {}).values()]
            text += (
                f"| {r['step']} | {r['loss']:.4f} | {statistics.mean(mae) if mae else float('nan'):.4f} |\n"
            )
    return text or "(empty training log)"


def report(
    args: argparse.Namespace,
    phases: list[Phase],
    evaluations: dict[str, list[EpisodeResult]],
    chunks: dict[str, int],
    speeds: dict[str, float],
    delays: dict[str, float],
    total: float,
    model_dir: Path,
    loss_png: Path,
) -> None:
    header = (
        "| policy, chunking | success [95% CI] | episodes reaching reward >= 1 / 2 / 3 / 4 "
        "| median time to success [sim s] | chunks slowed / limit-clamped / rejected by safety "
        "| median inference [ms] |\n"
        "|---|---|---|---|---|---|"
    )
    rows = [row(k, v, chunks[k] if k.startswith("learned") else None) for k, v in evaluations.items()]
    table = header + "\n" + "\n".join(rows)
    phase_rows = "\n".join(f"| {ph.name} | {ph.seconds / 60:.1f} |" for ph in phases)
    run_rows = "\n".join(f"| {k} | {speeds[k]:.2f}x | {delays[k]:.0f} |" for k in evaluations)
    command = "python bench/learned_policy.py " + " ".join(sys.argv[1:])
    text = f"""# A learned Qwen-VLA policy on TransferCube, through ROS 2

Generated by `{command.strip()}` on {platform.machine()}, {os.cpu_count()} CPUs
({platform.processor() or "CPU"}), no GPU, in {total / 60:.1f} min end to end.

Training seeds {args.train_seeds} (expert demonstrations collected through ROS 2), evaluation seeds
{args.eval_seeds} (scenes never seen in training), {args.eval_seconds:g} sim s per evaluated episode,
top camera only at {args.image_size}, model image {args.model_image}. The policy is the `{args.preset}`
preset (Qwen3-VL-shaped backbone, vision trained from scratch, 4-block DiT flow-matching decoder),
conditioned on the embodiment prompt of the recorded robot YAML; config `{
        args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config
    }`.

{table}

Reward levels (gym-aloha): 1 the right gripper touches the cube, 2 it lifts it, 3 the left gripper
touches it, 4 the left gripper holds it in the air (success). Safety: share of the learned policy's
chunks in which the policy node's safety filter slowed at least one point to a channel's
max_velocity, clamped one into its position limits (for the grippers: the 0..1 opening, which
flow-matching samples overshoot by a little at the fully open and closed ends), and share it
rejected (nothing of them sent).

## Training

{training_summary(model_dir)}

![loss]({loss_png.name})

## Wall time per phase

| phase | minutes |
|---|---|
{phase_rows}

| evaluation run | sim speed | observation -> command at the controller, median [wall ms] |
|---|---|---|
{run_rows}
"""
    args.out.write_text(text)
    print("\n" + table + f"\n\nwrote {args.out}")


def learned_modes(evaluations: dict[str, list[EpisodeResult]]) -> dict[str, list[EpisodeResult]]:
    """The learned policy's results by chunking mode (``evaluations`` is keyed "<who>, <mode>")."""
    return {key.split(", ", 1)[1]: v for key, v in evaluations.items() if key.startswith("learned, ")}


def best_mode(evaluations: dict[str, list[EpisodeResult]]) -> str:
    """The chunk-splicing mode in which the learned policy succeeded most often ("" if none ran)."""
    learned = learned_modes(evaluations)
    if not learned:
        return ""
    return max(learned, key=lambda mode: sum(r.success for r in learned[mode]))


def export(model_dir: Path, dest: Path, robot: Path, chunking_mode: str = "") -> None:
    """Copy the trained checkpoint (resolving links: the demo's copy must stand alone) with its robot
    YAML, set to the chunking mode that succeeded most often in the evaluation."""
    if dest.exists():
        shutil.rmtree(dest)
    skip = shutil.ignore_patterns("cache", "checkpoints", "latest")  # training state, not the policy
    shutil.copytree(model_dir, dest, symlinks=False, ignore=skip)
    write_robot_variant(robot, dest / "robot.yaml", chunking_mode)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"exported {dest} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
