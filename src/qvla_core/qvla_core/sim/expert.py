"""A scripted TransferCube expert that sees only what a policy sees: images and joint state.

:class:`TransferCubeExpert` implements :class:`qvla_core.policy.Policy`, so it can stand in for the
model anywhere, including behind the ROS stack. Per call it

1. locates the red cube in the top camera image (``cam_high``) by colour segmentation and casts
   the blob's centroid ray onto the plane of the cube's visible faces, using the MuJoCo camera's
   pose and field of view from the gym-aloha model (our "URDF");
2. tracks the grasped cube by forward kinematics of the measured joint state (the grasp point is
   ``GRASP_OFFSET`` along the right gripper's x axis);
3. turns a phase schedule of task-space key poses into joint key poses with damped-least-squares IK
   on a scratch copy of the model, interpolates them linearly in joint space at 50 Hz, and adds a
   gravity feed-forward (the static sag of MuJoCo's position servos, ``qfrc_bias / kp``).

The schedule (seconds since the first observation after :meth:`reset`): the right arm goes above
the cube pitched ``APPROACH_PITCH`` down, descends, closes, lifts the cube to the handover point;
the left arm, rolled 90 deg so its fingers close vertically, comes in horizontally on the cube
position measured through the right arm's kinematics (frozen once it approaches), closes; the right
gripper opens and the right arm backs off. Episode time comes from ``Observation.stamp``.

Row ``k`` of a returned chunk is the target for ``stamp + (k + 1) * dt``.

``infer(observation, cube_position=...)`` takes an explicit privileged cube position for debugging
or as a fallback; the default (and the benchmark) uses the image only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from qvla_core.embodiment import Embodiment
from qvla_core.errors import ObservationError
from qvla_core.policy import ActionChunk, Observation
from qvla_core.sim.kinematics import Kinematics, rot_from_axes

FloatArray = npt.NDArray[np.float64]

APPROACH_PITCH = math.radians(60.0)  # right arm approach, below horizontal
CUBE_FACE_Z = 0.03  # height of the plane the cube blob's centroid ray is intersected with [m]
CUBE_REST_Z = 0.02  # cube centre height on the table [m]
HANDOVER = (0.02, 0.5, 0.24)  # where the right arm brings the cube [m]


@dataclass(frozen=True)
class Schedule:
    """Phase boundaries [s since the first observation]."""

    right_above: float = 0.9  # right grasp point above the cube, gripper open
    right_down: float = 1.4  # right grasp point on the cube
    right_closed: float = 1.8  # right gripper closed
    right_lifted: float = 2.7  # cube at the handover point
    left_ready: float = 3.1  # left grasp point LEFT_STANDOFF before the cube, rolled 90 deg
    left_in: float = 3.6  # left grasp point on the cube
    left_closed: float = 4.0
    right_open: float = 4.3
    right_away: float = 4.9
    locate_until: float = 0.8  # trust the top camera's cube estimate until then (then occluded)
    freeze_left: float = 3.1  # freeze the left target (measured cube) from then on


@dataclass
class _State:
    t0: float | None = None
    q_start: FloatArray | None = None
    cube: FloatArray | None = None  # cube on the table, from the image
    cube_hits: int = 0
    handover: FloatArray | None = None  # cube in the right gripper, from forward kinematics
    ik_cache: dict[tuple[Any, ...], FloatArray] = field(default_factory=dict)


class TransferCubeExpert:
    """Scripted TransferCube expert behind the :class:`~qvla_core.policy.Policy` protocol.

    Args:
        embodiment: the ALOHA embodiment (14 action channels, left arm first).
        camera: our camera name of the top view (default ``cam_high``).
        mujoco_camera: the MuJoCo camera it corresponds to (default ``top``).
        schedule: phase timing.
    """

    def __init__(
        self,
        embodiment: Embodiment,
        camera: str = "cam_high",
        mujoco_camera: str = "top",
        schedule: Schedule | None = None,
    ) -> None:
        if len(embodiment.action) != 14:
            raise ValueError(
                f"TransferCubeExpert drives 14 ALOHA channels, embodiment has {len(embodiment.action)}"
            )
        self._embodiment = embodiment
        self.camera = camera
        self.schedule = schedule or Schedule()
        self.kin = Kinematics()
        self._cam_pos, self._cam_rot, self._cam_fovy = self.kin.camera(mujoco_camera)
        self._s = _State()

    # ------------------------------------------------------------------ Policy protocol
    @property
    def embodiment(self) -> Embodiment:
        return self._embodiment

    def reset(self) -> None:
        """Forget the episode: the next observation is time 0."""
        self._s = _State()

    def infer(self, observation: Observation, cube_position: npt.ArrayLike | None = None) -> ActionChunk:
        """The next ``horizon`` actions. ``cube_position`` (privileged, optional) overrides the image."""
        t_start = time.perf_counter()
        st = self._s
        q = np.asarray(observation.state, dtype=np.float64).reshape(-1)
        if q.shape != (14,) or not np.all(np.isfinite(q)):
            raise ObservationError(f"state must be 14 finite numbers, got shape {q.shape}")
        if st.t0 is None:
            st.t0 = float(observation.stamp)
            st.q_start = q.copy()
        t = float(observation.stamp) - st.t0
        sch = self.schedule

        t_perc = time.perf_counter()
        if cube_position is not None:
            st.cube = np.asarray(cube_position, dtype=np.float64).reshape(3).copy()
        elif t <= sch.locate_until or st.cube is None:
            frames = observation.images.get(self.camera)
            if frames is None:
                raise ObservationError(
                    f"the expert needs camera {self.camera!r}; got {sorted(observation.images)}"
                )
            found = self.locate_cube(np.asarray(frames)[-1])
            if found is not None:
                # The latest view wins: gym-aloha spawns the cube 3 cm up and it lands within ~0.1 s,
                # so the first frame alone can be ~1 cm off (perspective); later frames are < 2 mm.
                st.cube = found
                st.cube_hits += 1
        if sch.right_lifted - 0.2 <= t <= sch.freeze_left or (t > sch.freeze_left and st.handover is None):
            self.kin.set_state(q)
            st.handover = self.kin.gripper_pose(1)[0]
        t_plan = time.perf_counter()

        dt = self._embodiment.dt
        times = t + dt * np.arange(1, self._embodiment.horizon + 1)
        actions = np.stack([self.target(tt) for tt in times])
        if observation.action_prefix is not None:
            prefix = np.asarray(observation.action_prefix, dtype=np.float64)
            k = min(len(prefix), len(actions))
            w = (
                np.ones(k)
                if observation.prefix_weight is None
                else np.asarray(observation.prefix_weight, dtype=np.float64)[:k]
            )
            actions[:k] = w[:, None] * prefix[:k] + (1.0 - w[:, None]) * actions[:k]
        t_end = time.perf_counter()
        return ActionChunk(
            actions=actions.astype(np.float32),
            channel_names=self._embodiment.action_names,
            dt=dt,
            observation_stamp=float(observation.stamp),
            latency={
                "perception": t_plan - t_perc,
                "plan": t_end - t_plan,
                "total": t_end - t_start,
            },
        )

    def cube_estimate(self) -> FloatArray | None:
        """The cube position the expert currently believes (None before it has seen it)."""
        return None if self._s.cube is None else self._s.cube.copy()

    def episode_time(self, stamp: float) -> float | None:
        """Seconds since the first observation after :meth:`reset` (None before it)."""
        return None if self._s.t0 is None else stamp - self._s.t0

    # ------------------------------------------------------------------ perception
    def locate_cube(self, image: npt.ArrayLike) -> FloatArray | None:
        """World position of the cube's centre from a top-camera RGB image, or None if not seen."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ObservationError(f"expected an (H, W, 3) image, got {img.shape}")
        r = img[..., 0].astype(np.int16)
        g = img[..., 1].astype(np.int16)
        b = img[..., 2].astype(np.int16)
        mask = (r > 100) & (r > 2 * g + 30) & (r > 2 * b + 30)
        if int(mask.sum()) < 4:
            return None
        rows, cols = np.nonzero(mask)
        h, w = mask.shape
        f = (h / 2.0) / math.tan(self._cam_fovy / 2.0)
        u = float(cols.mean()) + 0.5 - w / 2.0
        v = float(rows.mean()) + 0.5 - h / 2.0
        ray = self._cam_rot @ np.array([u / f, -v / f, -1.0])  # MuJoCo cameras look along -z, y up
        if abs(ray[2]) < 1e-6:
            return None
        s = (CUBE_FACE_Z - self._cam_pos[2]) / ray[2]
        if s <= 0:
            return None
        p = self._cam_pos + s * ray
        return np.array([p[0], p[1], CUBE_REST_Z])

    # ------------------------------------------------------------------ planning
    def phase(self, t: float) -> str:
        """Name of the phase at episode time ``t``."""
        sch = self.schedule
        for name, end in (
            ("approach", sch.right_above),
            ("descend", sch.right_down),
            ("grasp", sch.right_closed),
            ("lift", sch.right_lifted),
            ("left_approach", sch.left_ready),
            ("left_insert", sch.left_in),
            ("left_grasp", sch.left_closed),
            ("release", sch.right_open),
            ("retreat", sch.right_away),
        ):
            if t < end:
                return name
        return "done"

    def _solve(
        self, key: tuple[Any, ...], arm: int, seed: FloatArray, pos: FloatArray, rot: FloatArray
    ) -> FloatArray:
        cache = self._s.ik_cache
        if key not in cache:
            cache[key] = self.kin.ik(arm, seed, pos, rot)[7 * arm : 7 * arm + 6]
        return cache[key]

    def _right_keys(self) -> list[tuple[float, FloatArray, float]]:
        """(time, 6 joint angles, gripper) key poses of the right arm."""
        st, sch = self._s, self.schedule
        assert st.q_start is not None
        cube = st.cube if st.cube is not None else np.array([0.1, 0.5, CUBE_REST_Z])
        base = np.array([0.469, 0.5])
        d = cube[:2] - base
        d = d / max(np.linalg.norm(d), 1e-6)
        approach = np.array(
            [d[0] * math.cos(APPROACH_PITCH), d[1] * math.cos(APPROACH_PITCH), -math.sin(APPROACH_PITCH)]
        )
        rot = rot_from_axes(approach, np.array([-d[1], d[0], 0.0]))
        key = tuple(np.round(cube, 4))
        grasp = cube + np.array([0.0, 0.0, 0.005])
        above = grasp - 0.08 * approach
        seed = st.q_start.copy()
        q_above = self._solve(("r_above", *key), 1, seed, above, rot)
        seed[7:13] = q_above
        q_down = self._solve(("r_down", *key), 1, seed, grasp, rot)
        seed[7:13] = q_down
        hand = np.asarray(HANDOVER)
        q_lift = self._solve(
            ("r_lift",),
            1,
            seed,
            hand,
            rot_from_axes(
                np.array([-math.cos(APPROACH_PITCH), 0.0, -math.sin(APPROACH_PITCH)]),
                np.array([0.0, -1.0, 0.0]),
            ),
        )
        seed[7:13] = q_lift
        away = hand + np.array([0.12, 0.0, 0.03])
        q_away = self._solve(
            ("r_away",),
            1,
            seed,
            away,
            rot_from_axes(np.array([-1.0, 0.0, -1.0]), np.array([0.0, -1.0, 0.0])),
        )
        q0 = st.q_start[7:13]
        return [
            (0.0, q0, 1.0),
            (sch.right_above, q_above, 1.0),
            (sch.right_down, q_down, 1.0),
            (sch.right_closed, q_down, 0.0),
            (sch.right_lifted, q_lift, 0.0),
            (sch.left_closed, q_lift, 0.0),
            (sch.right_open, q_lift, 1.0),
            (sch.right_away, q_away, 1.0),
        ]

    def _left_keys(self) -> list[tuple[float, FloatArray, float]]:
        st, sch = self._s, self.schedule
        assert st.q_start is not None
        target = st.handover if st.handover is not None else np.asarray(HANDOVER)
        rot = rot_from_axes(np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]))
        grasp = target + np.array([-0.01, 0.0, 0.0])
        ready = grasp - np.array([0.10, 0.0, 0.0])
        seed = st.q_start.copy()
        q_ready_nominal = self._solve(
            ("l_nominal",), 0, seed, np.asarray(HANDOVER) - np.array([0.11, 0.0, 0.0]), rot
        )
        seed[0:6] = q_ready_nominal
        key = tuple(np.round(target, 4))
        q_ready = self._solve(("l_ready", *key), 0, seed, ready, rot)
        seed[0:6] = q_ready
        q_in = self._solve(("l_in", *key), 0, seed, grasp, rot)
        q0 = st.q_start[0:6]
        return [
            (0.0, q0, 1.0),
            (sch.right_lifted, q_ready_nominal, 1.0),
            (sch.left_ready, q_ready, 1.0),
            (sch.left_in, q_in, 1.0),
            (sch.left_closed, q_in, 0.0),
            (sch.right_away + 0.3, q_in + np.array([0.0, -0.1, 0.0, 0.0, 0.0, 0.0]), 0.0),
        ]

    def target(self, t: float) -> FloatArray:
        """The 14-D command at episode time ``t`` from the current plan (with gravity feed-forward)."""
        out = np.zeros(14)
        for arm, keys in ((0, self._left_keys()), (1, self._right_keys())):
            times = [k[0] for k in keys]
            i = int(np.searchsorted(times, t, side="right"))
            if i >= len(keys):
                q, g = keys[-1][1], keys[-1][2]
            else:
                (ta, qa, ga), (tb, qb, gb) = keys[i - 1], keys[i]
                a = min(max((t - ta) / (tb - ta), 0.0), 1.0)
                a = 0.5 - 0.5 * math.cos(math.pi * a)  # smooth start and stop
                q = qa + a * (qb - qa)
                g = ga + a * (gb - ga)
            out[7 * arm : 7 * arm + 6] = q
            out[7 * arm + 6] = g
        return out + self.kin.sag(out)


__all__ = ["Kinematics", "Schedule", "TransferCubeExpert"]  # Kinematics: also imported from here
