"""Draw a predicted ALOHA action chunk into a camera image: where each gripper will go.

Forward kinematics of every row of the chunk on the MuJoCo model (the grasp point of each gripper),
projected through the MuJoCo camera's pinhole model (its pose with the scene at rest and its vertical
field of view; MuJoCo cameras look along -z with y up). Pure numpy + MuJoCo; OpenCV draws.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from qvla_core.sim.kinematics import Kinematics

FloatArray = npt.NDArray[np.float64]
ARM_COLOURS = ((255, 140, 0), (0, 200, 255))  # RGB: left arm orange, right arm cyan


class ChunkProjector:
    """Pixel paths of both grippers for 14-D joint rows (sim order, normalised grippers)."""

    def __init__(self, camera: str = "top") -> None:
        self.kin = Kinematics()
        self.cam_pos, self.cam_rot, self.fovy = self.kin.camera(camera)

    def gripper_paths(self, rows: npt.ArrayLike) -> FloatArray:
        """World grasp points, shape (2 arms, T rows, 3)."""
        q = np.atleast_2d(np.asarray(rows, dtype=np.float64))
        if q.shape[1] != 14:
            raise ValueError(f"expected (T, 14) joint rows, got {q.shape}")
        out = np.zeros((2, q.shape[0], 3))
        for t, row in enumerate(q):
            self.kin.set_state(row)
            for arm in range(2):
                out[arm, t] = self.kin.gripper_pose(arm)[0]
        return out

    def project(self, points: npt.ArrayLike, width: int, height: int) -> FloatArray:
        """Pixel coordinates (u right, v down) of world points (..., 3); NaN behind the camera."""
        p = np.asarray(points, dtype=np.float64)
        cam = (p - self.cam_pos) @ self.cam_rot  # world -> camera frame (rot columns = camera axes)
        depth = -cam[..., 2]
        f = (height / 2.0) / math.tan(self.fovy / 2.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = f * cam[..., 0] / depth + width / 2.0 - 0.5
            v = -f * cam[..., 1] / depth + height / 2.0 - 0.5
        uv = np.stack([u, v], axis=-1)
        uv[depth <= 1e-6] = np.nan
        return uv

    def draw(
        self, image: npt.ArrayLike, rows: npt.ArrayLike, commanded: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.uint8]:
        """A copy of the RGB ``image`` with each gripper's predicted path (thin line, dots darker with
        time) and, if given, the path actually commanded after the safety filter (thick line)."""
        img = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)).copy()
        self._draw_paths(img, rows, thickness=1, dots=True)
        if commanded is not None and np.asarray(commanded).size:
            self._draw_paths(img, commanded, thickness=3, dots=False)
        return img

    def _draw_paths(
        self, img: npt.NDArray[np.uint8], rows: npt.ArrayLike, thickness: int, dots: bool
    ) -> None:
        import cv2

        h, w = img.shape[:2]
        uv = self.project(self.gripper_paths(rows), w, h)
        for arm, colour in enumerate(ARM_COLOURS):
            pts = uv[arm]
            ok = np.all(np.isfinite(pts), axis=1)
            pix = np.round(pts[ok]).astype(np.int32)
            if len(pix) >= 2:
                cv2.polylines(img, [pix.reshape(-1, 1, 2)], False, colour, thickness, cv2.LINE_AA)
            for k, (x, y) in enumerate(pix if dots else []):
                fade = 1.0 - 0.6 * k / max(1, len(pix) - 1)
                cv2.circle(img, (int(x), int(y)), 3, tuple(int(c * fade) for c in colour), -1, cv2.LINE_AA)
