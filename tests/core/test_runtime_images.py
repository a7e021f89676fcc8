"""Raw and compressed image decoding: every supported encoding, every malformed frame."""

from __future__ import annotations

import array
import time

import cv2
import numpy as np
import pytest

from qvla_core.embodiment import Camera
from qvla_core.errors import ObservationError
from qvla_core.runtime.images import check_size, decode_compressed, decode_raw

H, W = 6, 8


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def padded(pixels: np.ndarray, pad: int) -> tuple[bytes, int]:
    """Rows of ``pixels`` as bytes with ``pad`` junk bytes after each row."""
    rows = pixels.reshape(pixels.shape[0], -1)
    junk = np.full((rows.shape[0], pad), 77, dtype=np.uint8)
    return np.hstack([rows, junk]).tobytes(), rows.shape[1] + pad


@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_give_rgb(rgb: np.ndarray, pad: int) -> None:
    alpha = np.full((H, W, 1), 9, dtype=np.uint8)
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "8UC3": rgb[:, :, ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
    }
    for encoding, pixels in cases.items():
        data, step = padded(np.ascontiguousarray(pixels), pad)
        out = decode_raw(encoding, H, W, step, data)
        assert out.shape == (H, W, 3) and out.dtype == np.uint8, encoding
        np.testing.assert_array_equal(out, rgb, err_msg=encoding)


def test_rgb8_is_zero_copy(rgb: np.ndarray) -> None:
    buf = bytearray(rgb.tobytes())
    out = decode_raw("rgb8", H, W, W * 3, memoryview(buf))
    buf[0] = (int(rgb[0, 0, 0]) + 1) % 256
    assert out[0, 0, 0] == buf[0]  # a view onto the message buffer, not a copy


def test_rclpy_array_buffer(rgb: np.ndarray) -> None:
    # rclpy hands uint8[] fields over as array.array("B").
    out = decode_raw("bgr8", H, W, W * 3, array.array("B", rgb[:, :, ::-1].tobytes()))
    np.testing.assert_array_equal(out, rgb)


def test_mono8_and_mono16(rgb: np.ndarray) -> None:
    gray = rgb[:, :, 0]
    out = decode_raw("mono8", H, W, W, gray.tobytes())
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))

    wide = gray.astype(np.uint16) * 257  # 0..255 -> 0..65535, high byte = original
    little = decode_raw("mono16", H, W, W * 2, wide.astype("<u2").tobytes())
    big = decode_raw("mono16", H, W, W * 2, wide.astype(">u2").tobytes(), is_bigendian=True)
    np.testing.assert_array_equal(little[:, :, 1], gray)
    np.testing.assert_array_equal(big, little)
    data, step = padded(wide.astype("<u2").view(np.uint8).reshape(H, W * 2), 4)
    np.testing.assert_array_equal(decode_raw("mono16", H, W, step, data), little)


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2"])
def test_yuv422_byte_order(encoding: str) -> None:
    # Neutral chroma (U = V = 128) and a luma ramp along x: the result must be a grey ramp.
    # Reading the bytes in the wrong order would turn chroma into luma and colour the image.
    y = np.tile(40 + 20 * np.arange(W, dtype=np.uint8), (H, 1))
    c = np.full((H, W // 2), 128, np.uint8)
    packed = np.empty((H, W // 2, 4), np.uint8)
    if encoding == "yuv422_yuy2":  # Y0 U Y1 V
        packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = y[:, ::2], c, y[:, 1::2], c
    else:  # ROS "yuv422" is UYVY: U Y0 V Y1
        packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = c, y[:, ::2], c, y[:, 1::2]
    out = decode_raw(encoding, H, W, W * 2, packed.tobytes()).astype(int)
    assert out.shape == (H, W, 3)
    assert np.abs(out[..., 0] - out[..., 1]).max() <= 1 and np.abs(out[..., 2] - out[..., 1]).max() <= 1
    assert (np.diff(out[..., 1], axis=1) > 0).all()


def test_bad_raw_frames_are_named() -> None:
    good = bytes(H * W * 3)
    with pytest.raises(ObservationError, match=r"encoding '32FC1' is not supported"):
        decode_raw("32FC1", H, W, W * 4, bytes(H * W * 4))
    with pytest.raises(ObservationError, match="empty image frame"):
        decode_raw("rgb8", 0, W, W * 3, b"")
    with pytest.raises(ObservationError, match="empty image frame"):
        decode_raw("rgb8", H, 0, 0, good)
    with pytest.raises(ObservationError, match=r"step 20 is shorter than one row .* \(24 bytes\)"):
        decode_raw("rgb8", H, W, 20, good)
    with pytest.raises(ObservationError, match=r"truncated image: 143 bytes .* \(need 144\)"):
        decode_raw("rgb8", H, W, W * 3, good[:-1])
    with pytest.raises(ObservationError, match="truncated"):
        decode_raw("bgr8", H, W, W * 3 + 4, good)  # right size without padding, too short with it
    with pytest.raises(ObservationError, match="width must be even"):
        decode_raw("yuv422", H, 7, 14, bytes(H * 14))


def test_compressed_jpeg_and_png(rgb: np.ndarray) -> None:
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    ok, png = cv2.imencode(".png", bgr)
    assert ok
    np.testing.assert_array_equal(decode_compressed("png", png.tobytes()), rgb)
    np.testing.assert_array_equal(decode_compressed("bgr8; compressed png", png.tobytes()), rgb)

    flat = np.zeros((16, 16, 3), np.uint8)
    flat[:] = (10, 120, 240)  # RGB
    ok, jpg = cv2.imencode(".jpg", flat[:, :, ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    out = decode_compressed("rgb8; jpeg compressed bgr8", jpg.tobytes())
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - flat).max() <= 4  # channel order is RGB, not BGR


def test_bad_compressed_payloads() -> None:
    with pytest.raises(ObservationError, match="empty compressed image"):
        decode_compressed("jpeg", b"")
    with pytest.raises(ObservationError, match="cannot decode compressed image"):
        decode_compressed("jpeg", b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ObservationError, match="not supported"):
        decode_compressed("16UC1; compressedDepth png", b"\x89PNG")
    with pytest.raises(ObservationError, match="not supported"):
        decode_compressed("h264", b"\x00\x00\x01")


def test_check_size_names_camera_and_sizes() -> None:
    cam = Camera(name="cam_high", width=640, height=480)
    check_size(np.zeros((480, 640, 3), np.uint8), cam)
    with pytest.raises(
        ObservationError, match=r"camera cam_high: expected 640x480 .* got shape \(240, 320, 3\)"
    ):
        check_size(np.zeros((240, 320, 3), np.uint8), cam)
    with pytest.raises(ObservationError, match="cam_high"):
        check_size(np.zeros((480, 640, 3), np.float32), cam)
    with pytest.raises(ObservationError, match="cam_high"):
        check_size(np.zeros((480, 640), np.uint8), cam)


def test_decode_480x640_is_fast() -> None:
    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8).tobytes()
    for encoding in ("rgb8", "bgr8"):
        decode_raw(encoding, 480, 640, 1920, frame)
        start = time.perf_counter()
        for _ in range(50):
            decode_raw(encoding, 480, 640, 1920, frame)
        per_frame = (time.perf_counter() - start) / 50
        assert per_frame < 1e-3, f"{encoding}: {per_frame * 1e3:.2f} ms per frame"
