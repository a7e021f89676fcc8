"""The one place where ROS messages meet qvla_core's numpy world.

Everything else in qvla_ros handles core objects; only this module knows
message field names.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
from nav_msgs.msg import Path
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import ColorRGBA, Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import Marker, MarkerArray

from qvla_core.policy import ActionChunk
from qvla_core.runtime.images import decode_compressed, decode_raw
from qvla_msgs.msg import ActionChunk as ActionChunkMsg

try:  # ROS 2 cv_bridge on a full distribution; absent from PyPI (see README)
    from cv_bridge import CvBridge as _CvBridge

    _BRIDGE: _CvBridge | None = _CvBridge()
except Exception:
    _BRIDGE = None


def to_sec(stamp: Time) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def to_time(seconds: float) -> Time:
    sec = math.floor(seconds)
    nanosec = min(round((seconds - sec) * 1e9), 999_999_999)
    return Time(sec=int(sec), nanosec=int(nanosec))


def to_duration(seconds: float) -> Duration:
    sec = math.floor(seconds)
    return Duration(sec=int(sec), nanosec=min(round((seconds - sec) * 1e9), 999_999_999))


def image_to_rgb(msg: Image | CompressedImage | WireImage | WireCompressedImage) -> np.ndarray:
    """Decode a camera message to (H, W, 3) uint8 RGB; raises ObservationError on bad data."""
    if isinstance(msg, (CompressedImage, WireCompressedImage)):
        return decode_compressed(msg.format, bytes(msg.data))
    if isinstance(msg, WireImage):
        return decode_raw(
            msg.encoding, msg.height, msg.width, msg.step, msg.data, is_bigendian=bool(msg.is_bigendian)
        )
    if _BRIDGE is not None and msg.encoding in ("rgb8", "bgr8", "mono8", "rgba8", "bgra8"):
        # Let the numpy path validate sizes first: cv_bridge's errors are less clear.
        decode_raw(
            msg.encoding, msg.height, msg.width, msg.step, msg.data, is_bigendian=bool(msg.is_bigendian)
        )
        return np.asarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    return decode_raw(
        msg.encoding, msg.height, msg.width, msg.step, msg.data, is_bigendian=bool(msg.is_bigendian)
    )


# ---------------------------------------------------------------- camera messages straight from the wire
# rclpy's deserialisation copies an image's pixels into an array.array one element at a time: 1.5 ms
# for a 640x480 rgb8 frame, four of them per observation on the executor thread, in the path of
# every chunk. A raw subscription hands us the CDR bytes instead; the two camera layouts are short
# and fixed (OMG CDR, little- or big-endian), so we read the fields and leave the pixels where they
# are (a memoryview: no copy). rosbags has a general CDR reader, but it is a bag-file toolkit with
# four more dependencies and costs 0.28 ms per frame; this reader is tested against rclpy's own
# serializer. Anything it cannot read goes through rclpy's deserialisation as before.


@dataclass(frozen=True)
class WireImage:
    """A sensor_msgs/Image read from its serialized bytes; ``data`` is a view into them."""

    stamp: float
    frame_id: str
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


@dataclass(frozen=True)
class WireCompressedImage:
    stamp: float
    frame_id: str
    format: str
    data: memoryview


class _CdrReader:
    def __init__(self, raw: bytes) -> None:
        if len(raw) < 4 or raw[0] != 0 or raw[1] not in (0, 1):
            raise ValueError("not a plain CDR message (unknown encapsulation)")
        self.buf = memoryview(raw)
        self.order = "<" if raw[1] == 1 else ">"
        self.pos = 4  # alignment counts from after the encapsulation header

    def _align(self, n: int) -> None:
        self.pos += (-(self.pos - 4)) % n

    def uint32(self) -> int:
        self._align(4)
        if self.pos + 4 > len(self.buf):
            raise ValueError("truncated CDR message")
        (value,) = struct.unpack_from(self.order + "I", self.buf, self.pos)
        self.pos += 4
        return int(value)

    def int32(self) -> int:
        value = self.uint32()
        return value - (1 << 32) if value >= 1 << 31 else value

    def uint8(self) -> int:
        if self.pos >= len(self.buf):
            raise ValueError("truncated CDR message")
        self.pos += 1
        return int(self.buf[self.pos - 1])

    def octets(self) -> memoryview:
        n = self.uint32()
        if self.pos + n > len(self.buf):
            raise ValueError(f"truncated CDR message: {n} bytes announced, {len(self.buf) - self.pos} left")
        view = self.buf[self.pos : self.pos + n]
        self.pos += n
        return view

    def string(self) -> str:
        raw = self.octets()
        return bytes(raw[:-1] if raw and raw[-1] == 0 else raw).decode("utf-8", errors="replace")

    def stamp(self) -> float:
        sec = self.int32()
        return sec + self.uint32() * 1e-9


def image_from_cdr(raw: bytes) -> WireImage:
    """A serialized sensor_msgs/Image; raises ValueError if the bytes are not one."""
    r = _CdrReader(raw)
    stamp, frame_id = r.stamp(), r.string()
    height, width = r.uint32(), r.uint32()
    encoding = r.string()
    is_bigendian = r.uint8()
    step = r.uint32()
    return WireImage(stamp, frame_id, height, width, encoding, is_bigendian, step, r.octets())


def compressed_image_from_cdr(raw: bytes) -> WireCompressedImage:
    """A serialized sensor_msgs/CompressedImage; raises ValueError if the bytes are not one."""
    r = _CdrReader(raw)
    stamp, frame_id = r.stamp(), r.string()
    fmt = r.string()
    return WireCompressedImage(stamp, frame_id, fmt, r.octets())


def camera_message_from_cdr(
    raw: bytes, compressed: bool
) -> tuple[float, WireImage | WireCompressedImage | Image | CompressedImage]:
    """(header stamp [s], message) of a serialized camera message from a raw subscription: the
    zero-copy reader first, rclpy's deserialisation when it cannot read the bytes. Raises ValueError
    when neither can."""
    try:
        wire = compressed_image_from_cdr(raw) if compressed else image_from_cdr(raw)
        return wire.stamp, wire
    except ValueError:
        pass
    try:
        msg = deserialize_message(raw, CompressedImage if compressed else Image)
    except Exception as exc:
        raise ValueError(f"cannot deserialize the camera message ({type(exc).__name__}: {exc})") from exc
    return to_sec(msg.header.stamp), msg


def rgb_to_image(rgb: np.ndarray, stamp: float, frame_id: str) -> Image:
    h, w = rgb.shape[:2]
    msg = Image(header=Header(stamp=to_time(stamp), frame_id=frame_id), height=h, width=w)
    msg.encoding = "rgb8"
    msg.step = w * 3
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


def joint_trajectory(
    joint_names: Sequence[str], start_stamp: float, positions: np.ndarray, dt: float
) -> JointTrajectory:
    """A trajectory whose point k is due at start_stamp + k*dt (header.stamp = first point's time)."""
    traj = JointTrajectory(header=Header(stamp=to_time(start_stamp)), joint_names=list(joint_names))
    rows = np.asarray(positions, dtype=np.float64)
    traj.points = [
        JointTrajectoryPoint(positions=rows[k].tolist(), time_from_start=to_duration(k * dt))
        for k in range(rows.shape[0])
    ]
    return traj


class _CdrWriter:
    """Little-endian plain CDR, the encapsulation rclpy/FastDDS use for ROS 2 messages."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x00\x01\x00\x00")

    def _align(self, n: int) -> None:
        self.out += b"\x00" * ((-(len(self.out) - 4)) % n)

    def uint32(self, value: int) -> None:
        self._align(4)
        self.out += struct.pack("<I", value)

    def time(self, sec: int, nanosec: int) -> None:
        self._align(4)
        self.out += struct.pack("<iI", sec, nanosec)

    def string(self, text: str) -> None:
        data = text.encode() + b"\x00"
        self.uint32(len(data))
        self.out += data


def joint_trajectory_cdr(
    joint_names: Sequence[str], start_stamp: float, positions: np.ndarray, dt: float
) -> bytes:
    """:func:`joint_trajectory` already serialized, for ``Publisher.publish(bytes)``: rclpy's own
    serialisation of 50 points costs ~0.6 ms per controller (building the message another 0.3 ms),
    in the path between a finished inference and the robot; this takes ~0.09 ms. rclpy deserialises
    it to the same message (tested; only the padding bytes, which rclpy leaves uninitialised, differ)."""
    rows = np.asarray(positions, dtype=np.float64)
    w = _CdrWriter()
    stamp = to_time(start_stamp)
    w.time(stamp.sec, stamp.nanosec)
    w.string("")  # frame_id
    w.uint32(len(joint_names))
    for name in joint_names:
        w.string(name)
    n_points, n_joints = rows.shape
    w.uint32(n_points)
    # time_from_start exactly as to_duration() computes it, for all points at once
    tfs = np.arange(n_points) * dt
    secs = tfs.astype(np.int64)
    nsecs = np.minimum(np.round((tfs - secs) * 1e9), 999_999_999).astype(np.int64)
    for row, sec, nsec in zip(rows.tolist(), secs.tolist(), nsecs.tolist(), strict=True):
        # One pack per point: positions (count, padding to 8, doubles), empty velocities,
        # accelerations and effort, time_from_start. The padding depends on where the point starts.
        w._align(4)
        pad = 4 if n_joints and len(w.out) % 8 else 0
        w.out += _point_struct(pad, n_joints).pack(n_joints, *row, 0, 0, 0, sec, nsec)
    return bytes(w.out)


@functools.lru_cache(maxsize=64)
def _point_struct(pad: int, n_joints: int) -> struct.Struct:
    return struct.Struct(f"<I{pad}x{n_joints}dIIIiI")


def action_chunk_msg(
    chunk: ActionChunk, embodiment: str, instruction: str, first_due: float, frame_id: str = ""
) -> ActionChunkMsg:
    actions = np.ascontiguousarray(chunk.actions, dtype=np.float32)
    msg = ActionChunkMsg(
        header=Header(stamp=to_time(first_due), frame_id=frame_id),
        observation_stamp=to_time(chunk.observation_stamp),
        embodiment=embodiment,
        instruction=instruction,
        channel_names=list(chunk.channel_names),
        horizon=actions.shape[0],
        dt=float(chunk.dt),
        shape=[actions.shape[0], actions.shape[1]],
        inference_latency=float(chunk.total_latency),
    )
    msg.actions = actions.ravel().tolist()
    return msg


def action_chunk_arrays(msg: ActionChunkMsg) -> tuple[float, float, list[str], np.ndarray, float]:
    """An ActionChunk message as (observation stamp, first-due stamp [s], channel names, (H, C) actions,
    inference latency [s]); raises ValueError when ``shape`` does not match the data."""
    rows, cols = (int(x) for x in msg.shape) if len(msg.shape) == 2 else (-1, -1)
    actions = np.asarray(msg.actions, dtype=np.float32)
    if rows * cols != actions.size or cols != len(msg.channel_names):
        raise ValueError(
            f"action chunk shape {list(msg.shape)} does not fit {actions.size} values "
            f"and {len(msg.channel_names)} channels"
        )
    return (
        to_sec(msg.observation_stamp),
        to_sec(msg.header.stamp),
        list(msg.channel_names),
        actions.reshape(rows, cols),
        float(msg.inference_latency),
    )


def yaw_quaternion(yaw: float) -> Quaternion:
    # A rotation about z only: half-angle formula (what tf_transformations.quaternion_from_euler gives).
    return Quaternion(x=0.0, y=0.0, z=math.sin(yaw / 2.0), w=math.cos(yaw / 2.0))


def waypoint_poses(waypoints: np.ndarray, stamp: float, frame_id: str) -> list[PoseStamped]:
    """(n, 3) x, y, yaw in frame_id at the observation stamp -> PoseStamped list (REP-103 axes)."""
    header = Header(stamp=to_time(stamp), frame_id=frame_id)
    return [
        PoseStamped(
            header=header,
            pose=Pose(position=Point(x=float(x), y=float(y), z=0.0), orientation=yaw_quaternion(float(yaw))),
        )
        for x, y, yaw in np.asarray(waypoints, dtype=np.float64)
    ]


def waypoint_path(waypoints: np.ndarray, stamp: float, frame_id: str) -> Path:
    return Path(
        header=Header(stamp=to_time(stamp), frame_id=frame_id),
        poses=waypoint_poses(waypoints, stamp, frame_id),
    )


def path_markers(waypoints: np.ndarray, stamp: float, frame_id: str, ns: str = "qvla") -> MarkerArray:
    """The predicted path as a line strip in frame_id, for RViz/Foxglove."""
    header = Header(stamp=to_time(stamp), frame_id=frame_id)
    line = Marker(header=header, ns=ns, id=0, type=Marker.LINE_STRIP, action=Marker.ADD)
    line.scale.x = 0.02
    line.color = ColorRGBA(r=0.1, g=0.8, b=0.2, a=1.0)
    line.pose.orientation.w = 1.0
    line.points = [
        Point(x=float(p[0]), y=float(p[1]), z=float(p[2]) if len(p) > 2 else 0.0) for p in waypoints
    ]
    return MarkerArray(markers=[line])


def chunk_plot_markers(chunk: ActionChunk, stamp: float, ns: str = "qvla_chunk") -> MarkerArray:
    """Joint-space chunks have no Cartesian path without kinematics: draw each channel over time
    (x = time [s] * 0.5 m/s, y = value, z = channel index * 0.1 m) in frame ``qvla_chunk``."""
    header = Header(stamp=to_time(stamp), frame_id="qvla_chunk")
    markers = []
    t = np.arange(chunk.actions.shape[0]) * chunk.dt * 0.5
    for j, name in enumerate(chunk.channel_names):
        m = Marker(header=header, ns=f"{ns}/{name}", id=j, type=Marker.LINE_STRIP, action=Marker.ADD)
        m.scale.x = 0.005
        m.pose.orientation.w = 1.0
        m.color = ColorRGBA(r=0.2, g=0.4 + 0.6 * (j % 2), b=0.9, a=1.0)
        m.points = [
            Point(x=float(t[k]), y=float(chunk.actions[k, j]), z=0.1 * j)
            for k in range(chunk.actions.shape[0])
        ]
        markers.append(m)
    return MarkerArray(markers=markers)


# ---------------------------------------------------------------------------- simulator (sim_node)
def time_from_ns(nanoseconds: int) -> Time:
    """An exact builtin_interfaces/Time from integer nanoseconds (no float rounding)."""
    sec, nanosec = divmod(int(nanoseconds), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def clock_msg(nanoseconds: int) -> Clock:
    """rosgraph_msgs/Clock for /clock (what use_sim_time nodes take as their time)."""
    return Clock(clock=time_from_ns(nanoseconds))


def joint_state_msg(names: Sequence[str], positions: Sequence[float], stamp_ns: int) -> JointState:
    """sensor_msgs/JointState with positions only (velocity and effort left empty)."""
    msg = JointState(header=Header(stamp=time_from_ns(stamp_ns)), name=list(names))
    msg.position = [float(p) for p in positions]
    return msg


def trajectory_arrays(msg: JointTrajectory) -> tuple[float, list[str], list[float], np.ndarray]:
    """A JointTrajectory as (header stamp [s], joint names, time_from_start [s], (points, joints) positions).

    Raises ValueError when a point's position count differs from the number of joint names (JTC
    rejects such a trajectory too; velocity-only points have no positions and are rejected)."""
    names = list(msg.joint_names)
    rows = [list(p.positions) for p in msg.points]
    bad = [k for k, row in enumerate(rows) if len(row) != len(names)]
    if bad:
        raise ValueError(
            f"point {bad[0]} has {len(rows[bad[0]])} positions for {len(names)} joints "
            "(only position trajectories are supported)"
        )
    tfs = [float(p.time_from_start.sec) + float(p.time_from_start.nanosec) * 1e-9 for p in msg.points]
    positions = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names))
    return to_sec(msg.header.stamp), names, tfs, positions
