"""One recorded episode as a ROS 2 bag: a directory with ``metadata.yaml`` and one MCAP file laid out
the way ``ros2 bag record -s mcap`` writes it, so ``ros2 bag info``/``play``, Foxglove and the
``mcap`` tools read it.

The layout (rosbag2_storage_mcap's): profile ``ros2``; one schema per message type, encoding
``ros2msg``, holding the complete message definition (the type's .msg text, then every type it uses,
each after a line of 80 ``=`` and ``MSG: pkg/Type``, as rosbag2's local message definition source
concatenates them, read from the installed .msg files through the ament index); one channel per
topic, message encoding ``cdr``, metadata ``offered_qos_profiles`` and ``topic_type_hash``; messages
with the recorder's receive time as log time and the publisher's source timestamp as publish time;
a ``rosbag2`` metadata record with the bag's metadata. qvla adds an attachment ``robot.yaml`` and a
metadata record ``qvla_episode`` (task, episode boundaries, success, message counts).

Writing happens on a thread of its own fed by a bounded queue: :meth:`EpisodeBag.put` never blocks a
subscription callback; when the queue is full the message is dropped and counted.

Compression: none by default (a 4-camera 640x480 stream is ~110 MB/s, more than LZ4 keeps up with on a
small CPU), or per-chunk LZ4. (Bags that ``ros2 bag record`` compressed with its default, Zstd, are
read by the converter: ``zstandard`` is in the lock.)
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from mcap.writer import CompressionType, Writer

PROFILE = "ros2"
LIBRARY = "qvla recorder_node"
EPISODE_RECORD = "qvla_episode"
ROBOT_ATTACHMENT = "robot.yaml"
DELIMITER = "=" * 80
# Field types rosbag2 does not look up (its PRIMITIVE_TYPES); wstring is primitive too in ROS 2.
_PRIMITIVES = frozenset(
    [
        "bool",
        "byte",
        "char",
        "float32",
        "float64",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "string",
        "wstring",
    ]
)
_FIELD_TYPE = re.compile(r"^\s*([A-Za-z0-9_/]+)(?:\[[^\]]*\])?\s+", re.MULTILINE)
COMPRESSION = {"none": CompressionType.NONE, "lz4": CompressionType.LZ4}


# ---------------------------------------------------------------- message definitions
def _definition_file(type_name: str) -> Path:
    """``pkg/msg/Type`` or ``pkg/Type`` -> the installed ``share/pkg/msg/Type.msg``."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    parts = type_name.split("/")
    if len(parts) == 2:
        parts.insert(1, "msg")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"message type {type_name!r} is not pkg/msg/Type")
    package, kind, name = parts
    try:
        share = Path(get_package_share_directory(package))
    except PackageNotFoundError:
        raise FileNotFoundError(f"message package {package} is not installed (type {type_name})") from None
    path = share / kind / f"{name}.msg"
    if not path.is_file():
        raise FileNotFoundError(f"no .msg definition for {type_name} at {path}")
    return path


def _dependencies(text: str, package: str) -> list[str]:
    """The non-primitive field types of a .msg text, sorted (rosbag2 walks them in set order)."""
    found = set()
    for m in _FIELD_TYPE.finditer(text):
        kind = m.group(1)
        if kind in _PRIMITIVES:
            continue
        found.add(kind if "/" in kind else f"{package}/{kind}")
    return sorted(found)


@functools.lru_cache(maxsize=128)
def message_definition(type_name: str) -> str:
    """The complete ``ros2msg`` definition of ``type_name`` (e.g. ``sensor_msgs/msg/Image``): its own
    text, then each type it depends on, depth first, each once."""
    seen: set[str] = set()

    def append(name: str, depth: int) -> str:
        if depth > 50:
            raise ValueError(f"message definitions nest too deeply under {type_name}")
        text = _definition_file(name).read_text()
        out = text
        for dep in _dependencies(text, name.split("/", maxsplit=1)[0]):
            if dep not in seen:
                seen.add(dep)
                out += f"\n{DELIMITER}\nMSG: {dep}\n" + append(dep, depth + 1)
        return out

    return append(type_name, 0)


# ---------------------------------------------------------------- bag writing
@dataclass(frozen=True)
class TopicSpec:
    """A recorded topic: name, ROS type (``pkg/msg/Type``), and what its publishers offered."""

    name: str
    type: str
    offered_qos_profiles: str = ""  # YAML list, as rosbag2 stores it
    type_hash: str = ""  # RIHS01_... of the publishers, where the middleware reports it


@dataclass
class BagStats:
    written: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # queue full
    first_log_ns: int = 0
    last_log_ns: int = 0
    error: str = ""

    @property
    def messages_written(self) -> int:
        return sum(self.written.values())

    @property
    def messages_dropped(self) -> int:
        return sum(self.dropped.values())


class EpisodeBag:
    """A bag directory being written; :meth:`put` from callbacks, :meth:`close` once at the end."""

    def __init__(
        self,
        directory: Path,
        topics: Sequence[TopicSpec],
        *,
        compression: str = "none",
        chunk_size: int = 4 * 1024 * 1024,
        queue_bytes: int = 1 << 30,
        robot_yaml: str = "",
        ros_distro: str = "",
    ) -> None:
        if compression not in COMPRESSION:
            raise ValueError(f"compression must be one of {sorted(COMPRESSION)}, got {compression!r}")
        directory.mkdir(parents=True, exist_ok=False)
        self.directory = directory
        self.path = directory / f"{directory.name}_0.mcap"
        self.topics = list(topics)
        self.compression = compression
        self.ros_distro = ros_distro or os.environ.get("ROS_DISTRO", "")
        self.stats = BagStats(written={t.name: 0 for t in topics}, dropped={t.name: 0 for t in topics})
        self._queue_limit = queue_bytes
        self._queued_bytes = 0
        self._items: deque[tuple[int, int, int, int, bytes] | None] = deque()
        self._cond = threading.Condition()
        self._file = self.path.open("wb")
        # The data-section CRC is the only one MCAP has over metadata records (our qvla_episode record:
        # task, bounds); qvla-convert checks it. ~9% of the writer's throughput (413 -> 379 MB/s here).
        self._writer = Writer(
            self._file, chunk_size=chunk_size, compression=COMPRESSION[compression], enable_data_crcs=True
        )
        self._writer.start(profile=PROFILE, library=LIBRARY)
        schemas: dict[str, int] = {}
        self._channels: list[int] = []
        for t in topics:
            if t.type not in schemas:
                schemas[t.type] = self._writer.register_schema(
                    t.type, "ros2msg", message_definition(t.type).encode()
                )
            meta = {"offered_qos_profiles": t.offered_qos_profiles, "topic_type_hash": t.type_hash}
            self._channels.append(self._writer.register_channel(t.name, "cdr", schemas[t.type], meta))
        if robot_yaml:
            now = time.time_ns()
            self._writer.add_attachment(now, now, ROBOT_ATTACHMENT, "application/yaml", robot_yaml.encode())
        self._thread = threading.Thread(target=self._drain, name="qvla-bag-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ producer side (callbacks)
    def put(self, topic_index: int, log_ns: int, publish_ns: int, sequence: int, data: bytes) -> bool:
        """Queue one serialized message; False (and counted as dropped) when the queue is full."""
        with self._cond:
            if self._queued_bytes + len(data) > self._queue_limit:
                self.stats.dropped[self.topics[topic_index].name] += 1
                return False
            self._queued_bytes += len(data)
            self._items.append((topic_index, log_ns, publish_ns, sequence, data))
            self._cond.notify()
        return True

    @property
    def queued_bytes(self) -> int:
        with self._cond:
            return self._queued_bytes

    # ------------------------------------------------------------ the writer thread
    def _drain(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                item = self._items.popleft()
                if item is not None:
                    self._queued_bytes -= len(item[4])
            if item is None:
                return
            if self.stats.error:
                continue  # the file is broken: keep draining so producers never block
            index, log_ns, publish_ns, sequence, data = item
            try:
                self._writer.add_message(
                    self._channels[index], log_ns, data, publish_ns, sequence & 0xFFFFFFFF
                )
            except Exception as exc:  # disk full, I/O error: reported by close()
                self.stats.error = f"writing {self.path} failed ({type(exc).__name__}: {exc})"
                continue
            name = self.topics[index].name
            self.stats.written[name] += 1
            if not self.stats.first_log_ns or log_ns < self.stats.first_log_ns:
                self.stats.first_log_ns = log_ns
            self.stats.last_log_ns = max(self.stats.last_log_ns, log_ns)

    # ------------------------------------------------------------ the end
    def close(self, episode: Mapping[str, str], timeout_s: float = 120.0) -> BagStats:
        """Write what is queued, the ``qvla_episode`` record (``episode``) and the ``rosbag2`` record,
        finish the file and write metadata.yaml. Raises OSError when the file could not be written."""
        with self._cond:
            self._items.append(None)
            self._cond.notify()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            raise OSError(f"{self.path}: the writer did not finish within {timeout_s:.0f} s")
        if self.stats.error:
            self._file.close()
            raise OSError(self.stats.error)
        record = dict(episode)
        record["messages_written"] = str(self.stats.messages_written)
        record["messages_dropped"] = str(self.stats.messages_dropped)
        self._writer.add_metadata(EPISODE_RECORD, record)
        metadata = self._bag_metadata()
        self._writer.add_metadata("rosbag2", {"serialized_metadata": yaml.safe_dump(metadata)})
        self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        text = yaml.safe_dump({"rosbag2_bagfile_information": metadata}, sort_keys=False)
        (self.directory / "metadata.yaml").write_text(text)
        return self.stats

    def abort(self) -> None:
        """Stop writing and leave the (unfinished) file as it is (the caller may delete it)."""
        with self._cond:
            self._items.clear()
            self._queued_bytes = 0
            self._items.append(None)
            self._cond.notify()
        self._thread.join(timeout=10.0)
        if not self._file.closed:
            self._file.close()

    def _bag_metadata(self) -> dict[str, object]:
        """rosbag2's BagMetadata (version 8: QoS profiles as a YAML string), for metadata.yaml."""
        start, end = self.stats.first_log_ns, self.stats.last_log_ns
        count = self.stats.messages_written
        return {
            "version": 8,
            "storage_identifier": "mcap",
            "duration": {"nanoseconds": max(0, end - start)},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": count,
            "topics_with_message_count": [
                {
                    "topic_metadata": {
                        "name": t.name,
                        "type": t.type,
                        "serialization_format": "cdr",
                        "offered_qos_profiles": t.offered_qos_profiles,
                        "type_description_hash": t.type_hash,
                    },
                    "message_count": self.stats.written[t.name],
                }
                for t in self.topics
            ],
            "compression_format": "",
            "compression_mode": "",
            "relative_file_paths": [self.path.name],
            "files": [
                {
                    "path": self.path.name,
                    "starting_time": {"nanoseconds_since_epoch": start},
                    "duration": {"nanoseconds": max(0, end - start)},
                    "message_count": count,
                }
            ],
            "custom_data": {},
            "ros_distro": self.ros_distro,
        }
