"""Recorded bags -> one LeRobot v3.0 dataset (``qvla-convert``).

Every episode of every bag is resampled onto the robot YAML's control-rate grid
(:mod:`qvla_core.data.resample`) and written with :class:`qvla_core.data.writer.DatasetWriter`, which
stages the dataset next to ``out`` and renames it into place only when everything was written: a
conversion that fails or is interrupted leaves no dataset at ``out``.

The robot YAML is the one given, or the one our recorder attached to the bags (they must agree).
Bad input stops the conversion with a :class:`~qvla_core.data.mcap_reader.RecordingError` naming the
bag, episode and topic, unless ``skip_bad`` is set: then that episode is left out and listed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qvla_core.data.mcap_reader import Bag, EpisodeSpan, RecordingError
from qvla_core.data.resample import EpisodeResampler, ResampleStats
from qvla_core.embodiment import parse_model
from qvla_core.errors import ConfigError
from qvla_core.robot_io import RobotConfig, recorded_topics


@dataclass
class EpisodeReport:
    source: str
    task: str
    success: bool | None
    frames: int = 0
    ticks: int = 0
    recorder_dropped: int = 0
    stats: ResampleStats = field(default_factory=ResampleStats)
    dataset_index: int | None = None
    skipped: str = ""  # why the episode is not in the dataset

    @property
    def frames_missing(self) -> int:
        """Control ticks of the episode without a frame (leading ticks before a complete observation)."""
        return self.ticks - self.frames if self.dataset_index is not None else 0


@dataclass
class ConversionReport:
    dataset: Path
    episodes: list[EpisodeReport]
    seconds: float = 0.0

    @property
    def written(self) -> list[EpisodeReport]:
        return [e for e in self.episodes if e.dataset_index is not None]

    @property
    def frames(self) -> int:
        return sum(e.frames for e in self.written)


def robot_config_for(bags: Sequence[Bag], path: Path | None) -> RobotConfig:
    """The robot YAML at ``path``, else the one the bags carry (all the same)."""
    from qvla_core.robot_io import load_robot_config

    if path is not None:
        return load_robot_config(path)
    if not bags:
        raise RecordingError("no bags to convert")
    texts = {b.robot_yaml for b in bags}
    if None in texts:
        missing = next(b.path for b in bags if b.robot_yaml is None)
        raise ConfigError(
            f"{missing} carries no robot YAML (not recorded by recorder_node): give --robot-config"
        )
    if len(texts) > 1:
        raise ConfigError("the bags were recorded with different robot YAMLs: give --robot-config")
    text = texts.pop()
    assert text is not None
    config: RobotConfig = parse_model(RobotConfig, yaml.safe_load(text), f"{bags[0].path}: robot.yaml")
    return config


def _episode_frames(
    bag: Bag, span: EpisodeSpan, config: RobotConfig, writer: Any, tick: Callable[[], None]
) -> tuple[int, EpisodeResampler]:
    start = span.start_ns if span.start_ns is not None else bag.first_ns
    stop = span.stop_ns if span.stop_ns is not None else bag.last_ns
    if start is None or stop is None or stop < start:
        raise RecordingError(f"{span.label}: empty episode (no messages)")
    resampler = EpisodeResampler(config, span.label, start, stop)
    frames = 0

    def write(frame: Any) -> None:
        nonlocal frames
        writer.add_frame(
            state=frame.state,
            action=frame.action,
            images=frame.images,
            timestamp=frame.index * resampler.dt_ns / 1e9,
        )
        frames += 1
        tick()

    # Messages from before the start are read too (the recorder's pre-roll): the first ticks observe
    # them; and from after the stop (its tail): messages stamped before the stop that arrived late.
    window = resampler.lookback_ns
    for message in bag.messages(resampler.topics, start - window, stop + window):
        resampler.add(message)
        for frame in resampler.ready(message.log_ns):
            write(frame)
    for frame in resampler.finish():
        write(frame)
    return frames, resampler


def _span_ticks(bag: Bag, span: EpisodeSpan, dt: float) -> int:
    start = span.start_ns if span.start_ns is not None else bag.first_ns or 0
    stop = span.stop_ns if span.stop_ns is not None else bag.last_ns or 0
    return max(0, int((stop - start) / 1e9 / dt) + 1)


def convert(
    bags: Sequence[Bag],
    out: Path,
    *,
    robot_config: Path | None = None,
    task: str | None = None,
    only_success: bool = False,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Write every (selected) episode of ``bags`` into a LeRobot v3.0 dataset at ``out``."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    from qvla_core.data.writer import DatasetWriter

    t0 = time.monotonic()
    broken = [bag for bag in bags if bag.error is not None]  # find_bags(skip_bad=True) kept them
    if broken and not skip_bad:
        raise broken[0].error  # type: ignore[misc]
    readable = [bag for bag in bags if bag.error is None]
    if not readable and broken:
        raise RecordingError(f"no bag could be read: {'; '.join(str(b.error) for b in broken)}")
    config = robot_config_for(readable, robot_config)
    expected = recorded_topics(config)
    emb = config.embodiment
    spans = [(bag, span) for bag in readable for span in bag.episodes(task)]
    missing_task = [s.label for _, s in spans if not s.task]
    if missing_task:
        raise RecordingError(f"no task text for {missing_task[:3]} (plain ros2 bags): give --task")
    dt = 1.0 / emb.control_rate_hz
    total = sum(_span_ticks(b, s, dt) for b, s in spans)
    reports = [EpisodeReport(str(b.path), "", None, skipped=str(b.error)) for b in broken]
    with (
        DatasetWriter.for_embodiment(out, emb, overwrite=overwrite) as writer,
        tqdm(total=total, unit="frame", desc="qvla-convert", disable=not progress) as bar,
    ):
        for bag, span in spans:
            report = EpisodeReport(
                span.label, span.task or "", span.success, recorder_dropped=span.recorder_dropped
            )
            reports.append(report)
            if only_success and span.success is False:
                report.skipped = "not successful"
                continue
            try:
                bag.check_types(expected)
                report.frames, resampler = _episode_frames(bag, span, config, writer, lambda: bar.update(1))
            except RecordingError as exc:
                writer.discard_episode()
                if not skip_bad:
                    raise
                report.skipped, report.frames = str(exc), 0
                continue
            report.ticks, report.stats = resampler.ticks, resampler.stats
            report.dataset_index = writer.save_episode(
                report.task,
                success=span.success,
                metadata={
                    "source": span.label,
                    "leading_ticks_skipped": resampler.stats.leading_ticks_skipped,
                },
            )
        if not any(r.dataset_index is not None for r in reports):
            reasons = "; ".join(f"{r.source}: {r.skipped}" for r in reports)
            raise RecordingError(
                f"no episode to write ({len(reports)} in the input, all left out: {reasons})"
            )
        path = writer.finalize()
    return ConversionReport(path, reports, time.monotonic() - t0)


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def summary(report: ConversionReport) -> str:
    """A Markdown table: one row per episode, then the totals."""
    rows = [
        "| episode | source | task | success | frames | leading ticks skipped | recorder drops | "
        "out-of-order msgs | trajectories rejected | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in report.episodes:
        index = "-" if e.dataset_index is None else str(e.dataset_index)
        ok = {True: "yes", False: "no", None: "?"}[e.success]
        rows.append(
            f"| {index} | {e.source} | {e.task} | {ok} | {e.frames} | {e.stats.leading_ticks_skipped} | "
            f"{e.recorder_dropped} | {e.stats.messages_out_of_order} | {e.stats.trajectories_rejected} | "
            f"{('skipped: ' + e.skipped) if e.skipped else ''} |"
        )
    written = report.written
    dropped = sum(e.recorder_dropped + e.frames_missing for e in written)
    rows.append(
        f"\n{len(written)} of {len(report.episodes)} episodes, {report.frames} frames, {dropped} frames or "
        f"messages dropped (recorder drops + ticks without a frame), {dir_size(report.dataset) / 1e6:.1f} MB "
        f"at {report.dataset}, {report.seconds:.1f} s"
    )
    return "\n".join(rows)
