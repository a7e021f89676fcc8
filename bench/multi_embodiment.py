"""One Qwen-VLA checkpoint drives the ALOHA and the navigation base, chosen by the embodiment prompt.

1. **train** (skipped where a run's checkpoint exists): one initial checkpoint (``small_conv``, random
   weights, both robot YAMLs, the model image at ``--model-image``) and three ``qvla-train`` runs
   from it with ``bench/multi_embodiment_train.yaml``: ``joint`` on both datasets (``data.mix``
   50/50, 2 x ``--steps-per-robot`` steps) and the single-embodiment ``aloha`` and ``nav`` runs
   (``--steps-per-robot`` steps each): every robot sees the same number of batches of its own data
   in the joint run as in its single run (the "same budget");
2. **evaluate** through ROS 2, exactly as ``aloha_sim.launch.py`` / ``vln_nav_sim.launch.py`` start
   the nodes, each checkpoint on its robot(s): the ALOHA on bench/learned_policy.py's held-out seeds
   and metric (TransferCube success, ``--aloha-mode`` chunking), the base on
   bench/nav_closed_loop.py's (SR within 1 m, SPL, wrong object). Results are kept under
   ``WORK/results`` and reused (``--again`` re-runs them);
3. **probe**: the joint checkpoint on held-out frames of each dataset, with its own robot's prompt
   and with the other robot's (the same image, instruction and, where the robot has one, state):
   which robot's kind of action chunk comes out, by nearest neighbour among both datasets' chunks
   (normalised, the first 8 steps of the first 3 channels, the block both robots have);
4. **report**: docs/bench/multi_embodiment.md and the training curves per embodiment beside it.

Run (from the repository root, after scripts/setup.sh; ``bench/learned_policy.py`` and
``bench/nav_demonstrations.py`` made the datasets, models/*/REGENERATE.md say how)::

    source scripts/env.sh && MUJOCO_GL=egl python bench/multi_embodiment.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from closed_loop import through_ros  # noqa: E402
from learned_policy import TASK, levels  # noqa: E402
from nav_closed_loop import run as nav_run  # noqa: E402
from success_stats import seeds_range, wilson  # noqa: E402

from qvla_core.sim.nav.metrics import NavMetrics, summarize  # noqa: E402
from qvla_core.sim.nav.scene import COLOURS, SHAPES  # noqa: E402
from qvla_ros.tools.sim_monitor import EpisodeResult  # noqa: E402

NAV_WORDS = [f"go to the {c} {s}" for c in COLOURS for s in SHAPES]  # every scene's instruction
ROBOTS = ("aloha", "nav")
ANALYSIS = "<!-- analysis: written by hand, kept when the bench rewrites this file -->"
RUNS: dict[str, tuple[str, ...]] = {"joint": ROBOTS, "aloha": ("aloha",), "nav": ("nav",)}
EMBODIMENT = {"aloha": "aloha", "nav": "vln_nav"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "multi")
    p.add_argument("--aloha-dataset", type=Path, default=ROOT / "runs/collect_train/dataset")
    p.add_argument("--aloha-robot", type=Path, default=ROOT / "runs/collect_train/robot.yaml")
    p.add_argument("--nav-dataset", type=Path, default=ROOT / "runs/nav/d2000/dataset")
    p.add_argument("--nav-robot", type=Path, default=ROOT / "runs/nav/robot4.yaml")
    p.add_argument("--config", type=Path, default=ROOT / "bench/multi_embodiment_train.yaml")
    p.add_argument("--steps-per-robot", type=int, default=3000, help="batches of each robot's data")
    p.add_argument("--model-image", default="96x128", help="the checkpoint's image size HxW")
    p.add_argument("--aloha-seeds", default="2000-2049", help="held out (bench/learned_policy.py's)")
    p.add_argument("--aloha-seconds", type=float, default=8.0)
    p.add_argument("--aloha-rtf", type=float, default=1.0)
    p.add_argument("--aloha-mode", default="temporal_ensemble", help="chunking mode of the ALOHA runs")
    p.add_argument("--nav-seeds", default="10000-10049", help="held out (bench/nav_closed_loop.py's)")
    p.add_argument("--nav-max-time", type=float, default=60.0)
    p.add_argument("--nav-rtf", type=float, default=1.5)
    p.add_argument(
        "--evaluate", nargs="*", metavar="RUN:ROBOT",
        default=["joint:aloha", "aloha:aloha", "joint:nav", "nav:nav"],
        help="which checkpoint on which robot (none: report what WORK/results holds)",
    )  # fmt: skip
    p.add_argument(
        "--again", action="store_true", help="re-run evaluations (and the probe) whose results exist"
    )
    p.add_argument("--skip-train", action="store_true", help="use the runs' latest checkpoints as they are")
    p.add_argument("--probe-frames", type=int, default=48, help="held-out frames per robot in the probe")
    p.add_argument("--out", type=Path, default=ROOT / "docs/bench/multi_embodiment.md")
    return p.parse_args()


# ----------------------------------------------------------------------------- train
def robot_args(args: argparse.Namespace, robots: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for r in robots:
        out += ["--dataset", str(getattr(args, f"{r}_dataset")), "--robot", str(getattr(args, f"{r}_robot"))]
    return out


def run_steps(args: argparse.Namespace, run: str) -> int:
    """A run's steps: ``--steps-per-robot`` batches of each of its robots."""
    return args.steps_per_robot * len(RUNS[run])


def train_commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """The initial checkpoint's command and each run's, by name."""
    init = args.work / "init"
    words = [w for text in (TASK, *NAV_WORDS) for w in ("--instruction", text)]
    cmds = {
        "init": ["qvla-build-checkpoint", "--out", str(init), "--preset", "small_conv", "--backbone",
                 "qwen3_vl", *[x for r in ROBOTS for x in ("--robot", str(getattr(args, f"{r}_robot")))],
                 "--stats-from-limits", "--image-size", args.model_image, *words],
    }  # fmt: skip
    for name, robots in RUNS.items():
        cmd = ["qvla-train", "--checkpoint", str(init), *robot_args(args, robots),
               "--out", str(args.work / name),
               "--config", str(args.config), "--cache-dir", str(args.work / "cache"), "--no-progress",
               "--steps", str(run_steps(args, name))]  # fmt: skip
        if len(robots) == 1:
            cmd += ["--set", "data.mix=null"]
        cmds[name] = cmd
    return cmds


def trained_steps(run_dir: Path) -> int:
    """The step of a run's latest checkpoint (0 if none)."""
    config = run_dir / "latest" / "policy_config.json"
    return int(json.loads(config.read_text())["training"]["step"]) if config.exists() else 0


def train(args: argparse.Namespace) -> None:
    """Build what is missing; a run stopped half-way is resumed (qvla-train --resume)."""
    for name, command in train_commands(args).items():
        out = args.work / name
        cmd = list(command)
        if name == "init":
            if (out / "policy_config.json").exists():
                continue
        else:
            want = run_steps(args, name)
            if trained_steps(out) >= want:
                print(f"== {name}: trained ({want} steps), kept", flush=True)
                continue
            if out.exists():
                cmd = [*cmd, "--resume"]
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True)


# ----------------------------------------------------------------------------- evaluate
def checkpoint_of(args: argparse.Namespace, run: str) -> Path:
    return (args.work / run / "latest").resolve()


def evaluate(args: argparse.Namespace, run: str, robot: str) -> dict[str, Any]:
    """One checkpoint on one robot through ROS 2; the per-episode results and the summary."""
    checkpoint = checkpoint_of(args, run)
    start = time.monotonic()
    if robot == "aloha":
        seeds = seeds_range(args.aloha_seeds)
        results, _, _ = through_ros(
            args.aloha_mode, seeds[0], len(seeds), args.aloha_seconds, camera_size(args.aloha_robot),
            args.aloha_rtf, args.work / "eval", robot=args.aloha_robot, policy="qwen_vla",
            checkpoint=checkpoint, instruction=TASK,
            on_episode=lambda r: print(f"   {run} on aloha, seed {r.seed}: success {r.success}", flush=True),
        )  # fmt: skip
        episodes = [dataclasses.asdict(r) for r in results]
        successes = sum(r.success for r in results)
    else:
        seeds = seeds_range(args.nav_seeds)
        results_nav, _, _ = nav_run(
            "qwen_vla", seeds, args.nav_rtf, args.nav_max_time, args.work / "eval" / f"logs_{run}_nav",
            str(args.nav_robot), str(checkpoint),
        )  # fmt: skip
        episodes = [dataclasses.asdict(m) for m in results_nav]
        successes = sum(m.success for m in results_nav)
    return {
        "run": run, "robot": robot, "checkpoint": str(checkpoint), "seeds": [seeds[0], seeds[-1]],
        "episodes": episodes, "successes": successes, "n": len(episodes),
        "wall_s": time.monotonic() - start, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }  # fmt: skip


def camera_size(robot_yaml: Path) -> tuple[int, int]:
    from qvla_core.embodiment import load_embodiment

    cam = load_embodiment(robot_yaml).cameras[0]
    return cam.width, cam.height


def results_path(args: argparse.Namespace, run: str, robot: str) -> Path:
    return args.work / "results" / f"{run}-{robot}.json"


# ----------------------------------------------------------------------------- probe
def probe(args: argparse.Namespace) -> dict[str, Any]:
    """The joint checkpoint's chunks with each robot's prompt on each robot's held-out frames."""
    import torch

    from qvla_core.data.dataset import LeRobotDataset
    from qvla_core.embodiment import load_embodiment
    from qvla_core.model.policy import QwenVLAPolicy
    from qvla_core.model.processor import resize_images
    from qvla_core.policy import Observation

    torch.set_num_threads(1)
    e = {r: load_embodiment(getattr(args, f"{r}_robot")) for r in ROBOTS}
    policies: dict[str, dict[str, Any]] = {}
    runs = {run: robots for run, robots in RUNS.items() if (args.work / run / "latest").exists()}
    for run, robots in runs.items():  # each checkpoint with both prompts (a single one never saw the other)
        own = QwenVLAPolicy.from_checkpoint(checkpoint_of(args, run), e[robots[0]], seed=0)
        policies[run] = {r: own if r == robots[0] else own.with_embodiment(e[r], seed=0) for r in ROBOTS}
    policy = policies["joint"]
    training = json.loads((checkpoint_of(args, "joint") / "policy_config.json").read_text())["training"]
    held_out = {d["embodiment"]: list(d["episodes_validation"]) for d in training["datasets"]}
    samples: dict[str, list[Any]] = {}
    reference: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for r in ROBOTS:
        source = LeRobotDataset(getattr(args, f"{r}_dataset"), e[r], cache_dir=args.work / "cache")
        held = source.select_episodes(held_out[EMBODIMENT[r]])
        picks = rng.choice(len(held), size=min(args.probe_frames, len(held)), replace=False)
        samples[r] = [held[int(i)] for i in sorted(picks)]
        refs = rng.choice(len(source), size=min(400, len(source)), replace=False)
        norm = policy[r].normalizer.action
        reference[r] = np.stack([block(norm, source[int(i)].actions) for i in refs])
    median_state = np.median(np.stack([s.observation.state for s in samples["aloha"]]), axis=0)

    def as_robot(obs: Observation, robot: str) -> Observation:
        """The observation as ``robot``'s sensors would give it: the newest image, resized to its
        camera, repeated over its history; the state kept where the robot has one."""
        cam = e[robot].cameras[0]
        newest = next(iter(obs.images.values()))[-1:]
        image = resize_images(torch.from_numpy(np.ascontiguousarray(newest)), cam.height, cam.width).numpy()
        images = {cam.name: np.repeat(image, cam.history.frames, axis=0)}
        if robot == "nav":
            state = np.zeros(0, np.float32)
        else:
            state = obs.state if len(obs.state) == len(e["aloha"].state) else median_state.astype(np.float32)
        return Observation(images=images, state=state, instruction=obs.instruction, stamp=0.0)

    table: dict[str, dict[str, Any]] = {}
    cases = [(run, src, prompt) for run, robots in runs.items() for src in robots for prompt in ROBOTS]
    for run, source_robot, prompt in cases:
        p = policies[run][prompt]
        kinds, spreads = [], []
        for s in samples[source_robot]:
            obs = s.observation if prompt == source_robot else as_robot(s.observation, prompt)
            chunk = block(p.normalizer.action, p.infer(obs).actions)
            kinds.append(nearest_kind(chunk, reference))
            spreads.append(float(np.mean(chunk.max(axis=0) - chunk.min(axis=0))))
        table[f"{run}|{source_robot}|{prompt}"] = {
            "frames": len(kinds), "as_prompt": sum(k == prompt for k in kinds),
            "as_source": sum(k == source_robot for k in kinds), "spread": float(np.mean(spreads)),
        }  # fmt: skip
    table["reference spread"] = {
        r: float(np.mean(reference[r].max(axis=1) - reference[r].min(axis=1))) for r in ROBOTS
    }
    return table


def refusal(args: argparse.Namespace, robot_yaml: Path = ROOT / "config/robots/widowx.yaml") -> str:
    """What loading the joint checkpoint for a robot it was not trained on says (the policy node
    reports the same at configure, tests/ros/test_policy_node_lifecycle.py)."""
    from qvla_core.embodiment import load_embodiment
    from qvla_core.errors import QvlaError
    from qvla_core.model.policy import QwenVLAPolicy

    try:
        QwenVLAPolicy.from_checkpoint(checkpoint_of(args, "joint"), load_embodiment(robot_yaml))
    except QvlaError as exc:
        return str(exc)
    raise SystemExit(f"the joint checkpoint loaded for {robot_yaml}: it must refuse a robot it never saw")


def block(normalizer: Any, actions: np.ndarray) -> np.ndarray:
    """The first 8 steps of the first 3 action channels, normalised as the decoder sees them."""
    import torch

    x = normalizer.normalize(torch.as_tensor(np.asarray(actions, np.float32)))
    x = x[0] if isinstance(x, tuple) else x
    return np.asarray(x, np.float32)[:8, :3]


def nearest_kind(chunk: np.ndarray, reference: dict[str, np.ndarray]) -> str:
    dist = {r: float(np.min(np.abs(ref - chunk[None]).sum(axis=(1, 2)))) for r, ref in reference.items()}
    return min(dist, key=dist.__getitem__)


# ----------------------------------------------------------------------------- report
def own_batches(run: str, robot: str, step: int) -> float:
    """About how many of ``robot``'s batches the run had trained on by ``step`` (the joint run gives
    each robot half its steps: data.mix 50/50)."""
    return step * (0.5 if run == "joint" else 1.0)


def curves(args: argparse.Namespace, png: Path) -> None:
    """Held-out flow-matching loss and action error per robot against that robot's own batches, the
    joint checkpoint beside the single-embodiment one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), sharex="col")
    for col, robot in enumerate(ROBOTS):
        name = EMBODIMENT[robot]
        for run, style in (("joint", "-o"), (robot, "--s")):
            log = args.work / run / "training" / "log.jsonl"
            if not log.exists():
                continue
            rows = [json.loads(x) for x in log.read_text().splitlines()]
            val = [(x["step"], x["per_embodiment"][name]) for x in rows if x["kind"] == "validation"
                   and name in x.get("per_embodiment", {})]  # fmt: skip
            if not val:
                continue
            xs = [own_batches(run, robot, step) for step, _ in val]
            label = "joint checkpoint" if run == "joint" else f"{robot} only"
            axes[0, col].plot(xs, [v["loss"] for _, v in val], style, label=label)
            axes[1, col].plot(xs, [v["action_mae_mean"] for _, v in val], style, label=label)
        axes[0, col].set_title(f"{robot} ({name}): held-out loss")
        axes[1, col].set_title(f"{robot}: held-out action error [robot units]")
        axes[1, col].set_xlabel(f"{robot} batches of 32 trained on")
        for ax in axes[:, col]:
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def success_cell(result: dict[str, Any] | None) -> str:
    if result is None:
        return "not run"
    ok, n = result["successes"], result["n"]
    lo, hi = wilson(ok, n)
    return f"{ok}/{n} = {ok / n:.0%} [{lo:.0%}, {hi:.0%}]"


def nav_extras(result: dict[str, Any] | None) -> str:
    if result is None:
        return "-"
    m = summarize([NavMetrics(**e) for e in result["episodes"]])
    return (f"SPL {m['SPL']:.3f}, OSR {m['OSR']:.0%}, wrong object {m['wrong_object']:.0%}, "
            f"NE {m['NE']:.2f} m, {m['collisions']:.1f} contacts/ep")  # fmt: skip


def aloha_extras(result: dict[str, Any] | None) -> str:
    if result is None:
        return "-"
    return "reward >= 1/2/3/4: " + levels([EpisodeResult(**e) for e in result["episodes"]])


def gap(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if a is None or b is None:
        return "-"
    return f"{100 * (a['successes'] / a['n'] - b['successes'] / b['n']):+.0f} pp"


def report(
    args: argparse.Namespace, results: dict[str, dict[str, Any]], probe_table: dict[str, Any] | None
) -> str:
    png = args.out.with_name("multi_embodiment_curves.png")
    curves(args, png)
    get = results.get
    cmds = train_commands(args)
    lines = [
        "# One checkpoint, two robots: the ALOHA and the navigation base",
        "",
        f"Generated by `python bench/multi_embodiment.py {' '.join(sys.argv[1:])}` on "
        f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU.",
        "",
        "One Qwen-VLA checkpoint (`small_conv`, random init, trained here on a CPU) trained on the ALOHA "
        "TransferCube demonstrations and the navigation expert's drives together, evaluated through "
        "ROS 2 with the same `checkpoint:=` on `aloha_sim.launch.py`'s and `vln_nav_sim.launch.py`'s nodes, "
        "beside a checkpoint trained on each robot alone from the same initial weights with the same "
        f"config and the same number of batches of that robot's data ({args.steps_per_robot} of 32; the "
        f"joint run has {2 * args.steps_per_robot} steps, half each).",
        "",
        "| robot (held-out seeds) | joint checkpoint | single-embodiment checkpoint | joint - single "
        "| joint | single |",
        "|---|---|---|---|---|---|",
        f"| ALOHA TransferCube ({args.aloha_seeds}, {args.aloha_seconds:g} sim s, {args.aloha_mode}) "
        f"| {success_cell(get('joint-aloha'))} | {success_cell(get('aloha-aloha'))} "
        f"| {gap(get('joint-aloha'), get('aloha-aloha'))} | {aloha_extras(get('joint-aloha'))} "
        f"| {aloha_extras(get('aloha-aloha'))} |",
        f"| navigation base ({args.nav_seeds}, {args.nav_max_time:g} sim s, "
        f"real_time_factor {args.nav_rtf:g}) "
        f"| {success_cell(get('joint-nav'))} | {success_cell(get('nav-nav'))} "
        f"| {gap(get('joint-nav'), get('nav-nav'))} | {nav_extras(get('joint-nav'))} "
        f"| {nav_extras(get('nav-nav'))} |",
        "",
        "Success with a 95% Wilson interval: TransferCube as gym-aloha scores it (the left gripper holds the "
        "cube in the air; reward levels 1 touch, 2 lift, 3 left touches, 4 success), navigation stopped "
        "within 1 m of the named object (SPL, oracle success, wrong object, navigation error and contacts "
        "as docs/bench/nav_closed_loop.md defines them).",
        "",
        f"![training curves]({png.name})",
        "",
    ]
    if probe_table is not None:
        n = probe_table["joint|aloha|aloha"]["frames"]
        ref = probe_table["reference spread"]
        lines += [
            "## The prompt selects the behaviour",
            "",
            f"Each checkpoint on {n} held-out frames of each robot's dataset it was trained on, with that "
            "robot's embodiment prompt and with the other's: the same image (the newest frame, resized to "
            "the prompted robot's camera and repeated over its history), the same instruction, and the "
            "ALOHA joint state where the ALOHA is prompted (for a navigation frame the median held-out "
            "ALOHA state; the base has none). Which robot's kind of chunk came out: nearest neighbour (L1) "
            "of the chunk's first 8 steps of its first 3 channels, in the decoder's normalised output "
            "space, among 400 demonstration chunks of each robot normalised with the joint checkpoint's "
            "statistics. Spread: mean over those 3 channels of max - min over the 8 steps (demonstrations: "
            f"ALOHA {ref['aloha']:.2f}, navigation {ref['nav']:.2f}: an arm hardly moves in 8 steps of "
            "20 ms, the base's 8 waypoints 1 s apart do). The single-embodiment checkpoints are the "
            "control: prompted as a robot they never trained on.",
            "",
            "| checkpoint | frames from | prompt | chunks like the ALOHA's | chunks like the base's "
            "| spread |",
            "|---|---|---|---|---|---|",
        ]
        for key, cell in probe_table.items():
            if key.count("|") != 2:
                continue
            run, src, prompt = key.split("|")
            like = {prompt: cell["as_prompt"], src: cell["as_source"]}
            lines.append(
                f"| {run} | {src} | {prompt} | {like.get('aloha', 0)}/{cell['frames']} "
                f"| {like.get('nav', 0)}/{cell['frames']} | {cell['spread']:.2f} |"
            )
        lines.append("")
    lines += [
        "A robot YAML whose embodiment the checkpoint was not trained for is refused at load, which is "
        "the policy node's configure (config/robots/widowx.yaml with the joint checkpoint):",
        "",
        "```",
        refusal(args).replace(str(ROOT) + "/", ""),
        "```",
        "",
        "## Commands",
        "",
        "Everything (the initial checkpoint, the three runs, the four evaluations, the probe, this file) "
        "is `python bench/multi_embodiment.py`; the datasets come from bench/learned_policy.py's collection "
        "and bench/nav_demonstrations.py (models/*/REGENERATE.md). Its steps:",
        "",
        "```bash",
        *[shlex.join(c).replace(f"{ROOT}/", "") for c in cmds.values()],
        "```",
        "",
        "Evaluations (checkpoint-robot: when, wall time): "
        + (
            "; ".join(f"{k}: {v['when']}, {v['wall_s'] / 60:.0f} min" for k, v in sorted(results.items()))
            or "none"
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.skip_train:
        train(args)
    for item in args.evaluate:
        run, _, robot = item.partition(":")
        if run not in RUNS or robot not in RUNS[run]:
            raise SystemExit(
                f"--evaluate {item}: expected RUN:ROBOT with RUN in {list(RUNS)} trained on ROBOT"
            )
        path = results_path(args, run, robot)
        if path.exists() and not args.again:
            print(f"== {item}: {path} exists, kept", flush=True)
            continue
        print(f"== evaluate {run} on {robot}", flush=True)
        result = evaluate(args, run, robot)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
        print(f"   {item}: {success_cell(result)}", flush=True)
    probe_path = args.work / "results" / "probe.json"
    if not probe_path.exists() or args.again:
        probe_path.parent.mkdir(parents=True, exist_ok=True)
        probe_path.write_text(json.dumps(probe(args), indent=1))
    results = {p.stem: json.loads(p.read_text()) for p in sorted((args.work / "results").glob("*-*.json"))}
    text = report(args, results, json.loads(probe_path.read_text()))
    kept = args.out.read_text().split(ANALYSIS, 1) if args.out.exists() else []
    text += "\n" + ANALYSIS + (kept[1] if len(kept) == 2 else "\n\n(what the figures say: written by hand)\n")
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
