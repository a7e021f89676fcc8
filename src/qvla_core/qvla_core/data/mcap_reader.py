"""Read demonstration recordings: ROS 2 bags in MCAP, ours (``recorder_node``) or ``ros2 bag record``'s.

A *bag* is a ``.mcap`` file, or a directory with ``metadata.yaml`` and one or more ``.mcap`` files
(rosbag2's layout; a bag split into several files is one bag). Our recorder writes one bag per
episode with a ``qvla_episode`` metadata record (task, start and stop on the recorder's clock,
success) and the robot YAML as an attachment; a bag without that record is one episode spanning
the whole bag, whose task the caller gives.

Messages are decoded with ``mcap_ros2`` from the ``ros2msg`` schemas stored in the file (no rclpy,
no installed message packages needed). Every problem is a :class:`RecordingError` naming the file:
a file cut short or corrupt (chunk CRCs are checked), a compression this environment cannot read,
a topic stored with another type than the robot YAML expects.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qvla_core.errors import QvlaError

EPISODE_RECORD = "qvla_episode"
ROBOT_ATTACHMENT = "robot.yaml"


class RecordingError(QvlaError):
    """A recording cannot be converted as it is; the message names the file, topic or episode."""


@dataclass(frozen=True)
class EpisodeSpan:
    """One episode inside a bag. ``start_ns``/``stop_ns`` are on the recorder's clock (the log
    times); None means the bag's first/last message. ``task``/``success`` are None when the bag
    does not say (a plain ``ros2 bag record``)."""

    bag: Path
    index: int
    task: str | None
    success: bool | None
    start_ns: int | None
    stop_ns: int | None
    robot_yaml: str | None = None
    recorder_dropped: int = 0  # messages the recorder dropped or saw lost (its sequence-number count)

    @property
    def label(self) -> str:
        return f"{self.bag} (episode {self.index})" if self.start_ns is not None else str(self.bag)


@dataclass(frozen=True)
class Message:
    topic: str
    log_ns: int
    msg: Any  # the decoded ROS message (mcap_ros2's dynamic type: attribute access like rclpy's)


def _mcap_reader(stream: Any) -> Any:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    return make_reader(stream, validate_crcs=True, decoder_factories=[DecoderFactory()])


def _broken(path: Path, exc: BaseException) -> RecordingError:
    return RecordingError(
        f"{path}: cannot read this MCAP file ({type(exc).__name__}: {exc}); it is truncated or corrupt "
        "(a recording that was interrupted before its episode was stopped ends like this). "
        "Re-record the episode, or leave the file out."
    )


class Bag:
    """A recorded bag: its files, topics (name -> type) and episodes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.files = self._files()
        self.topics: dict[str, str] = {}
        self._episodes: list[dict[str, str]] = []
        self.robot_yaml: str | None = None
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        for file in self.files:
            self._scan(file)

    def _files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        if not self.path.is_dir():
            raise RecordingError(f"{self.path}: no such bag (a .mcap file or a ros2 bag directory)")
        meta = self.path / "metadata.yaml"
        if meta.is_file():
            try:
                info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
                names = list(info["relative_file_paths"])
                storage = info.get("storage_identifier", "mcap")
            except (yaml.YAMLError, KeyError, TypeError) as exc:
                raise RecordingError(f"{meta}: not a rosbag2 metadata file ({exc})") from None
            if storage != "mcap":
                raise RecordingError(
                    f"{self.path}: storage {storage!r}; only MCAP bags are read "
                    "(ros2 bag convert, or record with -s mcap)"
                )
            files = [self.path / n for n in names]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise RecordingError(f"{meta} lists files that do not exist: {missing}")
            return files
        files = sorted(self.path.glob("*.mcap"))
        if not files:
            raise RecordingError(f"{self.path}: no metadata.yaml and no .mcap files")
        return files

    def _scan(self, file: Path) -> None:
        try:
            with file.open("rb") as f:
                reader = _mcap_reader(f)
                summary = reader.get_summary()
                if summary is None:
                    raise RecordingError(f"{file}: the MCAP file has no summary section (not closed?)")
                self._check_compression(file, summary)
                for channel in summary.channels.values():
                    schema = summary.schemas.get(channel.schema_id)
                    kind = schema.name if schema is not None else ""
                    if channel.message_encoding != "cdr" or schema is None or schema.encoding != "ros2msg":
                        continue  # not a ROS 2 topic with a definition: ignored (never converted)
                    known = self.topics.setdefault(channel.topic, kind)
                    if known != kind:
                        raise RecordingError(f"{file}: topic {channel.topic} is {kind} here, {known} before")
                stats = summary.statistics
                if stats is not None and stats.message_count:
                    lo, hi = stats.message_start_time, stats.message_end_time
                    self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
                    self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)
                for record in reader.iter_metadata():
                    if record.name == EPISODE_RECORD:
                        self._episodes.append(dict(record.metadata))
                for attachment in reader.iter_attachments():
                    if attachment.name == ROBOT_ATTACHMENT:
                        self.robot_yaml = attachment.data.decode("utf-8", errors="replace")
        except RecordingError:
            raise
        except Exception as exc:  # the mcap library raises many kinds on a cut or damaged file
            raise _broken(file, exc) from exc

    @staticmethod
    def _check_compression(file: Path, summary: Any) -> None:
        kinds = {c.compression for c in summary.chunk_indexes} - {""}
        if "zstd" in kinds and importlib.util.find_spec("zstandard") is None:
            raise RecordingError(
                f"{file}: chunks are Zstd-compressed (rosbag2's default) and the zstandard module is not "
                "installed: pip install zstandard, or record with compression None or Lz4 "
                "(ros2 bag record -s mcap --storage-config-file with `compression: Lz4`)"
            )
        if "lz4" in kinds and importlib.util.find_spec("lz4") is None:
            raise RecordingError(f"{file}: chunks are LZ4-compressed and the lz4 module is not installed")

    def episodes(self, task: str | None = None) -> list[EpisodeSpan]:
        """The episodes of this bag; ``task`` is used where the bag does not name one (and
        overrides nothing). A bag without episode records is one episode."""
        if not self._episodes:
            return [EpisodeSpan(self.path, 0, task, None, None, None, self.robot_yaml)]
        spans = []
        for record in sorted(self._episodes, key=lambda r: int(r.get("start_ns", 0))):
            try:
                spans.append(
                    EpisodeSpan(
                        self.path,
                        int(record["episode_index"]),
                        record.get("task") or task,
                        {"true": True, "false": False}.get(record.get("success", "")),
                        int(record["start_ns"]),
                        int(record["stop_ns"]),
                        self.robot_yaml,
                        int(record.get("messages_dropped", 0)) + int(record.get("messages_lost", 0)),
                    )
                )
            except (KeyError, ValueError) as exc:
                raise RecordingError(f"{self.path}: bad {EPISODE_RECORD} record {record} ({exc})") from None
        return spans

    def check_types(self, expected: Mapping[str, str]) -> None:
        """Every expected topic is in the bag with the expected type (``pkg/msg/Type``)."""
        for topic, kind in expected.items():
            got = self.topics.get(topic)
            if got is None:
                raise RecordingError(
                    f"{self.path}: topic {topic} ({kind}), which the robot YAML needs, was not recorded "
                    f"(recorded: {sorted(self.topics)})"
                )
            if _normal_type(got) != _normal_type(kind):
                raise RecordingError(f"{self.path}: topic {topic} is {got}; the robot YAML expects {kind}")

    def messages(self, topics: Iterable[str], start_ns: int | None, stop_ns: int | None) -> Iterator[Message]:
        """Decoded messages of ``topics`` logged in [start_ns, stop_ns], in log-time order."""
        wanted = list(topics)
        for file in self.files:
            try:
                with file.open("rb") as f:
                    reader = _mcap_reader(f)
                    for _, channel, message, decoded in reader.iter_decoded_messages(
                        topics=wanted,
                        starting_at=start_ns,
                        ending_before=None if stop_ns is None else stop_ns + 1,
                    ):
                        yield Message(channel.topic, message.log_time, decoded)
            except RecordingError:
                raise
            except Exception as exc:
                raise _broken(file, exc) from exc


def _normal_type(kind: str) -> str:
    """``pkg/Type`` and ``pkg/msg/Type`` name the same message."""
    parts = kind.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else kind


def find_bags(paths: Iterable[Path]) -> list[Bag]:
    """Every bag under ``paths``: a .mcap file, a bag directory, or a directory of bag directories
    (a recorder's output directory), in name order."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir() and not (path / "metadata.yaml").is_file() and not any(path.glob("*.mcap")):
            subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
            bags = [p for p in subdirs if (p / "metadata.yaml").is_file() or any(p.glob("*.mcap"))]
            if not bags:
                raise RecordingError(f"{path}: no bags in it (no .mcap files or bag directories)")
            found.extend(bags)
        else:
            found.append(path)
    return [Bag(p) for p in found]
