"""Systematic damage to a LeRobot v3.0 dataset: data parquet columns missing, wrong-typed, wrong
width, NaN/inf/null; parquet files empty or cut; videos cut, empty, shorter than the data, of the
wrong size; meta/ files with missing keys, wrong types, mismatched counts, tasks missing, stats
broken. Each :class:`Case` damages a copy of the dataset :func:`make_dataset` writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .synthetic_dataset import embodiment, frame_image, write_dataset

DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
TASKS = "meta/tasks.parquet"
INFO = "meta/info.json"
STATS = "meta/stats.json"
VIDEO = "videos/observation.images.cam_low/chunk-000/file-000.mp4"
STATE, ACTION = "observation.state", "action"
LENGTHS = (10, 12)


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    target: str  # the damaged file, relative to the dataset
    damage: Callable[[Path], None]  # applied to the dataset root
    names: tuple[str, ...] = ()

    def mentions(self) -> tuple[str, ...]:
        return (*self.names, self.target)


def make_dataset(root: Path) -> Path:
    return write_dataset(root, lengths=LENGTHS).root


def robot() -> Any:
    return embodiment(horizon=4)


# ----------------------------------------------------------------------------- parquet edits
def _table(change: Callable[[pa.Table], pa.Table], rel: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / rel
        pq.write_table(change(pq.read_table(path)), path)

    return damage


def _drop(column: str) -> Callable[[pa.Table], pa.Table]:
    return lambda t: t.drop_columns([column])


def _replace(column: str, values: Any, kind: Any = None) -> Callable[[pa.Table], pa.Table]:
    def change(t: pa.Table) -> pa.Table:
        new = values(t.column(column).to_pylist()) if callable(values) else values
        array = pa.array(new, type=kind) if kind is not None else pa.array(new)
        return t.set_column(t.schema.get_field_index(column), column, array)

    return change


def _set_cell(column: str, row: int, value: Any, kind: Any = None) -> Callable[[pa.Table], pa.Table]:
    def values(rows: list[Any]) -> list[Any]:
        rows = list(rows)
        if isinstance(value, tuple):  # (index in the vector, new value)
            vec = list(rows[row])
            vec[value[0]] = value[1]
            rows[row] = vec
        else:
            rows[row] = value
        return rows

    return _replace(column, values, kind)


def _cut(rel: str, keep: float | int) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        data = (root / rel).read_bytes()
        n = keep if isinstance(keep, int) else int(len(data) * keep)
        (root / rel).write_bytes(data[: n if n >= 0 else len(data) + n])

    return damage


def _write(rel: str, content: bytes) -> Callable[[Path], None]:
    return lambda root: (root / rel).write_bytes(content)


def _remove(rel: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).unlink()


def _json(rel: str, change: Callable[[Any], Any]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        data = json.loads((root / rel).read_text())
        result = change(data)  # a list replaces the whole file; other results (pop, update) do not
        (root / rel).write_text(json.dumps(result if isinstance(result, list) else data))

    return damage


def data_cases() -> list[Case]:
    kind = "parquet: data file"
    nan, inf = float("nan"), float("inf")
    f32 = pa.list_(pa.float32())
    cases = [
        Case(kind, f"column {c} missing", DATA, _table(_drop(c), DATA))
        for c in (STATE, ACTION, "timestamp", "frame_index", "episode_index", "index", "task_index")
    ]
    edits: list[tuple[str, Callable[[pa.Table], pa.Table]]] = [
        ("state as strings", _replace(STATE, lambda r: [json.dumps(v) for v in r])),
        ("state as lists of strings", _replace(STATE, lambda r: [[str(x) for x in v] for v in r])),
        ("action as one float per row", _replace(ACTION, lambda r: [v[0] for v in r])),
        ("state 13 wide", _replace(STATE, lambda r: [v[:13] for v in r], f32)),
        ("action 15 wide", _replace(ACTION, lambda r: [[*v, 0.0] for v in r], f32)),
        ("one action row 13 wide", _set_cell(ACTION, 3, [0.0] * 13, f32)),
        ("NaN in an action", _set_cell(ACTION, 4, (2, nan), f32)),
        ("+inf in an action", _set_cell(ACTION, 15, (0, inf), f32)),
        ("NaN in a state", _set_cell(STATE, 0, (13, nan), f32)),
        ("-inf in a state", _set_cell(STATE, 21, (5, -inf), f32)),
        ("a null action row", _set_cell(ACTION, 6, None, f32)),
        ("a null inside an action", _set_cell(ACTION, 7, (1, None), f32)),
        ("a null state row", _set_cell(STATE, 8, None, f32)),
        ("NaN timestamp", _set_cell("timestamp", 5, nan, pa.float32())),
        ("timestamps as strings", _replace("timestamp", lambda r: [str(v) for v in r])),
        ("a timestamp off the grid", _set_cell("timestamp", 5, 0.5, pa.float32())),
        ("a null index", _set_cell("index", 3, None, pa.int64())),
        ("index as floats", _replace("index", lambda r: [v + 0.5 for v in r])),
        ("an episode_index wrong", _set_cell("episode_index", 4, 1, pa.int64())),
        ("frame_index out of order", _set_cell("frame_index", 2, 7, pa.int64())),
        ("task_index unknown", _set_cell("task_index", 3, 9, pa.int64())),
        ("a null task_index", _set_cell("task_index", 3, None, pa.int64())),
        ("one row missing", lambda t: t.slice(0, t.num_rows - 1)),
        ("one row repeated", lambda t: pa.concat_tables([t, t.slice(t.num_rows - 1)])),
        ("no rows", lambda t: t.slice(0, 0)),
    ]
    cases += [Case(kind, name, DATA, _table(change, DATA)) for name, change in edits]
    files = "parquet: empty / cut / garbage file"
    for rel in (DATA, EPISODES, TASKS):
        short = rel.split("/")[-2] + "/" + rel.split("/")[-1]
        cases.append(Case(files, f"{short}: zero bytes", rel, _write(rel, b"")))
        cases.append(Case(files, f"{short}: garbage", rel, _write(rel, bytes(range(256)) * 4)))
        cases += [Case(files, f"{short}: cut to {k:.0%}", rel, _cut(rel, k)) for k in (0.1, 0.5, 0.9)]
        cases.append(Case(files, f"{short}: last byte cut", rel, _cut(rel, -1)))
    return cases


def _shift(v: str, episode: int, seconds: float) -> Callable[[pa.Table], pa.Table]:
    """Move an episode's span in the video file (from and to) by ``seconds``."""

    def move(r: list[float]) -> list[float]:
        return [x + seconds if i == episode else x for i, x in enumerate(r)]

    t = pa.float64()
    return lambda tb: _replace(f"{v}/from_timestamp", move, t)(_replace(f"{v}/to_timestamp", move, t)(tb))


def episodes_cases() -> list[Case]:
    kind = "parquet: meta/episodes"
    v = "videos/observation.images.cam_low"
    t = pa.float64()
    edits: list[tuple[str, Callable[[pa.Table], pa.Table]]] = [
        (f"column {c} missing", _drop(c))
        for c in ("episode_index", "length", "tasks", "data/file_index", "dataset_from_index",
                  f"{v}/from_timestamp")
    ]  # fmt: skip
    edits += [
        ("length as strings", _replace("length", lambda r: [str(x) for x in r])),
        ("a null length", _set_cell("length", 1, None, pa.int64())),
        ("a length one too long", _set_cell("length", 1, LENGTHS[1] + 1, pa.int64())),
        ("lengths and ranges shifted by one", lambda tb: _replace("dataset_from_index",
            lambda r: [r[0], r[1] - 1])(_replace("length", lambda r: [r[0] - 1, r[1] + 1])(tb))),
        ("episode 1 row missing", lambda tb: tb.slice(0, 1)),
        ("episode 0 row twice", lambda tb: pa.concat_tables([tb, tb.slice(0, 1)])),
        ("episode_index 1 -> 5", _set_cell("episode_index", 1, 5, pa.int64())),
        ("data/file_index -> 3 (no such file)", _set_cell("data/file_index", 1, 3, pa.int64())),
        ("video file_index -> 2 (no such file)", _set_cell(f"{v}/file_index", 1, 2, pa.int64())),
        ("video from/to of episode 1 one frame early", _shift(v, 1, -0.02)),
        ("video from/to of episode 0 one frame late", _shift(v, 0, 0.02)),
        ("video from_timestamp of episode 1 between frames", _set_cell(f"{v}/from_timestamp", 1, 0.205, t)),
        ("video from_timestamp NaN", _set_cell(f"{v}/from_timestamp", 1, float("nan"), t)),
        ("video to_timestamp beyond the video", _set_cell(f"{v}/to_timestamp", 1, 9.0, t)),
        ("tasks of episode 1 empty", _set_cell("tasks", 1, [], pa.list_(pa.string()))),
        ("tasks of episode 1 an unknown task", _set_cell("tasks", 1, ["fly away"], pa.list_(pa.string()))),
    ]  # fmt: skip
    return [Case(kind, name, EPISODES, _table(change, EPISODES), (DATA, INFO)) for name, change in edits]


def tasks_cases() -> list[Case]:
    kind = "meta/tasks.parquet (tasks missing)"
    s = pa.string()
    edits: list[tuple[str, Callable[[pa.Table], pa.Table]]] = [
        ("task 1 missing", lambda t: t.slice(0, 1)),
        ("task_index column missing", _drop("task_index")),
        ("task text column missing", _drop("task")),
        ("task text null", _set_cell("task", 0, None, s)),
        ("task_index repeated", _set_cell("task_index", 1, 0, pa.int64())),
        ("task_index as strings", _replace("task_index", lambda r: [str(x) for x in r])),
        ("task text empty", _set_cell("task", 0, "", s)),
    ]
    cases = [Case(kind, name, TASKS, _table(change, TASKS), (EPISODES, DATA)) for name, change in edits]
    return [*cases, Case(kind, "tasks.parquet deleted", TASKS, _remove(TASKS))]


def info_cases() -> list[Case]:
    kind = "meta/info.json"
    feat = "features"
    changes: list[tuple[str, Callable[[Any], Any]]] = [
        (f"key {k} missing", lambda d, k=k: d.pop(k))
        for k in ("codebase_version", "fps", "features", "total_episodes", "total_frames", "data_path",
                  "video_path", "chunks_size")
    ]  # fmt: skip
    changes += [
        (f"features.{k} missing", lambda d, k=k: d[feat].pop(k))
        for k in (STATE, ACTION, "observation.images.cam_low", "timestamp", "index")
    ]
    changes += [
        ("fps a string", lambda d: d.update(fps="50")),
        ("fps 0", lambda d: d.update(fps=0)),
        ("fps 30", lambda d: d.update(fps=30)),
        ("total_episodes 3", lambda d: d.update(total_episodes=3)),
        ("total_frames one short", lambda d: d.update(total_frames=sum(LENGTHS) - 1)),
        ("total_frames a string", lambda d: d.update(total_frames="22")),
        ("total_tasks 5", lambda d: d.update(total_tasks=5)),
        ("chunks_size a string", lambda d: d.update(chunks_size="many")),
        ("features a list", lambda d: d.update(features=list(d[feat]))),
        ("state shape [13]", lambda d: d[feat][STATE].update(shape=[13])),
        ("state shape strings", lambda d: d[feat][STATE].update(shape=["14"])),
        ("state shape [14, 1]", lambda d: d[feat][STATE].update(shape=[14, 1])),
        ("state names reordered", lambda d: d[feat][STATE].update(names=d[feat][STATE]["names"][::-1])),
        ("action dtype string", lambda d: d[feat][ACTION].update(dtype="string")),
        ("camera shape 96x128", lambda d: d[feat]["observation.images.cam_low"].update(shape=[96, 128, 3])),
        ("camera shape 2-d", lambda d: d[feat]["observation.images.cam_low"].update(shape=[48, 64])),
        (
            "data_path with an unknown placeholder",
            lambda d: d.update(data_path="data/{chunk}/{file}.parquet"),
        ),
        ("data_path with a bad format", lambda d: d.update(data_path="data/{chunk_index:03q}.parquet")),
        ("video_path with an unknown placeholder", lambda d: d.update(video_path="videos/{camera}/x.mp4")),
        ("codebase_version v2.1", lambda d: d.update(codebase_version="v2.1")),
        ("a list instead of a mapping", lambda d: [d]),
    ]
    cases = [Case(kind, name, INFO, _json(INFO, change)) for name, change in changes]
    cases += [
        Case(kind, "not JSON", INFO, _write(INFO, b"{fps: 50")),
        Case(kind, "zero bytes", INFO, _write(INFO, b"")),
        Case(kind, "deleted", INFO, _remove(INFO)),
        Case(
            kind,
            "half-written dataset (staging marker)",
            INFO,
            _write("QVLA_STAGING", b""),
            ("QVLA_STAGING",),
        ),
    ]
    return cases


def stats_cases() -> list[Case]:
    kind = "meta/stats.json"
    changes: list[tuple[str, Callable[[Any], Any]]] = [
        ("action q01 NaN", lambda d: d[ACTION]["q01"].__setitem__(0, float("nan"))),
        ("state q99 Infinity", lambda d: d[STATE]["q99"].__setitem__(3, float("inf"))),
        ("action q99 13 values", lambda d: d[ACTION]["q99"].pop()),
        ("state min strings", lambda d: d[STATE].update(min=[str(x) for x in d[STATE]["min"]])),
        ("action q01 above q99", lambda d: d[ACTION].update(q01=d[ACTION]["q99"], q99=d[ACTION]["q01"])),
        ("state stats from other data (x10)", lambda d: d.update({STATE: {k: (np.asarray(v) * 10).tolist()
                                                                          for k, v in d[STATE].items()}})),
        ("action q01 a number", lambda d: d[ACTION].update(q01=0.5)),
        ("action entry missing", lambda d: d.pop(ACTION)),
        ("a list instead of a mapping", lambda d: [d]),
    ]  # fmt: skip
    cases = [Case(kind, name, STATS, _json(STATS, change)) for name, change in changes]
    return [
        *cases,
        Case(kind, "not JSON", STATS, _write(STATS, b"{")),
        Case(kind, "zero bytes", STATS, _write(STATS, b"")),
        Case(kind, "deleted", STATS, _remove(STATS)),
    ]


def _reencode(frames: int, size: tuple[int, int] = (48, 64), fps: float = 50.0) -> Callable[[Path], None]:
    """Replace the cam_low video by one of ``frames`` frames of ``size``."""

    def damage(root: Path) -> None:
        from qvla_core.data.video import EpisodeEncoder, VideoSettings

        path = root / VIDEO
        enc = EpisodeEncoder(path.with_suffix(".tmp.mp4"), fps=fps, height=size[0], width=size[1],
                             settings=VideoSettings())  # fmt: skip
        for k in range(frames):
            enc.add(frame_image(0, k, 1, size))
        enc.close()
        path.with_suffix(".tmp.mp4").replace(path)

    return damage


def _faststart_cut(keep: float) -> Callable[[Path], None]:
    """The video re-muxed with its index first (as ffmpeg's +faststart writes it), then cut."""

    def damage(root: Path) -> None:
        import av

        path = root / VIDEO
        tmp = path.with_suffix(".fs.mp4")
        with av.open(str(path)) as src, av.open(str(tmp), "w", options={"movflags": "faststart"}) as dst:
            stream = dst.add_stream_from_template(src.streams.video[0])
            for packet in src.demux(src.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = stream
                    dst.mux(packet)
        data = tmp.read_bytes()
        tmp.unlink()
        path.write_bytes(data[: int(len(data) * keep)])

    return damage


def video_cases() -> list[Case]:
    kind = "video (MP4)"
    total = sum(LENGTHS)
    return [
        Case(kind, "zero bytes", VIDEO, _write(VIDEO, b"")),
        Case(kind, "deleted", VIDEO, _remove(VIDEO)),
        Case(kind, "garbage", VIDEO, _write(VIDEO, bytes(range(256)) * 16)),
        *(Case(kind, f"cut to {k:.0%}", VIDEO, _cut(VIDEO, k)) for k in (0.05, 0.5, 0.95)),
        Case(kind, "last byte cut", VIDEO, _cut(VIDEO, -1)),
        *(
            Case(kind, f"index first (faststart), cut to {k:.0%}", VIDEO, _faststart_cut(k))
            for k in (0.5, 0.9)
        ),
        Case(kind, f"{total - 1} frames for {total} data rows", VIDEO, _reencode(total - 1)),
        Case(kind, f"{LENGTHS[0]} frames (episode 1 missing)", VIDEO, _reencode(LENGTHS[0])),
        Case(kind, "96x128 instead of 48x64", VIDEO, _reencode(total, (96, 128))),
        Case(kind, "25 fps instead of 50", VIDEO, _reencode(total, fps=25.0)),
    ]


def all_cases(root: Path | None = None) -> list[Case]:
    return data_cases() + episodes_cases() + tasks_cases() + info_cases() + stats_cases() + video_cases()
