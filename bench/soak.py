"""Soak test of the policy node: hours of four 640x480 cameras at 30 Hz and two joint-state streams
at 50 Hz over DDS, inference running, the instruction changed every few minutes, one camera
stopped for 1.5 s every few minutes. Does memory stay flat, does a stale camera still stop the
robot on time, does anything crash?

  source scripts/env.sh && python bench/soak.py [--duration-s 3600] [--out docs/bench/soak.md]

The node is the installed policy_node started exactly as ``ros2 launch qvla_ros aloha.launch.py
device:=cpu dtype:=float32`` starts it (qvla_ros.tools.bringup + node_process), with a tiny random
checkpoint (qvla-build-checkpoint) unless --checkpoint is given. The robot is a stand-in in another
process (bench/soak_robot.py). This process samples every ~10 s: the node's RSS, inference latency
(/qvla/action_chunk), frames sent vs received per input (/diagnostics received_<input>), commands
and faults (/qvla/status), the load average. It rewrites the report (markdown + JSON, marked
partial until the run ends) after every sample, so a killed run still leaves what ran; the plot
every minute. Schedules scale with --duration-s (a 60 s run has three stale injections).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install"
CONFIG_DIR = INSTALL / "qvla_ros" / "share" / "qvla_ros" / "config" / "robots"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # soak_robot, soak_report (spawn finds them)

INSTRUCTIONS = [
    "pick up the cube and hand it over",
    "put the cube in the bowl",
    "insert the peg into the socket",
    "move both arms to the home pose",
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration-s", type=float, default=3600.0, help="length of the soak after warm start")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "soak.md")
    p.add_argument("--checkpoint", type=Path, help="policy checkpoint (default: build a tiny random one)")
    p.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID of the run (default: one from the pid)")
    p.add_argument("--camera-hz", type=float, default=30.0)
    p.add_argument("--state-hz", type=float, default=50.0)
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only rewrite the .md/.png of an earlier run from its JSON",
    )
    p.add_argument(
        "--note", action="append", default=[], help="with --render: a note for the page (repeatable)"
    )
    return p


class Schedule:
    """When to sample, change the instruction and stop a camera: 10 s / 3 min / 5 min in a 1 h run,
    scaled down for shorter runs (at least every 2 s / 10 s / 15 s)."""

    def __init__(self, duration: float) -> None:
        scale = duration / 3600.0
        self.sample_s = min(10.0, max(2.0, duration / 30.0))
        self.instruction_s = max(10.0, 180.0 * scale)
        self.stale_s = max(15.0, 300.0 * scale)
        self.warmup_s = min(300.0, 0.2 * duration)
        self.stale_pause_s, self.stale_settle_s = 1.5, 2.0
        # Injections in the middle of their slot, clear of the instruction changes at its edges.
        self.stale_at = list(np.arange(self.stale_s / 2, duration - 5.0, self.stale_s))
        self.instruction_at = list(np.arange(self.instruction_s, duration - 2.0, self.instruction_s))


class Observer:
    """This process's ROS node: chunks (latency), status (faults), diagnostics (received counters)."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        from qvla_msgs.msg import ActionChunk, PolicyStatus
        from qvla_msgs.srv import SetInstruction
        from qvla_ros.tools.sim_monitor import Spinner

        self._rclpy, self.context = rclpy, Context()
        rclpy.init(context=self.context)
        self.node = Node("soak_observer", context=self.context)
        self.lock = threading.Lock()
        self.latencies: list[tuple[float, float]] = []  # (arrival, inference_latency)
        self.status: Any = None
        self.faults: list[tuple[float, str]] = []  # (wall time of first report, text)
        self._fault_keys: set[tuple[str, int, int]] = set()
        self.diag: tuple[float, dict[str, str]] | None = None  # (header stamp, key values)
        self.node.create_subscription(ActionChunk, "/qvla/action_chunk", self._on_chunk, 10)
        self.node.create_subscription(PolicyStatus, "/qvla/status", self._on_status, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.set_instruction = self.node.create_client(SetInstruction, "/qvla/set_instruction")
        self._srv = SetInstruction
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spinner = Spinner(self.executor)

    def _on_chunk(self, msg: Any) -> None:
        with self.lock:
            self.latencies.append((time.time(), float(msg.inference_latency)))

    def _on_status(self, msg: Any) -> None:
        with self.lock:
            self.status = msg
            key = (msg.last_fault, msg.last_fault_stamp.sec, msg.last_fault_stamp.nanosec)
            if msg.last_fault and key not in self._fault_keys:
                self._fault_keys.add(key)
                self.faults.append((time.time(), msg.last_fault))

    def _on_diag(self, msg: Any) -> None:
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            if "chunks_produced" in values:
                stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                with self.lock:
                    self.diag = (stamp, values)

    def change_instruction(self, text: str) -> tuple[bool, str]:
        from qvla_ros.tools.sim_monitor import call_service

        reply = call_service(self.set_instruction, self._srv.Request(instruction=text, reset=False), 10.0)
        return bool(reply.success), str(reply.message)

    def close(self) -> None:
        self.spinner.stop()
        self.node.destroy_node()
        self._rclpy.shutdown(context=self.context)


def read_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def build_checkpoint(out: Path) -> None:
    import subprocess

    from qvla_core.cli.build_checkpoint import tiny_random_command

    robot = str(REPO / "config" / "robots" / "aloha.yaml")
    cmd = tiny_random_command(str(out), [robot], backbone="qwen2_5_vl", seed=0)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"soak: building the tiny checkpoint failed:\n{proc.stderr[-3000:]}")


class Soak:
    def __init__(self, args: argparse.Namespace, checkpoint: Path) -> None:
        from soak_report import Report

        from qvla_ros.tools.bringup import policy_node_spec
        from qvla_ros.tools.node_process import NodeProcess

        self.args, self.sched = args, Schedule(args.duration_s)
        values = {"checkpoint": str(checkpoint), "device": "cpu", "dtype": "float32"}
        values["instruction"] = INSTRUCTIONS[0]
        self.spec = policy_node_spec(values, CONFIG_DIR, default_robot="aloha")
        self.report = Report(args, self.sched, self.spec)
        self.node = NodeProcess(
            self.spec, log_dir=Path(tempfile.mkdtemp(prefix="qvla-soak-")), prefix=INSTALL / "qvla_ros"
        )
        print(f"soak: policy node pid {self.node.proc.pid}, log {self.node.log_path}", flush=True)
        import soak_robot

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.robot = ctx.Process(
            target=soak_robot.run,
            args=(child, self.spec.parameters["robot_config"], args.camera_hz, args.state_hz),
            name="soak_robot",
        )
        self.robot.start()
        self.ask_timeout = 60.0
        if self._recv() != "ready":
            raise SystemExit("soak: the robot stand-in did not start")
        self.obs = Observer()
        gc.collect()
        gc.freeze()
        self.stop_requested = False

    def _recv(self) -> Any:
        if not self.conn.poll(self.ask_timeout):
            raise RuntimeError("the robot stand-in stopped answering")
        reply = self.conn.recv()
        if isinstance(reply, Exception):
            raise reply
        return reply

    def ask(self, *req: Any) -> Any:
        self.conn.send(req)
        return self._recv()

    def wait_first_commands(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(self.ask("counts")["commands"].values()) < 4:
            if not self.node.alive() or time.monotonic() > deadline:
                raise SystemExit(f"soak: no commands from the policy node:\n{self.node.log()[-3000:]}")
            time.sleep(0.5)

    def exact_losses(self) -> tuple[dict[str, int], float]:
        """Every input stops; once the node has taken what was in flight (its next diagnostics a
        second later), sent minus received is exact. Returns it and when the inputs stopped."""
        t_pause = self.ask("pause_all")
        deadline = time.time() + 6.0
        while True:
            with self.obs.lock:
                diag = self.obs.diag
            if diag is not None and diag[0] > t_pause + 1.0:
                break
            if time.time() > deadline:
                raise RuntimeError("no /diagnostics from the policy node for 6 s")
            time.sleep(0.1)
        sent = self.ask("sent_before", diag[0])
        return {k: sent[k] - int(diag[1].get(f"received_{k}", -1)) for k in sent}, t_pause

    def sample(self, t: float, since: float) -> dict[str, Any]:
        with self.obs.lock:
            lat = [v for arrival, v in self.obs.latencies if arrival > since]
            status, diag = self.obs.status, self.obs.diag
        counts = self.ask("counts")
        row: dict[str, Any] = {
            "t_s": round(t, 1),
            "rss_mb": round(read_rss_mb(self.node.proc.pid), 1),
            "robot_rss_mb": round(counts["rss_mb"], 1),
            "chunks_window": len(lat),
            "latency_p50_s": float(np.percentile(lat, 50)) if lat else None,
            "latency_p99_s": float(np.percentile(lat, 99)) if lat else None,
            "loadavg": loadavg(),
            "commands_received": sum(counts["commands"].values()),
            "holds_received": sum(counts["holds"].values()),
            "late_camera_ticks": counts["late_camera_ticks"],
            "robot_max_gap_s": {k: round(v, 4) for k, v in counts["max_gap_s"].items()},
            "rejections": len(counts["rejections"]),
            "node_alive": self.node.alive(),
        }
        if status is not None:
            row.update(
                run_state=int(status.run_state),
                chunks_produced=int(status.chunks_produced),
                commands_sent=int(status.commands_sent),
            )
        if diag is not None:
            stamp, values = diag
            sent = self.ask("sent_before", stamp)
            received = {k: int(values.get(f"received_{k}", -1)) for k in sent}
            row["sent"], row["received"] = sent, received
            # Counted up to the diagnostics' stamp: a frame still in flight then counts as lost
            # here (at most one per camera); the final count, with every input stopped, is exact.
            base = self.report.lost_before_start
            row["lost"] = {k: sent[k] - received[k] - base.get(k, 0) for k in sent}
        return row

    def run(self) -> None:
        sched, report = self.sched, self.report
        self.wait_first_commands()
        # What was sent before the node subscribed is not lost on the way: count it once, exactly.
        report.lost_before_start, _ = self.exact_losses()
        before = sum(self.ask("counts")["commands"].values())
        self.ask("resume_all")
        deadline = time.monotonic() + 30.0
        while sum(self.ask("counts")["commands"].values()) == before:  # the node recovers first
            if time.monotonic() > deadline:
                raise SystemExit(f"soak: no commands after the inputs resumed:\n{self.node.log()[-3000:]}")
            time.sleep(0.2)
        t0 = time.time()
        report.start(t0)
        print(
            f"soak: running {self.args.duration_s:.0f} s; schedule: sample every {sched.sample_s:.0f} s, "
            f"instruction every {sched.instruction_s:.0f} s, stale camera every {sched.stale_s:.0f} s",
            flush=True,
        )
        stale_at, instr_at = list(sched.stale_at), list(sched.instruction_at)
        next_sample, next_print, last_sample = t0 + sched.sample_s, t0 + 60.0, t0
        cameras = [c.camera for c in report.config.ros.cameras]
        n_stale = n_instr = 0
        while not self.stop_requested:
            now = time.time()
            t = now - t0
            if t >= self.args.duration_s:
                break
            if not self.node.alive():
                report.note(f"policy node exited with code {self.node.proc.poll()} at t={t:.0f} s")
                break
            if stale_at and t >= stale_at[0]:
                stale_at.pop(0)
                cam = cameras[n_stale % len(cameras)]
                n_stale += 1
                res = self.ask("stale", cam, sched.stale_pause_s, sched.stale_settle_s, report.limit_s)
                report.add_stale(res, t0)
            elif instr_at and t >= instr_at[0]:
                instr_at.pop(0)
                n_instr += 1
                text = INSTRUCTIONS[n_instr % len(INSTRUCTIONS)]
                try:
                    ok, msg = self.obs.change_instruction(text)
                except TimeoutError as exc:
                    ok, msg = False, str(exc)
                report.add_instruction(t, text, ok, msg)
            if now >= next_sample:
                report.add_sample(self.sample(t, last_sample))
                last_sample, next_sample = now, max(next_sample + sched.sample_s, now + 1.0)
                with self.obs.lock:
                    report.faults = list(self.obs.faults)
                    report.latencies = [v for a, v in self.obs.latencies if a >= t0]
                report.write(plot=now >= next_print)
                if now >= next_print:
                    print(report.progress_line(), flush=True)
                    next_print += 60.0
            time.sleep(0.05)
        self.finish(t0)

    def finish(self, t0: float) -> None:
        report = self.report
        elapsed = time.time() - t0
        final: dict[str, Any] = {"elapsed_s": round(elapsed, 1)}
        try:
            lost, report.t_end_pause = self.exact_losses()
            final["lost"] = {k: v - report.lost_before_start.get(k, 0) for k, v in lost.items()}
            final["robot"] = self.ask("counts")
        except Exception as exc:  # the report must still be written
            report.note(f"final counts failed: {exc!r}")
        final["node_alive_at_end"] = self.node.alive()
        try:
            final["exit_code"] = self.node.stop(timeout=20.0)
        except RuntimeError as exc:
            final["exit_code"], final["stop_error"] = None, str(exc)[:500]
        log = self.node.log()
        final["traceback_in_log"] = "Traceback" in log
        final["log_warnings"] = sum(1 for line in log.splitlines() if "[WARN]" in line)
        errors: dict[str, int] = {}
        for line in log.splitlines():
            if "[ERROR]" in line or "[WARN]" in line:
                text = line.split("]: ", 1)[-1][:200]
                errors[text] = errors.get(text, 0) + 1
        final["log_errors"] = sum(1 for line in log.splitlines() if "[ERROR]" in line)
        final["log_messages"] = dict(sorted(errors.items(), key=lambda kv: -kv[1])[:20])
        final["node_log"] = str(self.node.log_path)
        final["log_tail"] = log[-2000:]
        with self.obs.lock:
            report.faults = list(self.obs.faults)
            report.latencies = [v for a, v in self.obs.latencies if a >= t0]
        self.close_children()
        report.finish(final, complete=elapsed >= self.args.duration_s - 1.0 and not self.stop_requested)
        print(report.table_text(), flush=True)
        print(f"soak: wrote {self.args.out} ({'complete' if report.complete else 'PARTIAL'})", flush=True)

    def close_children(self) -> None:
        try:
            self.conn.send(("stop",))
            self.conn.poll(10.0)
        except (OSError, EOFError):
            pass
        self.robot.join(timeout=10.0)
        if self.robot.is_alive():
            self.robot.kill()
        self.obs.close()


def render(path: Path, notes: list[str]) -> int:
    """Rewrite an earlier run's page and plot (beside its JSON) from the JSON alone."""
    import json

    from soak_report import Report

    data = json.loads(path.read_text())
    args = parser().parse_args(shlex.split(data["command"])[2:])
    args.command, args.out, args.domain_id = data["command"], path.with_suffix(".md"), data["ros_domain_id"]
    report = Report.from_json(data, args, Schedule(args.duration_s))
    report.notes += [f"(added when the page was rewritten from the JSON) {n}" for n in notes]
    report.write(plot=True, json_too=False)
    print(f"soak: rewrote {args.out} from {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.render is not None:
        return render(args.render, args.note)
    args.command = " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1], *sys.argv])
    args.out = args.out.resolve()
    if args.domain_id is None:
        args.domain_id = 1 + os.getpid() % 230
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)  # before any DDS participant, also the children's
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds.xml"))
    if not CONFIG_DIR.is_dir():
        raise SystemExit(f"soak: {CONFIG_DIR} missing: run scripts/setup.sh")
    tmp = tempfile.TemporaryDirectory(prefix="qvla-soak-ckpt-")
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = Path(tmp.name) / "tiny"
        t = time.time()
        build_checkpoint(checkpoint)
        print(f"soak: built a tiny random checkpoint in {time.time() - t:.0f} s", flush=True)
    soak = Soak(args, checkpoint)

    def request_stop(signum: int, frame: Any) -> None:
        soak.stop_requested = True  # finish() still stops the node and writes a partial report

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        soak.run()
    except BaseException:
        soak.node.stop(timeout=20.0) if soak.node.alive() else None
        raise
    finally:
        tmp.cleanup()
    return 0 if soak.report.summary.get("pass") else 1


if __name__ == "__main__":
    sys.exit(main())
