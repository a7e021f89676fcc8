"""Can recorder_node keep up with a real ALOHA's cameras? Frames published vs received vs written.

A publisher process (this file with ``--publish``) plays the robot: four 640x480 rgb8 cameras at
30 Hz and the two follower JointStates at 50 Hz (plus the two controllers' trajectory topics at
10 Hz, the action source), pre-serialized so that publishing is not the bottleneck, with the
sim's QoS (reliable, depth 5) or sensor-data QoS (best effort). The installed recorder_node (the
robot YAML's topics, its defaults otherwise) records one episode while it publishes; then the
MCAP file is read back. Columns: published (counted by the publisher), received (the recorder's
written + queue drops), written (messages in the file), lost (the recorder's count from the
publishers' sequence numbers), the recorder's CPU use and the write rate. All through FastDDS with
config/fastdds.xml (scripts/env.sh sets it).

    source scripts/env.sh && python bench/recorder_throughput.py [--seconds 20]

Prints a table and writes docs/bench/recorder_cpu.md (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CAMERA_HZ, STATE_HZ, TRAJECTORY_HZ = 30.0, 50.0, 10.0


# ----------------------------------------------------------------------------- the publisher process
def scene_frames(config: object) -> dict[str, object]:
    """One frame per camera of the MuJoCo ALOHA scene at the YAML's size (what LZ4 sees on a real
    table scene; random pixels would not compress at all)."""
    from qvla_core.sim.aloha_env import DEFAULT_CAMERAS, AlohaSim

    cams = config.embodiment.cameras  # type: ignore[attr-defined]
    sim = AlohaSim(
        cameras={c.name: DEFAULT_CAMERAS[c.name] for c in cams}, width=cams[0].width, height=cams[0].height
    )
    sim.reset(0)
    frames = dict(sim.render())
    sim.close()
    return frames  # type: ignore[return-value]


def publish(config_path: str, seconds: float, qos_name: str) -> None:
    """Wait for a line on stdin, publish for ``seconds``, print the counts per topic as JSON."""
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    from qvla_core.robot_io import TrajectoryOutput, load_robot_config
    from qvla_ros.io import conversions as conv

    config = load_robot_config(config_path)
    rclpy.init()
    node = rclpy.create_node("qvla_bench_robot")
    qos = qos_profile_sensor_data if qos_name == "best_effort" else QoSProfile(depth=5)
    frames = scene_frames(config)
    streams = []  # (publisher, serialized bytes, period, topic)
    for cam in config.ros.cameras:
        raw = serialize_message(conv.rgb_to_image(frames[cam.camera], 1.0, cam.camera))
        streams.append(
            (node.create_publisher(Image, cam.topic, qos), bytearray(raw), 1 / CAMERA_HZ, cam.topic)
        )
    for src in config.ros.joint_states:
        msg = conv.joint_state_msg(src.joint_names, [0.1] * len(src.joint_names), 1_000_000_000)
        raw = serialize_message(msg)
        pub = node.create_publisher(JointState, src.topic, QoSProfile(depth=10))
        streams.append((pub, bytearray(raw), 1 / STATE_HZ, src.topic))
    for out in config.ros.outputs:
        if isinstance(out, TrajectoryOutput):
            rows = np.zeros((50, len(out.joint_names)))
            raw = conv.joint_trajectory_cdr(out.joint_names, 1.0, rows, 0.02)
            pub = node.create_publisher(JointTrajectory, out.topic, QoSProfile(depth=10))
            streams.append((pub, bytearray(raw), 1 / TRAJECTORY_HZ, out.topic))
    print("ready", flush=True)
    sys.stdin.readline()
    counts = {topic: 0 for *_, topic in streams}
    start = time.monotonic()
    due = [start] * len(streams)
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        k = min(range(len(streams)), key=lambda i: due[i])
        if due[k] > now:
            time.sleep(due[k] - now)
        pub, raw, period, topic = streams[k]
        t = time.time_ns()
        raw[4:12] = int(t // 1_000_000_000).to_bytes(4, "little") + int(t % 1_000_000_000).to_bytes(
            4, "little"
        )
        pub.publish(bytes(raw))
        counts[topic] += 1
        due[k] += period
    time.sleep(0.5)  # let reliable writers deliver what they hold before the process goes
    print(json.dumps(counts), flush=True)
    node.destroy_node()
    rclpy.shutdown()


# ----------------------------------------------------------------------------- the measurement
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(config_path: Path, seconds: float, qos_name: str, compression: str, work: Path) -> dict[str, object]:
    from mcap.reader import make_reader

    from qvla_msgs.srv import StartEpisode, StopEpisode
    from tests.ros.harness import InstalledNode, RosPeer

    out = work / f"bags_{qos_name}_{compression}"
    recorder = InstalledNode(
        "qvla_ros",
        "recorder_node",
        {"robot_config": str(config_path), "output_dir": str(out), "compression": compression},
        name="qvla_recorder",
    )
    robot = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--publish",
            str(config_path),
            "--seconds",
            str(seconds),
            "--qos",
            qos_name,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    peer = RosPeer("qvla_bench_operator")
    try:
        assert robot.stdout is not None and robot.stdin is not None
        assert robot.stdout.readline().strip() == "ready"
        start = peer.node.create_client(StartEpisode, "/qvla_recorder/start_episode")
        stop = peer.node.create_client(StopEpisode, "/qvla_recorder/stop_episode")
        deadline = time.monotonic() + 30
        while not (r := peer.call(start, StartEpisode.Request(task="bench"))).accepted:
            if time.monotonic() > deadline:
                raise RuntimeError(f"recorder did not start: {r.message}\n{recorder.log()[-2000:]}")
            time.sleep(0.2)
        cpu0, wall0 = cpu_seconds(recorder.proc.pid), time.monotonic()
        robot.stdin.write("go\n")
        robot.stdin.flush()
        published = json.loads(robot.stdout.readline())
        time.sleep(1.0)  # the recorder drains its queue
        cpu = (cpu_seconds(recorder.proc.pid) - cpu0) / (time.monotonic() - wall0)
        stopped = peer.call(stop, StopEpisode.Request(success=True), timeout=120)
        robot.wait(timeout=30)
    finally:
        peer.close()
        log = recorder.close()
        if robot.poll() is None:
            robot.kill()
    path = Path(stopped.path)
    with path.open("rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        episode = next(m.metadata for m in reader.iter_metadata() if m.name == "qvla_episode")
    assert summary is not None and summary.statistics is not None
    written = {
        c.topic: summary.statistics.channel_message_counts.get(c.id, 0) for c in summary.channels.values()
    }
    cams = [t for t in published if t.endswith("image_raw")]
    size = path.stat().st_size
    shutil.rmtree(out)  # 2 GB a run
    return {
        "qos": qos_name,
        "compression": compression,
        "published": sum(published[t] for t in cams),
        "written": sum(written[t] for t in cams),
        "all_published": sum(published.values()),
        "all_written": sum(written.values()),
        "received": int(episode["messages_written"]) + int(episode["messages_dropped"]),
        "queue_dropped": int(episode["messages_dropped"]),
        "lost": int(episode["messages_lost"]),
        "message": stopped.message,
        "cpu": cpu,
        "mb_per_s": size / 1e6 / seconds,
        "size_mb": size / 1e6,
        "log_tail": log[-500:],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument(
        "--repeats", type=int, default=2, help="runs of each configuration (the machine is shared)"
    )
    p.add_argument("--out", type=Path, default=REPO / "docs/bench/recorder_cpu.md")
    p.add_argument("--publish", help=argparse.SUPPRESS)
    p.add_argument("--qos", default="reliable", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.publish:
        publish(args.publish, args.seconds, args.qos)
        return
    from qvla_ros.tools.bringup import write_robot_variant

    t0 = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="qvla-recbench-") as tmp:
        work = Path(tmp)
        config = write_robot_variant(
            REPO / "config/robots/aloha.yaml", work / "aloha.yaml", action_source="commanded_trajectory"
        )
        for _ in range(args.repeats):
            for qos_name, compression in (("reliable", "none"), ("best_effort", "none"), ("reliable", "lz4")):
                r = run(config, args.seconds, qos_name, compression, work / str(len(rows)))
                r["load"] = os.getloadavg()[0]
                print(r["message"])
                rows.append(r)
    table = [
        "| publisher QoS | compression | camera frames published | camera frames written | all messages "
        "published / received / written | dropped by the write queue | lost before the recorder "
        "| recorder CPU [cores] | file MB/s | 1-min load after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['qos']} | {r['compression']} | {r['published']} | {r['written']} | "
            f"{r['all_published']} / {r['received']} / {r['all_written']} | {r['queue_dropped']} | "
            f"{r['lost']} | {r['cpu']:.2f} | "
            f"{r['mb_per_s']:.0f} | {r['load']:.1f} |"
        )
    text = "\n".join(table)
    load = os.getloadavg()[0]
    doc = (
        "# recorder_node throughput: a 4-camera 640x480 ALOHA at 30 Hz\n\n"
        f"Generated by `bench/recorder_throughput.py --seconds {args.seconds:g} --repeats {args.repeats}` "
        f"on {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared; 1-min load average {load:.1f} at the end), "
        f"{(time.monotonic() - t0) / 60:.1f} min, FastDDS with config/fastdds.xml.\n\n"
        f"A separate process publishes four 640x480 rgb8 cameras (a frame of the MuJoCo ALOHA scene each, "
        f"re-stamped) at {CAMERA_HZ:g} Hz "
        f"(0.92 MB a frame, 110 MB/s), two JointStates at {STATE_HZ:g} Hz and two 50-point "
        f"JointTrajectory topics at {TRAJECTORY_HZ:g} Hz for {args.seconds:g} s; recorder_node records them "
        "raw (CDR bytes straight to the MCAP file, written by its own thread). Published counts "
        "come from the publisher; written counts from the MCAP file's statistics.\n\n"
        f"{text}\n\n"
        "Reading: every row should show written = published. The recorder's subscriptions are reliable "
        "when the publishers are (as rosbag2 adapts its QoS), so DDS itself retransmits; the write queue "
        "(1 GiB by default) absorbs disk stalls. The CPU column counts the kernel's side of writing "
        "too: LZ4 shrinks these rendered frames about 37x, and compressing them costs less than writing "
        "110 MB/s uncompressed; camera images of a real scene compress far less. On a machine as loaded "
        "as this one (other jobs running), an earlier run lost 7% of the frames of one reliable row "
        "before they reached the recorder (the publisher's history of 5 frames overflowed while "
        "the recorder process waited for a core); the recorder counts such losses from the publishers' "
        "sequence numbers and reports them in stop_episode.\n"
    )
    print("\n" + text)
    args.out.write_text(doc)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
