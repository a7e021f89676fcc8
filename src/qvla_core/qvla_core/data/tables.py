"""A v3.0 dataset's parquet tables (tasks, episodes, frames): read and checked against info.json,
and the metadata tables written.

Every problem is a :class:`~qvla_core.data.format.DatasetError` naming the file, the column or
key, and the episode.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from qvla_core.data import format as fmt
from qvla_core.data.format import DatasetError, Info


def parquet_columns(path: Path) -> list[str]:
    """The column names of a parquet file (its footer); a missing or corrupt file is a DatasetError."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable parquet file ({exc})") from exc


def read_parquet(path: Path, columns: Sequence[str] | None = None) -> Any:
    """A parquet file (or some of its columns) as a pyarrow table, or a DatasetError naming it."""
    names = parquet_columns(path)
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing} (has {names})")
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable parquet file ({exc})") from exc


def read_tasks(root: Path) -> dict[int, str]:
    """task_index -> task text. LeRobot keeps the text as the pandas index of ``tasks.parquet``
    (a column named ``task`` or ``__index_level_0__``)."""
    path = root / fmt.TASKS_PATH
    table = read_parquet(path)
    if "task_index" not in table.column_names:
        raise DatasetError(f"{path}: missing column 'task_index' (has {table.column_names})")
    text_columns = [
        name
        for name in table.column_names
        if name != "task_index"
        and (
            pa.types.is_string(table.schema.field(name).type)
            or pa.types.is_large_string(table.schema.field(name).type)
        )
    ]
    preferred = [c for c in ("task", "__index_level_0__") if c in text_columns] or text_columns
    if not preferred:
        raise DatasetError(f"{path}: no column with the task text (has {table.column_names})")
    indexes = table.column("task_index").to_pylist()
    texts = table.column(preferred[0]).to_pylist()
    tasks: dict[int, str] = {}
    for index, text in zip(indexes, texts, strict=True):
        if not isinstance(index, int) or not isinstance(text, str) or index in tasks:
            raise DatasetError(f"{path}: bad or repeated task_index {index!r} (task {text!r})")
        tasks[index] = text
    return tasks


@dataclass(frozen=True)
class VideoSpan:
    """Where one episode's frames of one camera are: a file and the seconds within it."""

    chunk: int
    file: int
    from_timestamp: float
    to_timestamp: float


@dataclass(frozen=True)
class Episode:
    """One row of ``meta/episodes``."""

    index: int
    tasks: tuple[str, ...]
    length: int
    data_file: tuple[int, int]
    from_index: int
    to_index: int
    videos: dict[str, VideoSpan]
    success: bool | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None  # the meta/episodes file that holds this row


def _cell(where: str, row: dict[str, Any], column: str, kind: type[int] | type[float]) -> Any:
    """One value of an episode row as ``kind``: a null, a string or a non-finite number is an error."""
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise DatasetError(f"{where}: column {column}: expected a number, got {value!r}")
    if kind is int and value != int(value):
        raise DatasetError(f"{where}: column {column}: expected an integer, got {value!r}")
    return kind(value)


def _episode(path: Path, row: dict[str, Any], video_keys: Sequence[str]) -> Episode:
    where = f"{path}: episode {row.get('episode_index')}"
    videos = {}
    for key in video_keys:
        p = f"videos/{key}"
        videos[key] = VideoSpan(
            _cell(where, row, f"{p}/chunk_index", int),
            _cell(where, row, f"{p}/file_index", int),
            _cell(where, row, f"{p}/from_timestamp", float),
            _cell(where, row, f"{p}/to_timestamp", float),
        )
    meta_text = row.get("qvla/metadata")
    try:
        metadata = json.loads(meta_text) if isinstance(meta_text, str) else {}
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: qvla/metadata is not JSON ({exc})") from exc
    tasks = row.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise DatasetError(f"{where}: column tasks: expected a non-empty list of task texts, got {tasks!r}")
    success = row.get("qvla/success")
    episode = Episode(
        index=_cell(where, row, "episode_index", int),
        tasks=tuple(tasks),
        length=_cell(where, row, "length", int),
        data_file=(_cell(where, row, "data/chunk_index", int), _cell(where, row, "data/file_index", int)),
        from_index=_cell(where, row, "dataset_from_index", int),
        to_index=_cell(where, row, "dataset_to_index", int),
        videos=videos,
        success=success if isinstance(success, bool) else None,
        metadata=metadata if isinstance(metadata, dict) else {},
        source=path,
    )
    if episode.length <= 0:
        raise DatasetError(f"{where}: length {episode.length} (an empty episode)")
    if episode.to_index - episode.from_index != episode.length:
        raise DatasetError(
            f"{where}: dataset_from_index..dataset_to_index = {episode.from_index}..{episode.to_index} "
            f"does not span its length {episode.length}"
        )
    return episode


def read_episodes(root: Path, video_keys: Sequence[str]) -> list[Episode]:
    """All episode rows, in episode order (every ``meta/episodes/chunk-*/file-*.parquet``)."""
    paths = sorted((root / fmt.EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not paths:
        raise DatasetError(f"{root / fmt.EPISODES_DIR}: no episodes parquet file")
    needed = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index"]
    needed += ["dataset_from_index", "dataset_to_index"]
    for key in video_keys:
        needed += [
            f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
        ]
    episodes: dict[int, Episode] = {}
    for path in paths:
        optional = [c for c in ("qvla/success", "qvla/metadata") if c in parquet_columns(path)]
        table = read_parquet(path, [*needed, *optional])
        for row in table.to_pylist():
            ep = _episode(path, row, video_keys)
            if ep.index in episodes:
                raise DatasetError(f"{path}: episode {ep.index} appears twice in meta/episodes")
            episodes[ep.index] = ep
    return [episodes[i] for i in sorted(episodes)]


@dataclass
class Frames:
    """The per-frame columns of all episodes, in ``index`` order."""

    state: npt.NDArray[np.float32] | None  # (N, n_state)
    action: npt.NDArray[np.float32]  # (N, n_action)
    timestamp: npt.NDArray[np.float64]
    frame_index: npt.NDArray[np.int64]
    episode_index: npt.NDArray[np.int64]
    index: npt.NDArray[np.int64]
    task_index: npt.NDArray[np.int64]


def _vectors(column: Any, path: Path, info: Info, key: str) -> npt.NDArray[np.float32]:
    """A list column as (rows, width) floats, its width checked against info.json's shape."""
    (width,) = info.shape(key)
    chunked = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    kind = chunked.type
    if not (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise DatasetError(f"{path}: column {key}: expected a list of numbers per row (got {kind})")
    value_type = kind.value_type
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise DatasetError(f"{path}: column {key}: expected numbers in each row's list (got {kind})")
    if chunked.null_count or chunked.flatten().null_count:
        row = (
            int(np.flatnonzero(chunked.is_null().to_numpy(zero_copy_only=False))[0])
            if chunked.null_count
            else None
        )
        where = f"row {row} is null" if row is not None else "a row holds a null value"
        raise DatasetError(f"{path}: column {key}: {where} (every frame needs all {width} values)")
    if pa.types.is_fixed_size_list(kind):
        got = kind.list_size
    else:
        lengths = np.unique(chunked.value_lengths().to_numpy(zero_copy_only=False))
        if len(lengths) > 1:
            raise DatasetError(f"{path}: column {key}: rows have different lengths {lengths.tolist()}")
        got = int(lengths[0]) if len(lengths) else width
    if got != width:
        raise DatasetError(
            f"{info.where(key)}.shape: says [{width}] but {path} has {got} values per row in column {key}"
        )
    values: npt.NDArray[np.float32] = chunked.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(len(chunked), width)


def _scalars(column: Any, path: Path, key: str) -> npt.NDArray[Any]:
    """A bookkeeping column: integers (timestamps: finite numbers), no nulls."""
    kind = column.type
    numeric = pa.types.is_integer(kind) or (key == "timestamp" and pa.types.is_floating(kind))
    if not numeric:
        want = "numbers" if key == "timestamp" else "integers"
        raise DatasetError(f"{path}: column {key}: expected {want} (got {kind})")
    if column.null_count:
        raise DatasetError(f"{path}: column {key}: {column.null_count} null value(s)")
    values: npt.NDArray[Any] = column.to_numpy()
    if key == "timestamp" and not np.all(np.isfinite(values)):
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise DatasetError(f"{path}: column timestamp: row {row} is {values[row]}")
    return values


def read_frames(root: Path, info: Info, episodes: Sequence[Episode], with_state: bool) -> Frames:
    """The frame rows of ``episodes`` from their data files, checked against the episode rows."""
    files = sorted({ep.data_file for ep in episodes})
    columns = [fmt.ACTION_KEY, "timestamp", "frame_index", "episode_index", "index", "task_index"]
    if with_state:
        columns.insert(0, fmt.STATE_KEY)
    parts: dict[str, list[npt.NDArray[Any]]] = {c: [] for c in columns}
    for chunk, file in files:
        path = root / info.data_path.format(chunk_index=chunk, file_index=file)
        table = read_parquet(path, columns)
        held = [ep for ep in episodes if ep.data_file == (chunk, file)]
        if table.num_rows != sum(ep.length for ep in held):
            raise DatasetError(
                f"{path}: has {table.num_rows} rows, but meta/episodes puts {sum(ep.length for ep in held)} "
                f"frames of episodes {[ep.index for ep in held]} in it"
            )
        for key in columns:
            col = table.column(key)
            if key in (fmt.STATE_KEY, fmt.ACTION_KEY):
                parts[key].append(_vectors(col, path, info, key))
            else:
                parts[key].append(_scalars(col, path, key))
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    order = np.argsort(joined["index"], kind="stable")
    joined = {k: v[order] for k, v in joined.items()}
    return Frames(
        state=joined[fmt.STATE_KEY] if with_state else None,
        action=joined[fmt.ACTION_KEY],
        timestamp=joined["timestamp"].astype(np.float64),
        frame_index=joined["frame_index"].astype(np.int64),
        episode_index=joined["episode_index"].astype(np.int64),
        index=joined["index"].astype(np.int64),
        task_index=joined["task_index"].astype(np.int64),
    )


def episode_rows(frames: Frames, episode: Episode, data_file: Path) -> slice:
    """The rows of ``frames`` that hold ``episode``, checked (count, global index, frame index)."""
    lo = int(np.searchsorted(frames.index, episode.from_index))
    hi = int(np.searchsorted(frames.index, episode.to_index))
    where = f"{data_file}: episode {episode.index}"
    if hi - lo != episode.length:
        raise DatasetError(
            f"{where}: meta/episodes says {episode.length} frames (index {episode.from_index}.."
            f"{episode.to_index - 1}) but the data file has {hi - lo} rows in that range"
        )
    rows = slice(lo, hi)
    if not np.all(frames.episode_index[rows] == episode.index):
        raise DatasetError(
            f"{where}: rows {episode.from_index}..{episode.to_index - 1} belong to other episodes"
        )
    if not np.array_equal(frames.frame_index[rows], np.arange(episode.length)):
        raise DatasetError(f"{where}: frame_index is not 0..{episode.length - 1} in order")
    return rows


def write_tasks(root: Path, tasks: Sequence[str]) -> None:
    """``meta/tasks.parquet``: task_index and the task text, the text as the pandas index (what
    LeRobot's reader, which loads the file with pandas, looks tasks up by)."""
    table = pa.table(
        {"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(list(tasks), pa.string())}
    )
    column = {"pandas_type": "int64", "numpy_type": "int64", "metadata": None}
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", **column},
            {
                "name": "task",
                "field_name": "task",
                **column,
                "pandas_type": "unicode",
                "numpy_type": "object",
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    path = root / fmt.TASKS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), path)


def write_episodes(root: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``meta/episodes/chunk-000/file-000.parquet`` from episode rows (``qvla/success`` typed bool
    even when every value is null)."""
    table = pa.Table.from_pylist(list(rows))
    if "qvla/success" in table.column_names:
        success = pa.array([r.get("qvla/success") for r in rows], type=pa.bool_())
        table = table.set_column(table.schema.get_field_index("qvla/success"), "qvla/success", success)
    path = root / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
