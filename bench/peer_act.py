"""LeRobot's own ACT as a peer of qvla: trained on our dataset, evaluated on our held-out seeds in our sim.

Runs under the project's ``.venv`` python and uses only the standard library; everything LeRobot runs in
a separate venv (lerobot 0.6.1 needs Python >= 3.12, the project is on 3.11), driven by subprocess.

Subcommands (from the repository root)::

    .venv/bin/python bench/peer_act.py setup                      # .venv-lerobot (idempotent)
    .venv/bin/python bench/peer_act.py train --budget-min 75 --threads 1 --out runs/peer_act/act
    .venv/bin/python bench/peer_act.py eval --checkpoint runs/peer_act/act --seeds 2000-2049 \\
        --seconds 8 --threads 1 --out runs/peer_act/act_eval.json
    .venv/bin/python bench/peer_act.py report --act-json runs/peer_act/act_eval.json \\
        [--qvla-json runs/lp/qvla_eval.json]                      # -> docs/bench/peer_act.md

``train`` runs ``lerobot-train`` (ACT from scratch: no backbone weights can be downloaded here; batch 8,
chunk 100, LeRobot's defaults otherwise) on the dataset qvla-convert wrote, with torch limited to
``--threads`` threads, and stops it after ``--budget-min`` minutes of wall clock by terminating its
process group. It checkpoints every ``--save-freq`` steps; the optimizer state of every checkpoint but
the newest is deleted as training goes (the policy itself is kept), and a checkpoint counts as saved
once LeRobot has pointed ``checkpoints/last`` at it (it does after the whole save), so a save cut by
the budget is never evaluated. Writes ``peer_act_train.json`` in the run folder: steps reached,
seconds per step, the loss curve (parsed from LeRobot's log), the step and minute of every saved
checkpoint, and the load average during training.

``eval`` runs ``bench/peer_act_eval.py`` with the LeRobot venv's python (see its docstring for the
episode protocol) and writes its JSON.

``report`` writes the markdown: machine, commands, ACT's rows and, with ``--qvla-json``, qvla's rows
beside them. The qvla JSON (written by whoever evaluated qvla; every key but ``modes`` optional)::

    {"label": "qvla small_conv", "train_minutes": 75.0, "steps": 1234,
     "modes": {"rtc": {"successes": 4, "n": 50, "levels": [17, 10, 4, 4]}, ...}}

``levels`` counts the episodes whose maximum reward reached at least 1, 2, 3 and 4 (the same counts as
``bench/learned_policy.py``); a flat ``{"successes": .., "n": .., "levels": ..}`` without ``modes`` is
read as one mode, and missing numbers are shown as ``-``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # loaded by path (LeRobot venv, tests): find its sibling

from machine_info import cpu_model  # noqa: E402
from success_stats import seeds_range, wilson  # noqa: E402

__all__ = ["seeds_range", "wilson"]  # the eval script and the tests use them from here
DEFAULT_VENV = ROOT / ".venv-lerobot"
DEFAULT_DATASET = ROOT / "runs" / "collect_train" / "dataset"
WORK = ROOT / "runs" / "peer_act"
DOC = ROOT / "docs" / "bench" / "peer_act.md"
EVAL_SCRIPT = ROOT / "bench" / "peer_act_eval.py"
PYTHON312 = Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python"
# The install that resolves on this machine kind (see shared/notes/lerobot-act-peer.md): lerobot pins
# torch < 2.12, and lerobot-train refuses to start without accelerate.
PACKAGES = ("lerobot[dataset]==0.6.1", "torch==2.11.*", "torchvision==0.26.*", "gym-aloha==0.1.5")
EXTRA_PACKAGES = ("accelerate>=1.14,<2",)
TRAIN_SUMMARY = "peer_act_train.json"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LP_NUM_THREADS")

# lerobot-train calls torch.set_num_threads nowhere: set it before its main() runs.
THREADS_WRAPPER = """\
import sys

import torch

torch.set_num_threads(int(sys.argv[1]))
torch.set_num_interop_threads(1)
sys.argv = ["lerobot-train", *sys.argv[2:]]
from lerobot.scripts.lerobot_train import main

sys.exit(main())
"""


# ---------------------------------------------------------------------------------------------- helpers
def thread_env(threads: int) -> dict[str, str]:
    """The environment with every thread pool we know of limited to ``threads``."""
    env = dict(os.environ)
    env.update(dict.fromkeys(THREAD_VARS, str(threads)))
    return env


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


_NUMBER = r"([-+0-9.eE]+)"
_LOG_FIELDS = {
    name: re.compile(rf"\b{name}:{_NUMBER}") for name in ("loss", "grdn", "lr", "updt_s", "data_s")
}


def parse_train_log(text: str, log_freq: int) -> list[dict[str, float]]:
    """LeRobot's training log lines -> one dict per logged step.

    lerobot-train logs ``step:1K smpl:8K ep:27 epch:0.27 loss:0.834 grdn:52.1 lr:1.0e-05 updt_s:1.412
    data_s:0.021`` every ``log_freq`` steps, with the step count rounded (``1K``); the n-th such line is
    step ``n * log_freq``, which is what this returns as ``step``.
    """
    rows: list[dict[str, float]] = []
    for line in text.splitlines():
        if "loss:" not in line or "step:" not in line:
            continue
        row: dict[str, float] = {"step": float((len(rows) + 1) * log_freq)}
        for name, pattern in _LOG_FIELDS.items():
            match = pattern.search(line)
            if match:
                try:
                    row[name] = float(match.group(1))
                except ValueError:
                    continue
        if "loss" in row:
            rows.append(row)
    return rows


def saved_checkpoints(run: Path, finished: bool = False) -> dict[int, Path]:
    """Completely saved checkpoints of a lerobot-train run: step -> checkpoint folder.

    lerobot-train points ``checkpoints/last`` at a checkpoint once all of it is written, so the
    checkpoints up to the one ``last`` names are complete and any newer one was cut mid-save. Without
    ``last`` (cut between its unlink and its re-link), every checkpoint but the newest counts, or all
    of them when the run is known to have ``finished``.
    """
    folder = run / "checkpoints"
    if not folder.is_dir():
        return {}
    steps = {
        int(child.name): child
        for child in folder.iterdir()
        if child.name.isdigit() and not child.is_symlink() and (child / "pretrained_model").is_dir()
    }
    last = folder / "last"
    if last.is_symlink() and last.resolve().name.isdigit():
        newest = int(last.resolve().name)
    elif steps:
        newest = max(steps) if finished else max(steps) - 1
    else:
        return {}
    return {s: path for s, path in steps.items() if s <= newest}


def resolve_checkpoint(path: Path) -> Path:
    """A run folder (its newest saved checkpoint), a checkpoint folder, or its pretrained_model folder
    -> the ``pretrained_model`` folder to load."""
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    if (path / "pretrained_model").is_dir():
        return path / "pretrained_model"
    saved = saved_checkpoints(path)
    if saved:
        return saved[max(saved)] / "pretrained_model"
    raise SystemExit(f"no saved ACT checkpoint under {path}")


def checkpoint_step(pretrained: Path) -> int | None:
    """The training step of a ``.../checkpoints/<step>/pretrained_model`` folder."""
    name = pretrained.parent.name
    return int(name) if name.isdigit() else None


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------------------------- setup
def lerobot_importable(venv: Path) -> bool:
    py = venv_python(venv)
    if not py.exists():
        return False
    probe = subprocess.run(
        [str(py), "-c", "import lerobot, accelerate, gym_aloha"], capture_output=True, check=False
    )
    return probe.returncode == 0


def cmd_setup(args: argparse.Namespace) -> None:
    venv: Path = args.venv
    if lerobot_importable(venv):
        print(f"{venv}: lerobot already importable; nothing to do")
        return
    if not venv_python(venv).exists():
        if not PYTHON312.exists():
            raise SystemExit(f"{PYTHON312} missing: lerobot 0.6.1 needs Python >= 3.12")
        subprocess.run([str(PYTHON312), "-m", "venv", str(venv)], check=True)
    pip = [str(venv_python(venv)), "-m", "pip", "install"]
    subprocess.run([*pip, *PACKAGES], check=True)
    subprocess.run([*pip, *EXTRA_PACKAGES], check=True)
    if not lerobot_importable(venv):
        raise SystemExit(f"{venv}: lerobot still not importable after the install")
    print(f"{venv}: lerobot 0.6.1 installed")


# ---------------------------------------------------------------------------------------------- train
def train_command(args: argparse.Namespace, wrapper: Path) -> list[str]:
    return [
        str(venv_python(args.venv)), str(wrapper), str(args.threads),
        "--dataset.repo_id=local/qvla", f"--dataset.root={args.dataset}",
        "--dataset.video_backend=pyav",
        "--policy.type=act", "--policy.device=cpu", "--policy.pretrained_backbone_weights=null",
        "--policy.push_to_hub=false", f"--policy.chunk_size={args.chunk}",
        f"--policy.n_action_steps={args.chunk}",
        f"--batch_size={args.batch}", f"--num_workers={args.num_workers}", "--wandb.enable=false",
        f"--steps={args.steps}", f"--save_freq={args.save_freq}", f"--log_freq={args.log_freq}",
        f"--output_dir={args.out}", "--job_name=peer_act_act",
    ]  # fmt: skip


def prune_optimizer_states(saved: dict[int, Path]) -> None:
    """Delete the optimizer state (the bulk of a checkpoint) of every saved checkpoint but the newest."""
    for step, folder in saved.items():
        if step == max(saved):
            continue
        for big in (folder / "training_state").glob("optimizer_state*"):
            if big.is_file():
                big.unlink()


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 60.0) -> None:
    """SIGTERM the process group (lerobot-train and its data loader workers), SIGKILL after grace."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def cmd_train(args: argparse.Namespace) -> None:
    if not lerobot_importable(args.venv):
        raise SystemExit(f"{args.venv}: no lerobot there; run `bench/peer_act.py setup` first")
    args.out = args.out.resolve()
    args.dataset = args.dataset.resolve()
    if args.out.exists():
        if not args.overwrite:
            raise SystemExit(f"{args.out} exists (lerobot-train would refuse); pass --overwrite")
        shutil.rmtree(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log = args.out.parent / f"{args.out.name}_train.log"
    wrapper = args.out.parent / f"{args.out.name}_threads_main.py"
    wrapper.write_text(THREADS_WRAPPER)
    cmd = train_command(args, wrapper)
    budget_s = args.budget_min * 60.0
    print(f"training for at most {args.budget_min:g} min at {args.threads} thread(s); log {log}", flush=True)
    print(" ".join(cmd), flush=True)
    saved_at: dict[int, float] = {}
    loads: list[float] = []
    start = time.monotonic()
    started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=thread_env(args.threads), start_new_session=True
        )
        stopped = "finished"
        next_load = start
        while proc.poll() is None:
            now = time.monotonic()
            if now - start >= budget_s:
                stopped = "budget"
                stop_group(proc)
                break
            if now >= next_load:
                loads.append(os.getloadavg()[0])
                next_load = now + 60.0
            saved = saved_checkpoints(args.out)
            for step in saved:
                if step not in saved_at:
                    saved_at[step] = now - start
                    print(f"  checkpoint {step} saved at {saved_at[step] / 60:.1f} min", flush=True)
            prune_optimizer_states(saved)
            time.sleep(min(5.0, max(0.1, budget_s - (now - start))))
    wall = time.monotonic() - start
    rc = proc.returncode
    saved = saved_checkpoints(args.out, finished=stopped == "finished" and rc == 0)
    for step in saved:
        saved_at.setdefault(step, wall)
    if stopped == "finished" and rc != 0:
        stopped = f"failed (exit {rc})"
    rows = parse_train_log(log.read_text(errors="replace"), args.log_freq)
    per_step = [r["updt_s"] + r.get("data_s", 0.0) for r in rows if "updt_s" in r]
    last = max(saved) if saved else None
    summary = {
        "command": "python bench/peer_act.py " + " ".join(sys.argv[1:]),
        "lerobot_command": cmd,
        "started_at": started_at,
        "budget_min": args.budget_min,
        "threads": args.threads,
        "batch_size": args.batch,
        "chunk_size": args.chunk,
        "num_workers": args.num_workers,
        "dataset": str(args.dataset),
        "stopped": stopped,
        "wall_s": round(wall, 1),
        "steps_logged": int(rows[-1]["step"]) if rows else 0,
        "log_freq": args.log_freq,
        "seconds_per_step_median": round(statistics.median(per_step), 3) if per_step else None,
        "seconds_per_step_wall": round(wall / rows[-1]["step"], 3) if rows else None,
        "loss": [[int(r["step"]), r["loss"]] for r in rows],
        "checkpoints": {str(s): round(saved_at[s] / 60.0, 2) for s in sorted(saved)},
        "last_checkpoint_step": last,
        "last_checkpoint": str(saved[last] / "pretrained_model") if last is not None else None,
        "loadavg_1min_samples": [round(x, 2) for x in loads],
        "machine": machine(),
        "log": str(log),
    }
    (args.out / TRAIN_SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"{stopped} after {wall / 60:.1f} min: {summary['steps_logged']} steps logged, "
        f"{summary['seconds_per_step_median']} s/step (median), last saved checkpoint {last}; "
        f"summary {args.out / TRAIN_SUMMARY}",
        flush=True,
    )
    if stopped.startswith("failed"):
        raise SystemExit(f"lerobot-train failed; tail of {log}:\n{log.read_text(errors='replace')[-3000:]}")


# ---------------------------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> None:
    pretrained = resolve_checkpoint(args.checkpoint.resolve())
    out = args.out or WORK / f"eval_{checkpoint_step(pretrained) or 'ckpt'}.json"
    cmd = [
        str(venv_python(args.venv)), str(EVAL_SCRIPT), "--checkpoint", str(pretrained),
        "--seeds", args.seeds, "--seconds", str(args.seconds), "--threads", str(args.threads),
        "--settle-steps", str(args.settle_steps), "--image-size", args.image_size, "--out", str(out),
    ]  # fmt: skip
    env = thread_env(args.threads)
    env.setdefault("MUJOCO_GL", "egl")
    print(" ".join(cmd), flush=True)
    code = subprocess.run(cmd, env=env, check=False).returncode
    if code != 0:
        raise SystemExit(f"evaluation failed (exit {code})")
    result = json.loads(out.read_text())
    result["command"] = "python bench/peer_act.py " + " ".join(sys.argv[1:])
    out.write_text(json.dumps(result, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------- report
def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def success_cell(successes: int | None, n: int | None) -> str:
    if successes is None or not n:
        return "-"
    lo, hi = wilson(successes, n)
    return f"{successes}/{n} = {successes / n:.0%} [{lo:.0%}, {hi:.0%}]"


def levels_cell(levels: Any, n: int | None) -> str:
    if not isinstance(levels, list | tuple) or not levels:
        return "-"
    counts = [_int(x) for x in list(levels)[:4]]
    text = " / ".join("-" if c is None else str(c) for c in counts)
    return text + (f" of {n}" if n else "")


def number_cell(value: Any, fmt: str) -> str:
    x = _float(value)
    return "-" if x is None else format(x, fmt)


def qvla_rows(data: dict[str, Any]) -> list[str]:
    """Table rows for a qvla result JSON (format in the module docstring), tolerant of missing keys."""
    label = str(data.get("label") or "qvla")
    modes = data.get("modes")
    if not isinstance(modes, dict) or not modes:
        modes = {"": data} if ("successes" in data or "n" in data) else {}
    rows = []
    for mode, result in modes.items():
        if not isinstance(result, dict):
            continue
        n = _int(result.get("n"))
        name = f"{label}, {mode}" if mode else label
        rows.append(
            f"| {name} | {number_cell(data.get('steps'), '.0f')} "
            f"| {number_cell(data.get('train_minutes'), '.1f')} "
            f"| {success_cell(_int(result.get('successes')), n)} | {levels_cell(result.get('levels'), n)} "
            f"| {number_cell(result.get('median_inference_ms'), '.0f')} |"
        )
    return rows


def act_row(result: dict[str, Any], train: dict[str, Any] | None) -> str:
    step = _int(result.get("step"))
    minutes = None
    if train and step is not None:
        minutes = (train.get("checkpoints") or {}).get(str(step))
    n = _int(result.get("n"))
    return (
        f"| LeRobot ACT | {'-' if step is None else step} | {number_cell(minutes, '.1f')} "
        f"| {success_cell(_int(result.get('successes')), n)} | {levels_cell(result.get('levels'), n)} "
        f"| {number_cell(result.get('median_chunk_ms'), '.0f')} |"
    )


def find_train_summary(result: dict[str, Any]) -> dict[str, Any] | None:
    """The ``peer_act_train.json`` of the run an evaluation's checkpoint came from, if it is there."""
    ckpt = result.get("checkpoint")
    if not ckpt:
        return None
    parents = Path(ckpt).parents
    for parent in list(parents)[:4]:
        candidate = parent / TRAIN_SUMMARY
        if candidate.is_file():
            loaded: dict[str, Any] = json.loads(candidate.read_text())
            return loaded
    return None


def loss_table(train: dict[str, Any], rows: int = 12) -> str:
    curve = [(int(s), float(v)) for s, v in train.get("loss") or []]
    if not curve:
        return "(no loss logged)"
    stride = max(1, math.ceil(len(curve) / rows))
    picked = curve[::stride]
    if picked[-1] != curve[-1]:
        picked.append(curve[-1])
    return "| step | training loss |\n|---|---|\n" + "\n".join(f"| {s} | {v:.3f} |" for s, v in picked)


def render_report(
    act: list[dict[str, Any]],
    train: dict[str, Any] | None,
    qvla: dict[str, Any] | None,
    command: str,
    report_machine: dict[str, Any],
) -> str:
    """The markdown of docs/bench/peer_act.md (pure: everything comes from the arguments)."""
    header = (
        "| policy | training steps | training minutes | success [95% CI] "
        "| episodes reaching reward >= 1 / 2 / 3 / 4 | median inference per chunk [ms] |\n"
        "|---|---|---|---|---|---|"
    )
    rows = [act_row(r, train) for r in act]
    if qvla:
        rows += qvla_rows(qvla)
    first = act[0] if act else {}
    tm = (train or {}).get("machine") or {}
    loads = (train or {}).get("loadavg_1min_samples") or []
    load_text = (
        f"1-min load average during training: median {statistics.median(loads):.2f}, "
        f"max {max(loads):.2f} (of {tm.get('cpus', '?')} CPUs)"
        if loads
        else "load during training not recorded"
    )
    commands = [c for c in ((train or {}).get("command"), *(r.get("command") for r in act), command) if c]
    commands_text = "\n".join(commands)
    train_text = "(no training summary found)"
    if train:
        wall_s = _float(train.get("wall_s"))
        saved = ", ".join(f"{s}: {m:.1f}" for s, m in (train.get("checkpoints") or {}).items())
        train_text = (
            f"Started {train.get('started_at', '?')}, budget {train.get('budget_min')} min at "
            f"{train.get('threads')} thread(s), batch {train.get('batch_size')}, "
            f"chunk {train.get('chunk_size')}, {train.get('num_workers')} data loader worker(s); "
            f"{train.get('stopped')} after {number_cell(wall_s / 60 if wall_s else None, '.1f')} min: "
            f"{train.get('steps_logged')} steps logged, "
            f"{number_cell(train.get('seconds_per_step_median'), '.2f')} s per step (LeRobot's update + "
            f"data time, median; {number_cell(train.get('seconds_per_step_wall'), '.2f')} s of wall clock "
            f"per step including start-up and checkpointing). Saved checkpoints (step: minute): {saved}; "
            f"the last one is step {train.get('last_checkpoint_step')}.\n\n" + loss_table(train)
        )
    episodes = first.get("episodes") or []
    per_seed = ", ".join(f"{e.get('seed')}: {e.get('max_level')}" for e in episodes)
    eval_text = (
        f"{first.get('n', '?')} seeds ({first.get('seeds', '?')}), {first.get('seconds', '?')} sim s each "
        f"after {first.get('settle_steps', '?')} control steps holding the start pose, camera "
        f"{first.get('image_size', '?')}, torch at {first.get('threads', '?')} thread(s); "
        f"median {number_cell(first.get('median_chunk_ms'), '.0f')} ms per chunk (pre-processing, 100-step "
        f"chunk, post-processing), {number_cell(first.get('wall_s'), '.0f')} s wall clock in all. "
        f"Gripper commands outside 0..1 by more than 0.05: {first.get('gripper_out_of_range', '-')} of "
        f"{first.get('actions', '-')} actions (executed as predicted, not clipped). Largest normalised "
        f"state fed to ACT: {number_cell(first.get('max_abs_normalised_state'), '.1f')} standard "
        f"deviations (channel {first.get('max_abs_normalised_state_channel', '-')}; the expert barely moves "
        "the right forearm roll and wrist rotate, std 0.001 and 0.0004 rad in the dataset, so a small "
        "deviation there is many standard deviations)."
    )
    return f"""# LeRobot's ACT beside qvla: same dataset, same held-out seeds, same sim

Generated by `bench/peer_act.py report` on {report_machine.get("cpu")} ({report_machine.get("cpus")} CPUs,
no GPU); training ran on {tm.get("cpu", "?")}, {tm.get("cpus", "?")} CPUs; {load_text}.

The peer is LeRobot 0.6.1's own ACT (`lerobot-train --policy.type=act`, in its own Python 3.12 venv),
trained from scratch (no backbone weights can be downloaded here: ResNet-18 with LeRobot's frozen batch
norm) on the dataset qvla-collect/qvla-convert wrote (`runs/collect_train/dataset`: 97 expert episodes,
29,420 frames at 50 fps, top camera 256x192, 14-joint state and action, training seeds 1000-1099), and
evaluated in the project's MuJoCo ALOHA (`src/qvla_core/qvla_core/sim/aloha_env.py`, imported by path
in the LeRobot venv) on evaluation seeds disjoint from the training seeds.

{header}
{chr(10).join(rows)}

Reward levels (gym-aloha): 1 the right gripper touches the cube, 2 it lifts it, 3 the left gripper
touches it, 4 the left gripper holds it in the air (success). Training minutes: wall clock from the
start of `lerobot-train` to the save of the evaluated checkpoint.

## How ACT was evaluated

`bench/peer_act_eval.py`, run by the LeRobot venv's python: the checkpoint's policy and its saved
pre/post-processors (LeRobot's defaults: the image normalised with ImageNet's mean and std even though
the ResNet is trained from scratch, state and action with the dataset's mean and std), our `AlohaSim`
reset with each seed,
then the start pose held for a few 20 ms control steps (the dataset's first frames were recorded while
the ROS sim node held that pose: after 5 or more steps the state matches them to 1e-4 rad, at reset it is
up to 0.009 rad off), then every 20 ms of sim time: render `cam_high` at 256x192, take the 14 joint
positions with grippers normalised 0 (closed) .. 1 (open) (the dataset's convention: its first frame and
the sim's agree on the state and on where the cube is), ACT's next action (14 absolute joint targets,
grippers 0..1, the dataset's action convention and what `AlohaSim.step` takes), one step. ACT's
defaults: a 100-step chunk is predicted and executed whole, then the next one; no temporal ensembling.
Max reward level per episode; success = level 4 at any time.

{eval_text}

Per seed (max level): {per_seed or "-"}

## Training

{train_text}

## Fair and unfair

- Same data, same scenes: both policies learn from the same 97 demonstrations and are scored on the
  same unseen seeds with the same reward, on the same physics and renderer code.
- Same machine and wall clock: both trainings ran at the same time on this 2-core machine, one torch
  thread each, for the same wall-clock budget; how many steps each got from it is part of the result.
- Not the same evaluation loop: ACT is evaluated in a plain Python loop with no real-time limit (the sim
  waits for each chunk, so inference time costs nothing), while qvla is evaluated through ROS 2 at real
  time (sim node, policy node, recorder): the sim does not wait, the arms go on with the previous chunk
  while the next one is inferred, a chunk that comes late starts late, and on 2 cores the inference
  competes with the sim and the other nodes for CPU. That favours ACT; its inference time per chunk is
  given above for scale. On the other hand ACT's default executes each 2 s chunk open loop, without
  looking, where qvla's modes splice chunks.
- Not the same model or recipe: ACT is LeRobot's default (52M parameters, ResNet-18 trained from
  scratch, L1 + KL loss, batch 8, lr 1e-5); qvla is its own preset and training config. Neither starts
  from pretrained weights (none can be downloaded here).
- Evaluation noise: with 50 episodes, intervals overlap unless the rates differ a lot; compare the
  reward levels reached as well as the successes.

## Commands

```
{commands_text}
```
"""


def cmd_report(args: argparse.Namespace) -> None:
    act = [json.loads(Path(p).read_text()) for p in args.act_json]
    train = json.loads(args.train_json.read_text()) if args.train_json else None
    if train is None and act:
        train = find_train_summary(act[0])
    qvla = json.loads(args.qvla_json.read_text()) if args.qvla_json else None
    command = "python bench/peer_act.py " + " ".join(sys.argv[1:])
    text = render_report(act, train, qvla, command, machine())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the LeRobot venv")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("setup", help="create the LeRobot venv (skipped when lerobot imports there)")

    t = sub.add_parser("train", help="lerobot-train ACT on the dataset within a wall-clock budget")
    t.add_argument("--budget-min", type=float, required=True, help="wall-clock minutes, then stop")
    t.add_argument("--threads", type=int, default=1, help="torch threads (and OMP/MKL)")
    t.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    t.add_argument("--out", type=Path, default=WORK / "act", help="lerobot-train output_dir")
    t.add_argument("--overwrite", action="store_true", help="delete --out first")
    t.add_argument("--steps", type=int, default=100_000, help="LeRobot's step limit (the budget stops first)")
    t.add_argument("--save-freq", type=int, default=250)
    t.add_argument("--log-freq", type=int, default=25)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--chunk", type=int, default=100, help="ACT chunk_size = n_action_steps")
    t.add_argument("--num-workers", type=int, default=0, help="data loader workers (0: in the main process)")

    e = sub.add_parser("eval", help="evaluate an ACT checkpoint in our sim (peer_act_eval.py)")
    e.add_argument(
        "--checkpoint", type=Path, required=True, help="run folder, checkpoint or pretrained_model"
    )
    e.add_argument("--seeds", default="2000-2049")
    e.add_argument("--seconds", type=float, default=8.0, help="sim seconds per episode")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--settle-steps", type=int, default=10, help="control steps holding the start pose")
    e.add_argument("--image-size", default="256x192", help="cam_high WxH (the dataset's)")
    e.add_argument("--out", type=Path, help="result JSON (default runs/peer_act/eval_<step>.json)")

    r = sub.add_parser("report", help="write docs/bench/peer_act.md")
    r.add_argument("--act-json", type=Path, nargs="+", required=True, help="eval JSON(s) of ACT")
    r.add_argument("--train-json", type=Path, help="peer_act_train.json (default: beside the checkpoint)")
    r.add_argument("--qvla-json", type=Path, help="qvla's results (format in the module docstring)")
    r.add_argument("--out", type=Path, default=DOC)

    args = p.parse_args(argv)
    {"setup": cmd_setup, "train": cmd_train, "eval": cmd_eval, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
