"""Camera streams as MP4 (H.264 through PyAV's bundled FFmpeg), the way LeRobot stores them.

Writing: each episode is encoded into its own small MP4 while its frames arrive
(:class:`EpisodeEncoder`; nothing is held in memory), and when the episode is saved its packets are
copied, not re-encoded, onto the end of the camera's current multi-episode file
(:class:`VideoFileWriter`), shifted by the frames already there. This is what LeRobot's
writer does (encode per episode, then concatenate with stream copy); a discarded episode is just a
deleted file.

Frame ``k`` of a file has the presentation time ``k / fps`` exactly, so an episode's frames are the
times ``from_timestamp + frame_index / fps`` (how LeRobot's readers, torchcodec included, find them).

Reading: :func:`probe` reads the stream header (size, codec, rate, frame count) without decoding,
:func:`decode` yields RGB frames of a frame range (seeking to the keyframe before it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from qvla_core.data.format import DatasetError

ImageArray = npt.NDArray[np.uint8]

# libav logs every encoder summary at INFO; the writer reports what matters itself.
logging.getLogger("libav").setLevel(logging.ERROR)


@dataclass(frozen=True)
class VideoSettings:
    """How camera streams are encoded.

    codec: an FFmpeg encoder PyAV offers (``libx264`` is bundled with PyAV's wheels; LeRobot's
        readers decode H.264 everywhere, AV1 needs a newer FFmpeg than many distributions ship).
    crf: constant-rate factor (lower = better quality, bigger files); 23 is x264's default.
    gop: frames between keyframes. 2 (LeRobot's default) keeps random access cheap for readers
        that seek per frame (LeRobot's); ours decodes whole episodes. ~30% bigger files than 10.
    preset: x264 speed preset; ``veryfast`` encoded a 640x480 frame in ~12 ms on this machine.
    """

    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    crf: int = 23
    gop: int = 2
    preset: str = "veryfast"

    def options(self) -> dict[str, str]:
        # bf=0: no B-frames, so decode order is presentation order and every episode file starts
        # at dts 0 (packets of appended episodes never reorder across the seam).
        opts = {"g": str(self.gop), "crf": str(self.crf), "bf": "0"}
        if self.codec.startswith("libx26"):
            opts["preset"] = self.preset
        return opts


def rate(fps: float) -> Fraction:
    """fps as the exact fraction the streams use (29.97 -> 2997/100)."""
    return Fraction(fps).limit_denominator(1001000)


class EpisodeEncoder:
    """Encodes one episode of one camera into ``path`` as frames arrive."""

    def __init__(self, path: Path, *, fps: float, height: int, width: int, settings: VideoSettings) -> None:
        self.path = path
        self.height, self.width = height, width
        self.frames = 0
        self._rate = rate(fps)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._container = av.open(str(path), mode="w", format="mp4")
            stream = self._container.add_stream(settings.codec, rate=self._rate, options=settings.options())
        except (av.FFmpegError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot open a {settings.codec} encoder: {exc}") from exc
        if not isinstance(stream, av.VideoStream):
            raise DatasetError(f"{path}: {settings.codec} is not a video encoder")
        self._stream: av.VideoStream = stream
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = settings.pix_fmt
        self._stream.codec_context.time_base = 1 / self._rate

    def add(self, image: ImageArray) -> None:
        """Encode one (height, width, 3) uint8 RGB frame."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frames
        frame.time_base = 1 / self._rate
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> int:
        """Flush the encoder and close the file; returns the number of frames written."""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self.frames

    def abort(self) -> None:
        """Close without caring about the result (the file is about to be deleted)."""
        with contextlib.suppress(av.FFmpegError, OSError):
            self._container.close()


class VideoFileWriter:
    """One multi-episode MP4 of one camera: episodes are appended by stream copy."""

    def __init__(self, path: Path, *, fps: float) -> None:
        self.path = path
        self.fps = float(fps)
        self.frames = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), mode="w", format="mp4")
        self._stream: Any = None

    def append(self, episode_file: Path, frames: int) -> tuple[float, float]:
        """Copy an encoded episode onto the end; returns its (from_timestamp, to_timestamp) [s]."""
        start = self.frames
        with av.open(str(episode_file)) as source:
            src = source.streams.video[0]
            if self._stream is None:
                self._stream = self._container.add_stream_from_template(src)
            assert src.time_base is not None
            offset = round(Fraction(start) / rate(self.fps) / src.time_base)
            for packet in source.demux(src):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                assert packet.pts is not None
                packet.pts += offset
                packet.dts += offset
                packet.stream = self._stream
                self._container.mux(packet)
        self.frames += frames
        return start / self.fps, self.frames / self.fps

    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> None:
        self._container.close()


def video_info(path: Path, settings: VideoSettings | None = None) -> dict[str, Any]:
    """The ``info`` block of a video feature, as LeRobot records it (read from the file)."""
    p = probe(path)
    info: dict[str, Any] = {
        "video.height": p.height,
        "video.width": p.width,
        "video.codec": p.codec,
        "video.pix_fmt": p.pix_fmt,
        "video.is_depth_map": False,
        "video.fps": int(p.fps) if float(p.fps).is_integer() else p.fps,
        "video.channels": 3,
        "has_audio": False,
    }
    if settings is not None:
        info["video.crf"] = settings.crf
        info["video.g"] = settings.gop
    return info


@dataclass(frozen=True)
class VideoProbe:
    """What a video file's header says."""

    path: Path
    width: int
    height: int
    codec: str
    pix_fmt: str
    fps: float
    frames: int


def _open(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: missing video file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise DatasetError(f"{path}: not a readable video: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise DatasetError(f"{path}: no video stream")
    return container


def check_boxes(path: Path) -> None:
    """An MP4 whose top-level boxes run past the end of the file was cut short. The header alone
    does not show it when the index (``moov``) comes first (ffmpeg's ``+faststart``): it promises
    frames whose data is gone. Reads only the box headers (a few bytes per box)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8 or head[4:8] != b"ftyp":
            return  # not ISO BMFF (or too short to be): PyAV judges it
        pos = 0
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            length, kind = int.from_bytes(head[:4], "big"), head[4:8].decode("latin-1")
            if length == 1 and len(head) == 16:
                length = int.from_bytes(head[8:16], "big")
            elif length == 0:  # the box runs to the end of the file
                return
            if length < 8:
                raise DatasetError(f"{path}: corrupt MP4: box {kind!r} at byte {pos} has length {length}")
            if pos + length > size:
                raise DatasetError(
                    f"{path}: truncated: the MP4 box {kind!r} at byte {pos} needs {length} bytes, the file "
                    f"ends after {size - pos}; re-encode or re-convert the dataset"
                )
            pos += length


def probe(path: Path) -> VideoProbe:
    """Size, codec, frame rate and frame count from the header (no decoding); a file cut short
    (see :func:`check_boxes`) is an error."""
    if path.is_file():
        check_boxes(path)
    with _open(path) as container:
        s = container.streams.video[0]
        fps = float(s.average_rate or s.base_rate or 0)
        frames = int(s.frames)
        if frames == 0 and s.duration is not None and s.time_base is not None:
            frames = round(float(s.duration * s.time_base) * fps)
        return VideoProbe(
            path=path,
            width=int(s.codec_context.width),
            height=int(s.codec_context.height),
            codec=str(s.codec_context.codec.canonical_name),
            pix_fmt=str(s.codec_context.pix_fmt),
            fps=fps,
            frames=frames,
        )


def decode(path: Path, fps: float, start: int = 0, stop: int | None = None) -> Iterator[ImageArray]:
    """RGB (H, W, 3) uint8 frames ``start`` .. ``stop - 1`` of ``path`` (frame k is at ``k / fps``).

    Raises DatasetError when the file ends before ``stop`` or has a hole in its frame times.
    """
    with _open(path) as container:
        s = container.streams.video[0]
        s.thread_type = "AUTO"
        if start > 0 and s.time_base is not None:
            container.seek(round(Fraction(start) / rate(fps) / s.time_base), stream=s, backward=True)
        expected = start
        try:
            for frame in container.decode(s):
                index = round(float(frame.time or 0.0) * fps)
                if index < expected:
                    continue  # between the keyframe we seeked to and the first frame wanted
                if index != expected:
                    raise DatasetError(
                        f"{path}: frame {expected} missing (next frame in the file is {index} "
                        f"at {frame.time:.4f} s); the video has holes"
                    )
                if stop is not None and index >= stop:
                    return
                yield frame.to_ndarray(format="rgb24")
                expected += 1
        except av.FFmpegError as exc:
            raise DatasetError(f"{path}: cannot decode frame {expected}: {exc}") from exc
        if stop is not None and expected < stop:
            raise DatasetError(
                f"{path}: has {expected} frames but {stop} are needed (the video is shorter than the data)"
            )


def check_frame(image: Any, camera: str, size: tuple[int, int], where: str) -> ImageArray:
    """An image a camera delivered, checked: uint8 RGB of the camera's (height, width)."""
    if not isinstance(image, np.ndarray):
        raise DatasetError(f"{where}: camera {camera}: expected a numpy image (got {type(image).__name__})")
    if image.dtype != np.uint8 or image.shape != (*size, 3):
        raise DatasetError(
            f"{where}: camera {camera}: expected uint8 {(*size, 3)} (height, width, RGB), "
            f"got {image.dtype} {image.shape}"
        )
    return image
