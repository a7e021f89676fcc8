"""Our CDR reader (camera messages) and writer (JointTrajectory) against rclpy's own serialisation:
every field, every alignment."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from qvla_core.errors import ObservationError  # noqa: E402
from qvla_ros.io import conversions as conv  # noqa: E402


def image(frame_id: str, encoding: str, h: int, w: int, bpp: int, pad: int = 0, seed: int = 0) -> Image:
    rng = np.random.default_rng(seed)
    msg = Image(height=h, width=w, encoding=encoding, step=w * bpp + pad, is_bigendian=seed % 2)
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_000 + seed, 123_456_789
    msg.data = rng.integers(0, 256, size=h * (w * bpp + pad), dtype=np.uint8).tobytes()
    return msg


@pytest.mark.parametrize("frame_id", ["", "a", "ab", "abc", "cam_high_optical_frame"])
@pytest.mark.parametrize(("encoding", "bpp"), [("rgb8", 3), ("mono8", 1), ("bgra8", 4), ("16UC1", 2)])
def test_image_fields_match_rclpy(frame_id: str, encoding: str, bpp: int) -> None:
    msg = image(frame_id, encoding, 5, 7, bpp, pad=len(frame_id) % 3, seed=len(frame_id))
    raw = serialize_message(msg)
    wire = conv.image_from_cdr(raw)
    assert wire.stamp == pytest.approx(conv.to_sec(msg.header.stamp))
    assert (wire.frame_id, wire.height, wire.width, wire.encoding, wire.is_bigendian, wire.step) == (
        frame_id, 5, 7, encoding, msg.is_bigendian, msg.step,
    )  # fmt: skip
    assert bytes(wire.data) == bytes(msg.data)


def test_pixels_are_not_copied_and_decode_like_the_message() -> None:
    msg = image("cam_high", "rgb8", 48, 64, 3)
    raw = serialize_message(msg)
    rgb = conv.image_to_rgb(conv.image_from_cdr(raw))
    np.testing.assert_array_equal(rgb, conv.image_to_rgb(msg))
    assert np.shares_memory(rgb, np.frombuffer(raw, np.uint8)), "the frame is a view into the bytes"


def test_compressed_image_and_the_fallback_path() -> None:
    msg = CompressedImage(format="jpeg")
    msg.header.frame_id = "cam_low"
    msg.header.stamp.sec = 42
    msg.data = bytes(range(200))
    raw = serialize_message(msg)
    wire = conv.compressed_image_from_cdr(raw)
    assert (wire.stamp, wire.frame_id, wire.format, bytes(wire.data)) == (
        42.0,
        "cam_low",
        "jpeg",
        bytes(msg.data),
    )
    stamp, got = conv.camera_message_from_cdr(raw, compressed=True)
    assert stamp == 42.0 and bytes(got.data) == bytes(msg.data)


@pytest.mark.parametrize("cut", [3, 10, 30, 60])
def test_truncated_or_foreign_bytes_are_errors_not_garbage(cut: int) -> None:
    raw = serialize_message(image("cam", "rgb8", 4, 4, 3))
    with pytest.raises(ValueError, match="CDR"):
        conv.image_from_cdr(raw[:cut])
    with pytest.raises(ValueError):
        conv.camera_message_from_cdr(raw[:cut], compressed=False)
    with pytest.raises(ValueError, match="encapsulation"):
        conv.image_from_cdr(b"\x07\x07" + raw[2:])


def test_a_short_data_field_is_rejected_by_the_decoder() -> None:
    msg = image("cam", "rgb8", 4, 4, 3)
    msg.data = msg.data[:-5]  # the message says 4x4 rgb8 but carries 43 bytes
    wire = conv.image_from_cdr(serialize_message(msg))
    with pytest.raises(ObservationError, match="truncated"):
        conv.image_to_rgb(wire)


@pytest.mark.parametrize("n_joints", [0, 1, 2, 6, 7])
@pytest.mark.parametrize("name_length", [1, 2, 3, 4])
@pytest.mark.parametrize("dt", [0.02, 1 / 30, 0.1, 0.0])
def test_trajectory_bytes_are_the_message(n_joints: int, name_length: int, dt: float) -> None:
    rng = np.random.default_rng(n_joints * 10 + name_length)
    names = [f"{'j' * name_length}{i}" for i in range(n_joints)]
    rows = rng.normal(size=(50, n_joints))
    raw = conv.joint_trajectory_cdr(names, 1234.5678, rows, dt)
    assert deserialize_message(raw, JointTrajectory) == conv.joint_trajectory(names, 1234.5678, rows, dt)
