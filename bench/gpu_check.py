"""The device run's steps, in priority order, each a subprocess with its own time limit (see gpu_check.sh).

1. environment: python, torch, CUDA, GPU, package versions, flash-linear-attention importable;
2. the unit tests marked ``gpu`` (tests/model, tests/test_action_decoder.py);
3. a full-preset qwen3_5 checkpoint (Qwen3.5-4B shape + 1.15B DiT, random bf16 weights drawn on
   the device, built in its own process), then bench/policy_latency.py on it: 2 cameras, H=50,
   10 Euler steps, eager vs torch.compile vs CUDA graph, peak memory, host RSS after the load;
4. bench/train_throughput.py --train decoder and --train lora on that checkpoint (skipped, with
   the reason, if the script is absent);
5. the same latency set for qwen3_vl (Qwen3-VL-4B shape).

Each step gets at most its own limit and never more than what is left of ``--budget-s``; a step
that fails or runs out of time is recorded and the next one runs. Everything goes under ``--out``
(at most 8 files: summary.md, gpu_check.log, env.txt, gpu_tests.txt, policy_latency_*.md,
train_throughput.md) and summary.md is printed last. ``--device cpu --preset tiny`` rehearses the
same steps on a CPU with the tiny preset.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALOHA = REPO / "config" / "robots" / "aloha.yaml"


@dataclass
class Step:
    name: str
    command: list[str]
    limit_s: float
    status: str = "not run"
    seconds: float = 0.0


class Runner:
    def __init__(self, out: Path, budget_s: float, scale: float = 1.0) -> None:
        self.out = out
        self.scale = scale
        self.deadline = time.monotonic() + budget_s
        self.steps: list[Step] = []
        self.log = (out / "gpu_check.log").open("a", encoding="utf-8")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, step: Step, stdout: Path | None = None) -> bool:
        self.steps.append(step)
        limit = min(step.limit_s * self.scale, self.left() - 5.0)
        if limit < 20.0:
            step.status = "skipped: out of time"
            return False
        shown = [a if len(a) < 120 else a[:40].strip() + " ..." for a in step.command]
        header = f"\n===== {step.name} (limit {limit:.0f} s): {shlex.join(shown)}\n"
        print(header.strip(), flush=True)
        self.log.write(header)
        self.log.flush()
        started = time.monotonic()
        sink = stdout.open("w", encoding="utf-8") if stdout else self.log
        try:
            proc = subprocess.run(
                step.command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, timeout=limit, check=False
            )
            step.status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            step.status = f"timed out after {limit:.0f} s"
        finally:
            if stdout:
                sink.close()
        step.seconds = time.monotonic() - started
        print(f"----- {step.name}: {step.status} in {step.seconds:.0f} s", flush=True)
        self.log.write(f"----- {step.name}: {step.status} in {step.seconds:.0f} s\n")
        self.log.flush()
        return step.status == "ok"

    def skip(self, name: str, reason: str) -> None:
        self.steps.append(Step(name, [], 0.0, status=f"skipped: {reason}"))
        print(f"----- {name}: skipped: {reason}", flush=True)

    def summary(self) -> str:
        lines = ["| step | status | seconds |", "|---|---|---:|"]
        lines += [f"| {s.name} | {s.status} | {s.seconds:.0f} |" for s in self.steps]
        return "\n".join(lines)


ENV_SCRIPT = """
import importlib, platform, sys, torch
print("python", sys.version.split()[0], platform.platform())
print("torch", torch.__version__, "cuda build", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"cc {p.major}.{p.minor}", f"{p.total_memory / 2**30:.0f} GiB")
for name in ("transformers", "tokenizers", "accelerate", "peft", "pydantic", "safetensors", "fla", "triton"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"), m.__file__)
    except Exception as exc:
        print(name, "MISSING", type(exc).__name__, exc)
from transformers.utils.import_utils import is_flash_linear_attention_available as fla
print("transformers sees flash-linear-attention:", fla())
import qvla_core.model.policy
print("qvla_core imports")
"""


def latency_steps(args: argparse.Namespace, backbone: str, work: Path) -> list[tuple[Step, Path | None]]:
    ckpt = work / f"ckpt_{args.preset}_{backbone}"
    build = [
        sys.executable,
        "-m",
        "qvla_core.cli.build_checkpoint",
        "--out",
        str(ckpt),
        "--preset",
        args.preset,
    ]
    build += ["--backbone", backbone, "--robot", str(ALOHA), "--stats-from-limits", "--device", args.device]
    bench = [sys.executable, "bench/policy_latency.py", "--checkpoint", str(ckpt), "--preset", args.preset]
    bench += ["--backbone", backbone, "--device", args.device, "--dtype", args.dtype, "--cameras", "2"]
    bench += ["--horizons", "50", "--num-steps", "10", "--image-size", "224", "224"]
    bench += ["--denoise", "eager", "compile", "cuda_graph", "--runs", str(args.runs), "--warmup", "3"]
    bench += ["--out", str(args.out / f"policy_latency_{backbone}.md")]
    return [
        (Step(f"build {args.preset} {backbone} checkpoint", build, 150.0), None),
        (Step(f"policy latency {backbone}", bench, 200.0), None),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", choices=("tiny", "full"), default="full")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--budget-s", type=float, default=480.0)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--work", type=Path, default=Path("/tmp/qvla_gpu_check"))
    p.add_argument(
        "--limit-scale", type=float, default=1.0, help="multiply every step's limit (a slow rehearsal host)"
    )
    args = p.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    runner = Runner(args.out, args.budget_s, args.limit_scale)
    py = sys.executable

    runner.run(Step("environment", [py, "-c", ENV_SCRIPT], 60.0), stdout=args.out / "env.txt")
    tests = [py, "-m", "pytest", "-m", "gpu", "tests/model", "tests/test_action_decoder.py", "-q", "-rs"]
    runner.run(
        Step("unit tests marked gpu", [*tests, "-p", "no:cacheprovider"], 150.0), args.out / "gpu_tests.txt"
    )

    first = latency_steps(args, "qwen3_5", args.work)
    built = runner.run(first[0][0])
    if built:
        runner.run(first[1][0])
    else:
        runner.skip(first[1][0].name, "no checkpoint")

    script = REPO / "bench" / "train_throughput.py"
    for train in ("decoder", "lora"):
        name = f"train throughput {train}"
        if not script.is_file():
            runner.skip(name, "bench/train_throughput.py is absent")
            continue
        if not built:
            runner.skip(name, "no checkpoint")
            continue
        cmd = [py, str(script), "--preset", args.preset, "--backbone", "qwen3_5", "--device", args.device]
        cmd += ["--dtype", args.dtype, "--train", train, "--steps", str(args.train_steps), "--warmup", "2"]
        # A small synthetic dataset: the frozen-backbone run caches features of every frame first.
        cmd += ["--batch-size", "8", "--episodes", "2", "--frames", "40"]
        cmd += ["--checkpoint", str(args.work / f"ckpt_{args.preset}_qwen3_5")]
        cmd += ["--out", str(args.out / "train_throughput.md")]
        runner.run(Step(name, cmd, 120.0))

    second = latency_steps(args, "qwen3_vl", args.work)
    if runner.run(second[0][0]):
        runner.run(second[1][0])
    else:
        runner.skip(second[1][0].name, "no checkpoint")

    summary = "\n".join(
        [
            f"# gpu_check: {args.device}, {args.preset} preset, {args.dtype}",
            "",
            runner.summary(),
            "",
            "Tables: policy_latency_qwen3_5.md, policy_latency_qwen3_vl.md, train_throughput.md; "
            "logs: gpu_check.log, gpu_tests.txt, env.txt.",
            "",
        ]
    )
    (args.out / "summary.md").write_text(summary, encoding="utf-8")
    for table in sorted(args.out.glob("*.md")):
        if table.name != "summary.md":
            print(f"\n## {table.name}\n" + table.read_text(encoding="utf-8").split("\n\n", 1)[-1][-3000:])
    print("\n" + summary)
    return 0 if all(s.status == "ok" or s.status.startswith("skipped: bench") for s in runner.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
