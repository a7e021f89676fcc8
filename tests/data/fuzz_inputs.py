"""Valid inputs for the data fuzz (bench/data_fuzz.py, tests/data/test_fuzz.py), the entry points
they go through, and how an outcome is classified.

* Bags: two episode bags as ``recorder_node`` writes them (its own :class:`EpisodeBag`: metadata.yaml,
  one MCAP file, the ``qvla_episode`` record and the robot YAML attached; uncompressed and LZ4), and a
  ``ros2 bag record -s mcap`` bag (metadata.yaml, two split files, Zstd chunks: rosbag2's default).
  Messages are CDR-encoded with mcap_ros2 from the installed .msg definitions (no rclpy needed).
* A dataset: :func:`synthetic_dataset.write_dataset` (two episodes, two cameras).

Entry points: ``qvla-convert`` (find_bags + convert, strict and with ``--skip-bad``); the LeRobot
reader (open, every sample); ``qvla-train``'s loading (open with a frame cache, check_source, norm
stats, the frame cache of every record). Each run yields a digest of everything it produced, so a
damaged input that loads is compared with the pristine one: equal is "unaffected", different is
"silent-wrong".
"""

from __future__ import annotations

import copy
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from qvla_core.errors import QvlaError

REPO = Path(__file__).resolve().parents[2]
JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
CAM, LEFT, RIGHT = "/cam_high/image_raw", "/follower_left/joint_states", "/follower_right/joint_states"
LCTRL = "/follower_left/arm_controller/joint_trajectory"
RCTRL = "/follower_right/arm_controller/joint_trajectory"
W, H = 32, 24
MS = 1_000_000
TASK = "transfer the cube"

# How a run ended (the table's columns, in this order).
ERROR = "clear error naming the file"
VAGUE = "error not naming the file"
SKIPPED = "left out with a warning"
WARNED = "loaded with a warning"
UNAFFECTED = "unaffected (same output)"
SILENT = "silent-wrong"
CRASH = "crash (raw exception)"
OUTCOMES = (ERROR, SKIPPED, WARNED, UNAFFECTED, VAGUE, SILENT, CRASH)
ACCEPTABLE = {ERROR, SKIPPED, WARNED, UNAFFECTED}


def robot_yaml() -> str:
    data = copy.deepcopy(yaml.safe_load((REPO / "config/robots/aloha.yaml").read_text()))
    data["embodiment"]["cameras"] = [{"name": "cam_high", "width": W, "height": H}]
    data["ros"]["cameras"] = [{"camera": "cam_high", "topic": CAM}]
    data["ros"]["recording"] = {"actions": {"source": "commanded_trajectory"}}
    return yaml.safe_dump(data, sort_keys=False)


def _episode_bag() -> Any:
    from qvla_ros.io import episode_bag  # the recorder's writer (imported late: needs rclpy)

    return episode_bag


def _encoders() -> dict[str, Callable[[dict[str, Any]], bytes]]:
    from mcap_ros2._dynamic import serialize_dynamic

    from qvla_core.robot_io import IMAGE_TYPE, JOINT_STATE_TYPE, TRAJECTORY_TYPE

    definition = _episode_bag().message_definition
    out = {}
    for kind in (IMAGE_TYPE, JOINT_STATE_TYPE, TRAJECTORY_TYPE):
        name = kind.replace("/msg/", "/")
        out[kind] = serialize_dynamic(name, definition(kind))[name]
    return out


def _header(ns: int) -> dict[str, Any]:
    return {"stamp": {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000}, "frame_id": ""}


def gradient(t_ms: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    r = 128 + 90 * np.sin(x / 6.0 + t_ms / 300)
    g = 128 + 90 * np.sin(y / 5.0 - t_ms / 500)
    return np.stack([r, g, np.full(x.shape, 60.0)], axis=-1).round().astype(np.uint8)


def messages(until_ms: int, phase: float = 0.0) -> list[tuple[str, int, dict[str, Any]]]:
    """(topic, log ns, message): states at 50 Hz, frames at 25 Hz, a left-arm trajectory every 200 ms."""
    out: list[tuple[str, int, dict[str, Any]]] = []
    for t in range(0, until_ms + 1, 20):
        ns = t * MS
        for topic, sign in ((LEFT, 1.0), (RIGHT, -1.0)):
            pos = [sign * (t / 1000 + phase)] * 6 + [0.4]
            out.append((topic, ns, {"header": _header(ns), "name": JOINTS, "position": pos}))
        if t % 40 == 0:
            img = {"header": _header(ns), "height": H, "width": W, "encoding": "rgb8", "is_bigendian": 0}
            out.append((CAM, ns, img | {"step": 3 * W, "data": gradient(t).tobytes()}))
        if t % 200 == 100:
            points = [
                {"positions": [2 * (t + 20 * k) / 1000 + phase] * 6 + [0.4], "time_from_start": {
                    "sec": 0, "nanosec": 20 * k * MS}}
                for k in range(10)
            ]  # fmt: skip
            traj = {"header": _header(ns + 20 * MS), "joint_names": JOINTS, "points": points}
            out.append((LCTRL, ns, traj))
        if t == 700:  # the right arm gets one command: a point 0.3 s ahead
            point = {"positions": [0.0] * 7, "time_from_start": {"sec": 0, "nanosec": 300 * MS}}
            out.append((RCTRL, ns, {"header": _header(ns), "joint_names": JOINTS, "points": [point]}))
    return out


def _types() -> dict[str, str]:
    from qvla_core.embodiment import parse_model
    from qvla_core.robot_io import RobotConfig, recorded_topics

    return recorded_topics(parse_model(RobotConfig, yaml.safe_load(robot_yaml()), "fuzz"))


def our_bag(directory: Path, index: int, compression: str = "none") -> Path:
    """An episode bag as recorder_node writes it (1.2 s of messages, the episode 0.2 .. 1.0 s)."""
    eb = _episode_bag()
    encode = _encoders()
    types = _types()
    specs = [eb.TopicSpec(n, k) for n, k in types.items()]
    bag = eb.EpisodeBag(
        directory, specs, robot_yaml=robot_yaml(), compression=compression, chunk_size=64 * 1024
    )
    where = {s.name: i for i, s in enumerate(specs)}
    for topic, ns, msg in messages(1200, phase=0.1 * index):
        bag.put(where[topic], ns, ns, 0, encode[types[topic]](msg))
    record = {"episode_index": str(index), "task": f"{TASK} {index}", "start_ns": str(200 * MS)}
    bag.close(record | {"stop_ns": str(1000 * MS), "success": "true" if index % 2 == 0 else "false"})
    return directory


def ros2_bag(directory: Path) -> Path:
    """What ``ros2 bag record -s mcap`` leaves: metadata.yaml, two split files, Zstd chunks."""
    from mcap.writer import CompressionType
    from mcap_ros2.writer import Writer

    definition = _episode_bag().message_definition
    directory.mkdir(parents=True)
    names = [f"{directory.name}_0.mcap", f"{directory.name}_1.mcap"]
    writers = [
        Writer(str(directory / n), chunk_size=64 * 1024, compression=CompressionType.ZSTD) for n in names
    ]
    types = _types()
    schemas = [{t: w.register_msgdef(k, definition(k)) for t, k in types.items()} for w in writers]
    for topic, ns, msg in messages(1200):
        k = 0 if ns < 600 * MS else 1
        writers[k].write_message(topic, schemas[k][topic], msg, log_time=ns, publish_time=ns)
    for w in writers:
        w.finish()
    info = {"version": 8, "storage_identifier": "mcap", "relative_file_paths": names}
    (directory / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": info}))
    return directory


# ----------------------------------------------------------------------------- running and judging
@dataclass
class Run:
    """What one entry point did with one input."""

    digest: str = ""  # of everything produced (empty on error)
    images: Any = None  # what a conversion wrote before encoding (see frames_written)
    error: BaseException | None = None
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # reasons of episodes left out


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def _capture() -> Iterator[_Collect]:
    handler = _Collect()
    logger = logging.getLogger("qvla")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def attempt(fn: Callable[[Run], str]) -> Run:
    """Run ``fn`` (it returns the digest), keeping the exception and the warnings logged."""
    run = Run()
    with _capture() as logged:
        try:
            run.digest = fn(run)
        except Exception as exc:  # the point: any kind is recorded and judged
            run.error = exc
    run.warnings = logged.lines
    return run


def same(a: Run, b: Run) -> bool:
    """Equal digests and equal camera frames."""
    if a.digest != b.digest:
        return False
    if a.images is None or b.images is None:
        return a.images is None and b.images is None
    return bool(a.images == b.images)


def judge(run: Run, pristine: Run, names: Sequence[str], expect_skip: Run | None = None) -> str:
    """The outcome of ``run`` against the pristine input's run; ``names``: file names an error or
    warning must mention (any of them); ``expect_skip``: the run of the input without the
    damaged part (a run that left it out must match it)."""

    def mentions(text: str) -> bool:
        return any(n in text for n in names)

    if run.error is not None:
        if not isinstance(run.error, QvlaError):
            return CRASH
        return ERROR if mentions(str(run.error)) else VAGUE
    if same(run, pristine):
        return WARNED if any(mentions(w) for w in run.warnings) else UNAFFECTED
    if run.skipped and expect_skip is not None and same(run, expect_skip):
        return SKIPPED if any(mentions(s) for s in run.skipped) else VAGUE
    if any(mentions(w) for w in run.warnings):
        return WARNED
    return SILENT


def _hash_arrays(h: Any, *arrays: Any) -> None:
    for a in arrays:
        arr = np.ascontiguousarray(np.asarray(a))
        h.update(str((arr.dtype, arr.shape)).encode())
        h.update(arr.tobytes())


def digest_dataset(root: Path, embodiment: Any, images: list[Any] | None = None) -> str:
    """Open ``root`` with the LeRobot reader and hash every sample, the episode rows and the stats
    (not the decoded camera frames where ``images`` is given: they are collected there)."""
    from qvla_core.data.dataset import LeRobotDataset

    ds = LeRobotDataset(root, embodiment)
    h = hashlib.sha256()
    for i in range(len(ds)):
        s = ds[i]
        _hash_arrays(h, s.observation.state, s.actions, s.action_is_pad)
        frames = [s.observation.images[c] for c in sorted(s.observation.images)]
        if images is None:
            _hash_arrays(h, *frames)
        else:
            images.append(np.stack(frames))
        h.update(f"{s.observation.instruction}|{s.episode_index}|{s.frame_index}".encode())
    for e in ds.episodes:
        ep = ds.episode(e)
        h.update(repr((ep.index, ep.tasks, ep.length, ep.success)).encode())
    h.update(repr(sorted(ds.stats.items())).encode())
    return h.hexdigest()


def training_digest(root: Path, embodiment: Any, work: Path) -> str:
    """What qvla-train does with a dataset before its first step: open it with a frame cache,
    check it against the robot YAML, compute the norm stats, build the training frame cache."""
    from qvla_core.data.dataset import LeRobotDataset
    from qvla_core.training.config import Data
    from qvla_core.training.datasets import DatasetSpec, check_source, frame_set
    from qvla_core.training.stats import norm_stats_from_source

    source = LeRobotDataset(root, embodiment, cache_dir=work / "reader-cache")
    spec = DatasetSpec(source, embodiment, str(root))
    check_source(spec)
    norm = norm_stats_from_source(source, embodiment, spec.label)
    size = (embodiment.cameras[0].height, embodiment.cameras[0].width)
    frames = frame_set(source, spec, source.episodes, size, Data(), work / "train-cache", "train", False)
    h = hashlib.sha256(norm.model_dump_json().encode())
    batch = frames.batch(list(range(len(frames))), 0)
    _hash_arrays(h, batch.images, batch.state, batch.actions, batch.action_is_pad, batch.episode, batch.frame)
    h.update("|".join(batch.instructions).encode())
    return h.hexdigest()


@contextmanager
def frames_written(hashes: list[str]) -> Iterator[None]:
    """Hash the camera frames each saved episode hands the dataset writer (before H.264: the same
    frames do not always encode to the same bytes on this machine, so decoded pixels of two
    conversions differ by a few levels), appended to ``hashes`` per episode."""
    from qvla_core.data.writer import DatasetWriter

    add, discard, save = DatasetWriter.add_frame, DatasetWriter.discard_episode, DatasetWriter.save_episode
    current = hashlib.sha256()

    def add_frame(self: Any, **kw: Any) -> None:
        add(self, **kw)
        _hash_arrays(current, *(kw["images"][c] for c in sorted(kw["images"])))

    def discard_episode(self: Any) -> None:
        nonlocal current
        discard(self)
        current = hashlib.sha256()

    def save_episode(self: Any, *args: Any, **kw: Any) -> int:
        nonlocal current
        index: int = save(self, *args, **kw)
        hashes.append(current.hexdigest())
        current = hashlib.sha256()
        return index

    patched = {"add_frame": add_frame, "discard_episode": discard_episode, "save_episode": save_episode}
    for name, fn in patched.items():
        setattr(DatasetWriter, name, fn)
    try:
        yield
    finally:
        for name, fn in (("add_frame", add), ("discard_episode", discard), ("save_episode", save)):
            setattr(DatasetWriter, name, fn)


def convert_digest(run: Run, bags: Sequence[Path], out: Path, *, skip_bad: bool, **kwargs: Any) -> str:
    """qvla-convert on ``bags`` into ``out``, then the digest of the dataset it wrote."""
    from qvla_core.data.convert import convert, robot_config_for
    from qvla_core.data.mcap_reader import find_bags

    found = find_bags(bags, skip_bad=skip_bad)
    hashes: list[str] = []
    with frames_written(hashes):
        report = convert(found, out, skip_bad=skip_bad, progress=False, **kwargs)
    run.skipped = [e.skipped for e in report.episodes if e.skipped]
    run.images = hashes
    config = robot_config_for([b for b in found if b.error is None], kwargs.get("robot_config"))
    return digest_dataset(out, config.embodiment, [])


def scratch(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"qvla-fuzz-{prefix}-"))


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst
