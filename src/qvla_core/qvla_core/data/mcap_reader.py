"""Read demonstration recordings: ROS 2 bags in MCAP, ours (``recorder_node``) or ``ros2 bag record``'s.

A *bag* is a ``.mcap`` file, or a directory with ``metadata.yaml`` and one or more ``.mcap`` files
(rosbag2's layout; a bag split into several files is one bag). Our recorder writes one bag per
episode with a ``qvla_episode`` metadata record (task, start and stop on the recorder's clock,
success) and the robot YAML as an attachment; a bag without that record is one episode spanning
the whole bag, whose task the caller gives.

Messages are decoded with ``mcap_ros2`` from the ``ros2msg`` schemas stored in the file (no rclpy,
no installed message packages needed). Every problem is a :class:`RecordingError` naming the file:
a file cut short or corrupt (every CRC the writer stored is checked: chunks when read, the summary,
attachments and, where written, the data section when the bag is opened), a compression this
environment cannot read, a topic stored with another type than the robot YAML expects, an episode
record whose values are not what the recorder writes, a metadata.yaml that does not list the bag's
files. ``find_bags(..., skip_bad=True)`` keeps a bag that cannot be opened, with its error, so that
``qvla-convert --skip-bad`` can leave it out and list it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qvla_core.errors import QvlaError
from qvla_core.logs import get_logger

EPISODE_RECORD = "qvla_episode"
ROBOT_ATTACHMENT = "robot.yaml"
MAGIC_SIZE = 8
FOOTER_SIZE = 1 + 8 + 8 + 8 + 4  # opcode, record length, summary_start, summary_offset_start, summary_crc
DATA_END_SIZE = 1 + 8 + 4  # opcode, record length, data_section_crc
DATA_END_OPCODE = 0x0F
_INTEGER = re.compile(r"[0-9]{1,20}")

log = get_logger("qvla.data")


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


_REDO = "the file is corrupt: re-record the episode, or leave the bag out (qvla-convert --skip-bad)"


def _check_crcs(file: Path, f: Any) -> None:
    """Compare the CRCs the writer stored (0 = not stored) with the bytes: the summary section (the
    footer's CRC), each attachment, and the data section where the writer stored one. Chunks are
    checked when they are read."""
    size = os.fstat(f.fileno()).st_size
    if size < 2 * MAGIC_SIZE + FOOTER_SIZE:
        return  # too short to have a footer: the mcap reader says so
    f.seek(size - MAGIC_SIZE - FOOTER_SIZE)
    _, _, summary_start, _, summary_crc = struct.unpack("<BQQQI", f.read(FOOTER_SIZE))
    if summary_start and summary_crc and summary_start < size:
        f.seek(summary_start)
        if zlib.crc32(f.read(size - MAGIC_SIZE - 4 - summary_start)) != summary_crc:
            raise RecordingError(f"{file}: the summary section fails its CRC check; {_REDO}")
    end = summary_start if 0 < summary_start < size else size - MAGIC_SIZE - FOOTER_SIZE
    if end < MAGIC_SIZE + DATA_END_SIZE:
        return
    f.seek(end - DATA_END_SIZE)
    opcode, _, data_crc = struct.unpack("<BQI", f.read(DATA_END_SIZE))
    if opcode == DATA_END_OPCODE and data_crc:
        f.seek(0)
        crc, left = 0, end - DATA_END_SIZE
        while left > 0:
            block = f.read(min(left, 1 << 24))
            if not block:
                break
            crc, left = zlib.crc32(block, crc), left - len(block)
        if crc != data_crc:
            raise RecordingError(f"{file}: the data section fails its CRC check; {_REDO}")


def _check_attachment(file: Path, f: Any, offset: int, length: int) -> None:
    f.seek(offset)
    raw = f.read(length)
    stored = int.from_bytes(raw[-4:], "little") if len(raw) == length else None
    if stored is None or (stored and zlib.crc32(raw[9:-4]) != stored):
        raise RecordingError(f"{file}: the attachment at byte {offset} fails its CRC check; {_REDO}")


class Bag:
    """A recorded bag: its files, topics (name -> type) and episodes."""

    def __init__(self, path: Path, *, skip_bad: bool = False) -> None:
        """Open the bag (its files' summaries, episode records and robot YAML). A bag that cannot be
        opened raises :class:`RecordingError`, or with ``skip_bad`` keeps it in :attr:`error`."""
        self.path = Path(path)
        self.files: list[Path] = []
        self.topics: dict[str, str] = {}
        self._episodes: list[tuple[Path, dict[str, str]]] = []  # (file, qvla_episode record)
        self.robot_yaml: str | None = None
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.message_count = 0
        self.error: RecordingError | None = None
        try:
            self.files = self._files()
            for file in self.files:
                self._scan(file)
        except RecordingError as exc:
            if not skip_bad:
                raise
            self.error = exc
            log.warning("leaving out %s: %s", self.path, exc)

    def _files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        if not self.path.is_dir():
            raise RecordingError(f"{self.path}: no such bag (a .mcap file or a ros2 bag directory)")
        meta = self.path / "metadata.yaml"
        if meta.is_file():
            return self._listed_files(meta)
        files = sorted(self.path.glob("*.mcap"))
        if not files:
            raise RecordingError(f"{self.path}: no metadata.yaml and no .mcap files")
        return files

    def _listed_files(self, meta: Path) -> list[Path]:
        """The files metadata.yaml lists: all there, and every .mcap file of the directory listed
        (a file left out would silently drop its part of the recording)."""
        fix = "fix or delete it (without it every .mcap file of the directory is read), or `ros2 bag reindex`"
        try:
            info = yaml.safe_load(meta.read_text(encoding="utf-8"))["rosbag2_bagfile_information"]
            names = info["relative_file_paths"]
            storage = info.get("storage_identifier", "mcap")
        except (yaml.YAMLError, KeyError, TypeError, AttributeError, UnicodeDecodeError, OSError) as exc:
            raise RecordingError(
                f"{meta}: not a rosbag2 metadata file ({type(exc).__name__}: {exc}); {fix}"
            ) from None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise RecordingError(
                f"{meta}: relative_file_paths: expected a list of file names, got {names!r}; {fix}"
            )
        if storage != "mcap":
            raise RecordingError(
                f"{self.path}: storage {storage!r}; only MCAP bags are read "
                "(ros2 bag convert, or record with -s mcap)"
            )
        files = [self.path / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise RecordingError(f"{meta} lists files that do not exist: {missing}")
        listed = {f.resolve() for f in files}
        unlisted = [p.name for p in sorted(self.path.glob("*.mcap")) if p.resolve() not in listed]
        if unlisted:
            raise RecordingError(f"{meta} does not list {unlisted}, which are in the bag directory; {fix}")
        return files

    def _scan(self, file: Path) -> None:
        try:
            with file.open("rb") as f:
                _check_crcs(file, f)
                f.seek(0)
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
                if stats is not None:
                    self.message_count += stats.message_count
                if stats is not None and stats.message_count:
                    lo, hi = stats.message_start_time, stats.message_end_time
                    self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
                    self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)
                for record in reader.iter_metadata():
                    if record.name == EPISODE_RECORD:
                        self._episodes.append((file, dict(record.metadata)))
                for index in summary.attachment_indexes:
                    _check_attachment(file, f, index.offset, index.length)
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
        spans = [self._span(file, record, task) for file, record in self._episodes]
        return sorted(spans, key=lambda span: span.start_ns or 0)

    def _span(self, file: Path, record: Mapping[str, str], task: str | None) -> EpisodeSpan:
        """One ``qvla_episode`` record, checked: MCAP stores it without a CRC, so a damaged value
        must at least not be one the recorder could have written."""
        where = f"{file}: {EPISODE_RECORD} record {dict(record)}"

        def number(key: str, default: str | None = None) -> int:
            text = record.get(key, default)
            if text is None or not _INTEGER.fullmatch(text):
                raise RecordingError(f"{where}: {key} must be a non-negative integer (got {text!r}); {_REDO}")
            return int(text)

        start, stop = number("start_ns"), number("stop_ns")
        dropped = number("messages_dropped", "0") + number("messages_lost", "0")
        success = record.get("success", "")
        if success not in ("true", "false", ""):
            raise RecordingError(f"{where}: success must be 'true' or 'false' (got {success!r}); {_REDO}")
        text = record.get("task") or None
        if text is not None and not text.isprintable():
            raise RecordingError(f"{where}: the task text has unprintable characters; {_REDO}")
        if stop < start or (self.last_ns is not None and self.first_ns is not None and (
            start > self.last_ns or stop < self.first_ns
        )):  # fmt: skip
            raise RecordingError(
                f"{where}: the episode {start}..{stop} ns is empty or outside the bag's messages "
                f"({self.first_ns}..{self.last_ns} ns); {_REDO}"
            )
        written = record.get("messages_written")
        if (
            written is not None
            and len(self._episodes) == 1
            and number("messages_written") != self.message_count
        ):
            raise RecordingError(
                f"{where}: messages_written {written}, but the bag holds {self.message_count} messages; "
                f"{_REDO}"
            )
        return EpisodeSpan(
            self.path,
            number("episode_index"),
            text or task,
            {"true": True, "false": False}.get(success),
            start,
            stop,
            self.robot_yaml,
            dropped,
        )

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


def find_bags(paths: Iterable[Path], *, skip_bad: bool = False) -> list[Bag]:
    """Every bag under ``paths``: a .mcap file, a bag directory, or a directory of bag directories
    (a recorder's output directory), in name order. With ``skip_bad`` a bag that cannot be opened
    is returned with its :attr:`Bag.error` (and a warning) instead of raising."""
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
    return [Bag(p, skip_bad=skip_bad) for p in found]
