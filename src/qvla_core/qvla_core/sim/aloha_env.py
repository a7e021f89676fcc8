"""A MuJoCo bimanual ALOHA at 50 Hz, on the gym-aloha model, without gym's overheads.

:class:`AlohaSim` loads the gym-aloha MJCF (TransferCube or Insertion) with MuJoCo directly and
reproduces gym-aloha's semantics: the same reset (arm start pose, object pose sampled from the seed
exactly as ``gym_aloha.utils`` does, so a seed gives the same scene as in gym-aloha), the same action
mapping (14 absolute joint targets, left arm first, grippers normalised 0 = closed .. 1 = open),
10 physics steps of 2 ms per 20 ms control step, and the same contact-based reward 0..4.

What it does differently: it only renders the cameras it is asked for (gym-aloha renders three
480x640 cameras on every step), and with ``fast_visuals`` it turns shadows and multisample
anti-aliasing off before the first render (~20x faster on a CPU renderer).

Threading: offscreen rendering uses the GL backend chosen by ``MUJOCO_GL`` (``egl`` or ``osmesa``),
read when MuJoCo is first imported; this module sets it to ``egl`` if it is unset. An EGL context is
bound to the thread that created it (the renderer is created on the first :meth:`AlohaSim.render`),
so create the sim and call every method from one thread (a ROS node should own it in one timer
callback or a dedicated thread, never across a multi-threaded executor). The class holds no locks.
``osmesa`` contexts are not tied to a thread.

gym-aloha and MuJoCo are imported lazily, so importing this module needs neither.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ImageArray = npt.NDArray[np.uint8]

Task = Literal["transfer_cube", "insertion"]

CONTROL_DT = 0.02  # s per control step (50 Hz)
N_SUBSTEPS = 10  # physics steps per control step (MuJoCo's default 2 ms timestep)

# gym-aloha's follower finger travel [m] that the normalised gripper 0..1 maps to.
FINGER_CLOSED = 0.01844
FINGER_OPEN = 0.05800

ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
# gym-aloha's arm start pose (per arm), fingers at 0.02239 m.
START_ARM = (0.0, -0.96, 1.16, 0.0, -0.3, 0.0)
START_FINGER = 0.02239

DEFAULT_CAMERAS: dict[str, str] = {
    "cam_high": "top",
    "cam_low": "angle",
    "cam_left_wrist": "left_wrist",
    "cam_right_wrist": "right_wrist",
}

TASK_XML = {
    "transfer_cube": "bimanual_viperx_transfer_cube.xml",
    "insertion": "bimanual_viperx_insertion.xml",
}


def import_mujoco() -> Any:
    """Import MuJoCo, defaulting ``MUJOCO_GL`` to ``egl`` (headless) when the caller has not chosen."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import mujoco

    return mujoco


def assets_dir() -> Path:
    """The gym-aloha MJCF folder (imports gym_aloha)."""
    from gym_aloha.constants import ASSETS_DIR

    return Path(ASSETS_DIR)


def model_path(task: Task = "transfer_cube") -> Path:
    """Path of the MJCF for ``task`` inside the installed gym-aloha package."""
    if task not in TASK_XML:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASK_XML)}")
    return assets_dir() / TASK_XML[task]


def normalise_finger(finger: float) -> float:
    """Finger slide position [m] -> normalised gripper (0 closed, 1 open)."""
    return (finger - FINGER_CLOSED) / (FINGER_OPEN - FINGER_CLOSED)


def unnormalise_finger(gripper: float) -> float:
    """Normalised gripper (0 closed, 1 open) -> finger slide position [m]."""
    return gripper * (FINGER_OPEN - FINGER_CLOSED) + FINGER_CLOSED


def arm_qpos_indices(model: Any) -> list[int]:
    """qpos addresses of the 14 channels (6 arm joints + left finger, left arm first)."""
    mujoco = import_mujoco()

    out: list[int] = []
    for side in ("left", "right"):
        for joint in (*ARM_JOINTS, "left_finger"):
            jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"vx300s_{side}/{joint}")
            if jid < 0:
                raise ValueError(f"joint vx300s_{side}/{joint} missing from the model")
            out.append(int(model.jnt_qposadr[jid]))
    return out


def state_to_qpos(model: Any, qpos: FloatArray, state: npt.ArrayLike) -> None:
    """Write a 14-D state (normalised grippers) into a full qpos vector (fingers mirrored)."""
    mujoco = import_mujoco()

    s = np.asarray(state, dtype=np.float64)
    for arm, side in enumerate(("left", "right")):
        for j, joint in enumerate(ARM_JOINTS):
            jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"vx300s_{side}/{joint}")
            qpos[model.jnt_qposadr[jid]] = s[7 * arm + j]
        finger = unnormalise_finger(float(s[7 * arm + 6]))
        for joint, sign in (("left_finger", 1.0), ("right_finger", -1.0)):
            jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"vx300s_{side}/{joint}")
            qpos[model.jnt_qposadr[jid]] = sign * finger


class AlohaSim:
    """The bimanual ALOHA MuJoCo scene, stepped one 50 Hz control step at a time.

    Args:
        task: ``"transfer_cube"`` or ``"insertion"``.
        cameras: our camera name -> MuJoCo camera name (top, angle, front_close, left_pillar,
            right_pillar, left_wrist, right_wrist). Default :data:`DEFAULT_CAMERAS`.
        width, height: rendered image size [px] (at most 640x480 unless the model's offscreen buffer
            is enlarged, which this class does on demand).
        fast_visuals: turn shadows and multisample anti-aliasing off (much faster CPU rendering).

    Not thread-safe; see the module docstring (EGL contexts belong to the creating thread).
    """

    def __init__(
        self,
        task: Task = "transfer_cube",
        cameras: dict[str, str] | None = None,
        width: int = 640,
        height: int = 480,
        fast_visuals: bool = True,
    ) -> None:
        mujoco = import_mujoco()

        self.task: Task = task
        self.model: Any = mujoco.MjModel.from_xml_path(str(model_path(task)))
        self.data: Any = mujoco.MjData(self.model)
        self.cameras = dict(DEFAULT_CAMERAS if cameras is None else cameras)
        for ours, theirs in self.cameras.items():
            if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, theirs) < 0:
                raise ValueError(f"camera {ours!r} maps to {theirs!r}, which the model does not have")
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        self.width = int(width)
        self.height = int(height)
        if fast_visuals:
            self.model.light_castshadow[:] = 0
            self.model.vis.quality.offsamples = 0
        self.model.vis.global_.offwidth = max(int(self.model.vis.global_.offwidth), self.width)
        self.model.vis.global_.offheight = max(int(self.model.vis.global_.offheight), self.height)
        self._renderer: Any = None  # created on the first render (binds the GL context to this thread)
        self._qadr = arm_qpos_indices(self.model)
        self._act = self._actuator_indices()
        self._geom_names = [
            mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_GEOM, i) or "" for i in range(self.model.ngeom)
        ]
        self._seed: int | None = None
        self.reset(0)

    # ------------------------------------------------------------------ lifecycle
    def _actuator_indices(self) -> list[tuple[int, int]]:
        """(left_finger actuator, right_finger actuator) per arm; arm actuators follow model order."""
        mujoco = import_mujoco()

        out = []
        for side in ("left", "right"):
            ids = []
            for joint in ("left_finger", "right_finger"):
                jid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, f"vx300s_{side}/{joint}")
                act = [a for a in range(self.model.nu) if int(self.model.actuator_trnid[a, 0]) == jid]
                ids.append(act[0])
            out.append((ids[0], ids[1]))
        return out

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode; the object pose is drawn from ``seed`` exactly as gym-aloha does."""
        mujoco = import_mujoco()
        from gym_aloha.utils import sample_box_pose, sample_insertion_pose

        self._seed = seed
        mujoco.mj_resetData(self.model, self.data)
        start = np.array([*START_ARM, 0.0] * 2)
        state_to_qpos(self.model, self.data.qpos, start)
        for arm in range(2):  # gym-aloha's exact start finger opening
            base = 8 * arm
            self.data.qpos[base + 6] = START_FINGER
            self.data.qpos[base + 7] = -START_FINGER
        self.data.ctrl[:16] = self.data.qpos[:16]
        if self.task == "transfer_cube":
            self.data.qpos[-7:] = sample_box_pose(seed)
        else:
            self.data.qpos[-14:] = np.concatenate(sample_insertion_pose(seed))
        mujoco.mj_forward(self.model, self.data)

    # ------------------------------------------------------------------ control
    def step(self, target: npt.ArrayLike) -> None:
        """One 20 ms control step towards absolute joint ``target`` (14,), grippers normalised."""
        mujoco = import_mujoco()

        t = np.asarray(target, dtype=np.float64).reshape(-1)
        if t.shape != (14,) or not np.all(np.isfinite(t)):
            raise ValueError(f"target must be 14 finite numbers, got shape {t.shape}")
        ctrl = self.data.ctrl
        for arm in range(2):
            arm_ctrl = t[7 * arm : 7 * arm + 6]
            ctrl[8 * arm : 8 * arm + 6] = arm_ctrl
            finger = unnormalise_finger(float(t[7 * arm + 6]))
            lf, rf = self._act[arm]
            ctrl[lf] = finger
            ctrl[rf] = -finger
        mujoco.mj_step(self.model, self.data, N_SUBSTEPS)

    def joint_positions(self) -> FloatArray:
        """The 14 measured joint positions, grippers normalised (0 closed, 1 open)."""
        q = np.asarray(self.data.qpos[self._qadr], dtype=np.float64).copy()
        q[6] = normalise_finger(q[6])
        q[13] = normalise_finger(q[13])
        return q

    @property
    def time(self) -> float:
        """Simulated seconds since reset."""
        return float(self.data.time)

    def object_pose(self) -> FloatArray:
        """Privileged pose (x, y, z, qw, qx, qy, qz) of the cube (or the peg for insertion)."""
        start = len(self.data.qpos) - (7 if self.task == "transfer_cube" else 14)
        return np.asarray(self.data.qpos[start : start + 7], dtype=np.float64).copy()

    # ------------------------------------------------------------------ rendering
    def render(self, camera_names: list[str] | tuple[str, ...] | None = None) -> dict[str, ImageArray]:
        """Render the named cameras (our names; default all) as (H, W, 3) uint8 RGB."""
        mujoco = import_mujoco()

        names = list(self.cameras) if camera_names is None else list(camera_names)
        unknown = [n for n in names if n not in self.cameras]
        if unknown:
            raise ValueError(f"unknown cameras {unknown}; configured: {sorted(self.cameras)}")
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, height=self.height, width=self.width)
        out: dict[str, ImageArray] = {}
        for name in names:
            self._renderer.update_scene(self.data, camera=self.cameras[name])
            out[name] = np.asarray(self._renderer.render(), dtype=np.uint8).copy()
        return out

    def close(self) -> None:
        """Free the renderer (call from the creating thread)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ------------------------------------------------------------------ reward
    def contact_pairs(self) -> set[tuple[str, str]]:
        """Geom-name pairs currently in contact (both orders)."""
        pairs: set[tuple[str, str]] = set()
        for i in range(self.data.ncon):
            c = self.data.contact[i]
            a, b = self._geom_names[c.geom1], self._geom_names[c.geom2]
            pairs.add((a, b))
            pairs.add((b, a))
        return pairs

    def reward(self) -> int:
        """gym-aloha's reward 0..4 from the current contacts."""
        pairs = self.contact_pairs()
        if self.task == "transfer_cube":
            right = ("red_box", "vx300s_right/10_right_gripper_finger") in pairs
            left = ("red_box", "vx300s_left/10_left_gripper_finger") in pairs
            table = ("red_box", "table") in pairs
            reward = 0
            if right:
                reward = 1
            if right and not table:
                reward = 2
            if left:
                reward = 3
            if left and not table:
                reward = 4
            return reward
        sockets = [f"socket-{i}" for i in range(1, 5)]
        right = ("red_peg", "vx300s_right/10_right_gripper_finger") in pairs
        left = any((s, "vx300s_left/10_left_gripper_finger") in pairs for s in sockets)
        peg_table = ("red_peg", "table") in pairs
        socket_table = any((s, "table") in pairs for s in sockets)
        peg_socket = any(("red_peg", s) in pairs for s in sockets)
        reward = 0
        if left and right:
            reward = 1
        if left and right and not peg_table and not socket_table:
            reward = 2
        if peg_socket and not peg_table and not socket_table:
            reward = 3
        if ("red_peg", "pin") in pairs:
            reward = 4
        return reward

    def success(self) -> bool:
        """True when the reward is the maximum (4)."""
        return self.reward() == 4
