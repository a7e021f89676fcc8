"""``recorder_node``: records demonstration episodes of a robot to MCAP, one ROS 2 bag per episode.

It subscribes to what the robot YAML names (``qvla_core.robot_io.recorded_topics``: the cameras and
joint states the policy node reads, and the topics of ``ros.recording.actions``) without
deserialising anything (``raw=True``: the CDR bytes go to the file as they came off the wire), and
writes each episode to ``<output_dir>/episode_NNNNNN/`` in the layout of ``ros2 bag record -s mcap``
(:mod:`qvla_ros.io.episode_bag`), with the episode boundaries, task text, success and the robot YAML
in the file.

Services: ``~/start_episode`` (qvla_msgs/srv/StartEpisode: the task text) opens the next episode's
bag; ``~/stop_episode`` (qvla_msgs/srv/StopEpisode: success, or discard) closes it. Between episodes
nothing is written, but the last ``preroll`` seconds of every topic are kept and written at the start
of the next episode, so its first control tick already has a camera frame and a joint state (the
converter's observation at a tick is the newest message not newer than it, within the YAML's age
limits; the pre-roll is the largest of them). Likewise ``~/stop_episode`` keeps writing for a pre-roll
past the stop before it closes the file: messages stamped before the stop that are still on their way
(in DDS, or queued behind the service call on a busy machine) reach the file.

Topics are subscribed once a publisher appears (checked every 0.25 s), with the publishers'
reliability (reliable when they all are, as rosbag2 adapts its QoS); a publisher of another type
than the YAML says is refused and reported by ``~/start_episode``. Times: log time is this node's
clock (sim time under ``use_sim_time``, the clock the stamps are on), publish time the publisher's
source timestamp. Messages lost before they reached the recorder are counted from the publishers'
sequence numbers where the middleware reports them; a full write queue drops and counts.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.signals import SignalHandlerOptions
from rclpy.task import Future

from qvla_core.errors import ConfigError, QvlaError
from qvla_core.robot_io import RobotConfig, load_robot_config, recorded_topics
from qvla_msgs.srv import StartEpisode, StopEpisode
from qvla_ros.io.episode_bag import COMPRESSION, EpisodeBag, TopicSpec
from qvla_ros.io.message_types import message_class, qos_yaml
from qvla_ros.io.parameters import Param, check_update, declare_all
from qvla_ros.nodes.shutdown import release_ros

RECORDER_NODE_PARAMS: tuple[Param, ...] = (
    Param("robot_config", "", "Path of the robot YAML whose topics are recorded. Required.", read_only=True),
    Param(
        "output_dir",
        "recordings",
        "Directory the episode bags go to (episode_NNNNNN/, numbering continues after existing ones).",
        read_only=True,
    ),
    Param(
        "compression",
        "none",
        "MCAP chunk compression: none (fastest) or lz4.",
        choices=tuple(COMPRESSION),
        read_only=True,
    ),
    Param("chunk_size_kib", 4096, "MCAP chunk size [KiB].", low=64, high=1 << 20, read_only=True),
    Param(
        "queue_limit_mib",
        1024,
        "Largest backlog of messages waiting for the disk [MiB]; beyond it messages are dropped and counted.",
        low=16,
        high=1 << 16,
        read_only=True,
    ),
    Param(
        "queue_depth",
        100,
        "Depth of each subscription's history (DDS keeps this many messages per topic for a slow reader).",
        low=1,
        high=10000,
        read_only=True,
    ),
)
DISCOVERY_PERIOD_S = 0.25


@dataclass
class _Topic:
    name: str
    type: str
    subscription: Any = None
    refused: str = ""  # why a publisher was not subscribed to (wrong type)
    qos_yaml: str = ""
    type_hash: str = ""
    received: int = 0
    lost: int = 0  # gaps in the publishers' sequence numbers
    last_sequence: dict[bytes, int] = field(default_factory=dict)  # per publisher gid
    preroll: deque[tuple[int, int, int, bytes]] = field(default_factory=deque)


class RecorderNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("qvla_recorder", **kwargs)
        p, faults = declare_all(self, RECORDER_NODE_PARAMS)
        if faults:
            raise ConfigError("; ".join(faults))
        self.add_on_set_parameters_callback(lambda ps: check_update(ps, RECORDER_NODE_PARAMS))
        if not p["robot_config"]:
            raise ConfigError("parameter robot_config is empty: give the path of a robot YAML")
        self.config_path = Path(p["robot_config"])
        self.config: RobotConfig = load_robot_config(self.config_path)
        self.robot_yaml = self.config_path.read_text()
        self.output_dir = Path(p["output_dir"]).expanduser()
        self.compression = str(p["compression"])
        self.chunk_size = int(p["chunk_size_kib"]) * 1024
        self.queue_bytes = int(p["queue_limit_mib"]) * 1024 * 1024
        self.depth = int(p["queue_depth"])
        s = self.config.ros
        self.preroll_ns = round(
            1e9 * max(s.sync.max_age_s, s.safety.max_image_age_s, s.safety.max_state_age_s)
        )
        self.topics = [_Topic(name, kind) for name, kind in recorded_topics(self.config).items()]
        self._bag: EpisodeBag | None = None
        self._stopping = False
        self._episode: dict[str, str] = {}
        self._episode_index = -1
        self._losses_at_start: dict[str, int] = {}
        self.create_service(StartEpisode, "~/start_episode", self._srv_start)
        # A group of its own: while the coroutine awaits the tail, the default group (subscriptions,
        # /clock, timers) must stay free to run.
        self.create_service(
            StopEpisode, "~/stop_episode", self._srv_stop, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self.create_timer(DISCOVERY_PERIOD_S, self._discover)
        self._discover()
        self.get_logger().info(
            f"recording {len(self.topics)} topics of {self.config_path} to {self.output_dir} "
            f"(compression {self.compression}, pre-roll {self.preroll_ns / 1e9:g} s)"
        )

    # ---------------------------------------------------------------- subscriptions
    def _discover(self) -> None:
        for index, topic in enumerate(self.topics):
            if topic.subscription is not None:
                continue
            infos = self.get_publishers_info_by_topic(topic.name)
            if not infos:
                continue
            types = sorted({i.topic_type for i in infos})
            if types != [topic.type]:
                reason = (
                    f"{topic.name} is published as {', '.join(types)}; the robot YAML expects {topic.type}"
                )
                self._refuse(topic, reason)
                continue
            try:
                msg_class = message_class(topic.type)
            except QvlaError as exc:
                self._refuse(topic, f"{topic.name}: {exc}")
                continue
            topic.refused = ""
            reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=self.depth,
                reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.VOLATILE,
            )
            topic.qos_yaml = qos_yaml([i.qos_profile for i in infos])
            topic.type_hash = str(infos[0].topic_type_hash)
            topic.subscription = self.create_subscription(
                msg_class,
                topic.name,
                lambda data, info, i=index: self._on_message(i, data, info),
                qos,
                raw=True,
            )
            self.get_logger().info(
                f"subscribed to {topic.name} ({topic.type}, {'reliable' if reliable else 'best effort'})"
            )

    def _refuse(self, topic: _Topic, reason: str) -> None:
        """Not subscribing to ``topic``: log the reason once (discovery retries every period), keep it
        for ~/start_episode to report."""
        if reason != topic.refused:
            self.get_logger().error(f"not recording {reason}")
        topic.refused = reason

    def _on_message(self, index: int, data: bytes, info: Any) -> None:
        log_ns = self.get_clock().now().nanoseconds
        topic = self.topics[index]
        topic.received += 1
        self._count_losses(topic, info)
        publish_ns = int(info.get("source_timestamp") or log_ns)
        sequence = int(info.get("publication_sequence_number") or 0)
        if self._bag is not None:
            self._bag.put(index, log_ns, publish_ns, sequence, data)
        # Kept while recording too: an episode started right after the last one gets its pre-roll.
        topic.preroll.append((log_ns, publish_ns, sequence, data))
        while topic.preroll and topic.preroll[0][0] < log_ns - self.preroll_ns:
            topic.preroll.popleft()

    @staticmethod
    def _count_losses(topic: _Topic, info: Any) -> None:
        seq, gid = info.get("publication_sequence_number"), info.get("publisher_gid")
        if not seq or not gid:
            return  # the middleware does not report them
        key = bytes(gid.get("data", b"")) if isinstance(gid, dict) else bytes(gid)
        last = topic.last_sequence.get(key)
        if last is not None and seq > last + 1:
            topic.lost += seq - last - 1
        topic.last_sequence[key] = max(seq, last or 0)

    # ---------------------------------------------------------------- episodes
    def _next_index(self) -> int:
        taken = [
            int(p.name.split("_")[1])
            for p in self.output_dir.glob("episode_*")
            if p.name.split("_")[1:2] and p.name.split("_")[1].isdigit()
        ]
        return max([*taken, self._episode_index]) + 1

    def _start_problem(self, task: str) -> str:
        if self._bag is not None:
            return f"episode {self._episode_index} is being recorded: stop it first"
        if not task.strip():
            return "the task text is empty"
        refused = [t.refused for t in self.topics if t.refused]
        if refused:
            return "; ".join(refused)
        missing = [t.name for t in self.topics if t.subscription is None]
        if missing:
            return f"no publisher yet on {missing} (the robot YAML's topics; is everything running?)"
        if self.get_clock().now().nanoseconds == 0:
            return "the clock is at 0 (use_sim_time and no /clock yet?)"
        return ""

    def _srv_start(
        self, request: StartEpisode.Request, response: StartEpisode.Response
    ) -> StartEpisode.Response:
        problem = self._start_problem(request.task)
        if problem:
            response.accepted, response.message = False, problem
            return response
        index = self._next_index()
        directory = self.output_dir / f"episode_{index:06d}"
        specs = [TopicSpec(t.name, t.type, t.qos_yaml, t.type_hash) for t in self.topics]
        try:
            bag = EpisodeBag(
                directory,
                specs,
                compression=self.compression,
                chunk_size=self.chunk_size,
                queue_bytes=self.queue_bytes,
                robot_yaml=self.robot_yaml,
            )
        except (OSError, ValueError) as exc:
            response.accepted, response.message = False, f"cannot create {directory}: {exc}"
            return response
        start_ns = self.get_clock().now().nanoseconds
        for i, topic in enumerate(self.topics):
            for log_ns, publish_ns, sequence, data in topic.preroll:
                if log_ns >= start_ns - self.preroll_ns:
                    bag.put(i, log_ns, publish_ns, sequence, data)
        self._bag, self._episode_index = bag, index
        self._losses_at_start = {t.name: t.lost for t in self.topics}
        self._episode = {
            "episode_index": str(index),
            "task": request.task.strip(),
            "start_ns": str(start_ns),
            "clock": "sim_time" if self.get_parameter("use_sim_time").value else "ros_time",
            "robot": self.config.embodiment.name,
            "robot_config": str(self.config_path),
            "control_rate_hz": f"{self.config.embodiment.control_rate_hz:g}",
        }
        response.accepted, response.path, response.episode_index = True, str(bag.path), index
        response.message = f"episode {index} recording to {bag.path}"
        self.get_logger().info(f"{response.message}: {request.task.strip()!r}")
        return response

    async def _srv_stop(
        self, request: StopEpisode.Request, response: StopEpisode.Response
    ) -> StopEpisode.Response:
        # A coroutine: while it awaits the episode's tail, the executor goes on taking messages.
        if self._bag is None or self._stopping:
            response.accepted = False
            response.message = (
                "the episode is already stopping" if self._stopping else "no episode is being recorded"
            )
            return response
        stop_ns = self.get_clock().now().nanoseconds
        if not request.discard:
            self._stopping = True
            try:
                await self._tail(stop_ns)
            finally:
                self._stopping = False
        return self._stop(request, response, stop_ns)

    def _tail(self, stop_ns: int) -> Future[None]:
        """Done once the clock is a pre-roll past the stop (or a few wall seconds later, if the clock
        stopped): messages stamped before the stop that are still on their way reach the file."""
        done: Future[None] = Future()
        deadline = time.monotonic() + 2.0 + 4.0 * self.preroll_ns / 1e9

        def check() -> None:
            now = self.get_clock().now().nanoseconds
            if not done.done() and (now >= stop_ns + self.preroll_ns or time.monotonic() > deadline):
                timer.cancel()
                done.set_result(None)

        timer = self.create_timer(0.005, check, clock=Clock(clock_type=ClockType.STEADY_TIME))
        done.add_done_callback(lambda _: self.destroy_timer(timer))
        return done

    def _stop(
        self, request: StopEpisode.Request, response: StopEpisode.Response, stop_ns: int
    ) -> StopEpisode.Response:
        bag, self._bag = self._bag, None
        assert bag is not None
        lost = {t.name: t.lost - self._losses_at_start[t.name] for t in self.topics}
        if request.discard:
            bag.abort()
            _remove_tree(bag.directory)
            response.accepted = True
            response.message = f"episode {self._episode_index} discarded"
            self.get_logger().info(response.message)
            return response
        record = self._episode | {
            "stop_ns": str(stop_ns),
            "success": "true" if request.success else "false",
            "messages_lost": str(sum(lost.values())),
            "lost_per_topic": ",".join(f"{k}={v}" for k, v in lost.items() if v),
        }
        try:
            stats = bag.close(record)
        except OSError as exc:
            response.accepted, response.message = False, f"episode {self._episode_index}: {exc}"
            self.get_logger().error(response.message)
            return response
        response.accepted, response.path = True, str(bag.path)
        response.messages_written = stats.messages_written
        response.messages_dropped = stats.messages_dropped + sum(lost.values())
        seconds = (stop_ns - int(record["start_ns"])) / 1e9
        response.message = (
            f"episode {self._episode_index} ({'success' if request.success else 'no success'}, "
            f"{seconds:.2f} s): {stats.messages_written} messages written, {stats.messages_dropped} "
            f"dropped by the write queue, {sum(lost.values())} lost before the recorder"
        )
        self.get_logger().info(response.message)
        return response

    def close(self) -> None:
        """An episode still open at shutdown is closed as unsuccessful (its data is kept)."""
        if self._bag is not None:
            request = StopEpisode.Request(success=False, discard=False)
            now = self.get_clock().now().nanoseconds
            self._stop(request, StopEpisode.Response(), now)  # nothing spins any more: no tail


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    import signal

    stop = {"asked": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(asked=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(asked=True))
    node: RecorderNode | None = None
    executor: SingleThreadedExecutor | None = None
    error = ""
    try:
        node = RecorderNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop["asked"] and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    except (QvlaError, OSError, ValueError) as exc:
        error = str(exc)
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        del node, executor  # they hold the node's handle until collected (see release_ros)
        release_ros()
    if error:
        rclpy.logging.get_logger("qvla_recorder").error(error)
        sys.exit(1)


if __name__ == "__main__":
    main()
