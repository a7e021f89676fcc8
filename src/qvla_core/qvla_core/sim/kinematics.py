"""Forward kinematics, Jacobians, IK and gravity sag of the ALOHA arms, on a scratch copy of the
MuJoCo model: what the scripted expert plans with and what the camera overlay and the learned-policy
probe measure grasp points with."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from qvla_core.sim.aloha_env import ARM_JOINTS, import_mujoco, model_path, state_to_qpos

FloatArray = npt.NDArray[np.float64]

GRASP_OFFSET = 0.13  # grasp point along the gripper link's x axis [m]


class Kinematics:
    """Forward kinematics, Jacobians, IK and gravity sag of the ALOHA arms on a scratch MjData."""

    def __init__(self) -> None:
        mujoco = import_mujoco()

        self._mj = mujoco
        self.model: Any = mujoco.MjModel.from_xml_path(str(model_path("transfer_cube")))
        self.data: Any = mujoco.MjData(self.model)
        m = self.model
        self.gripper_body = [
            mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"vx300s_{s}/gripper_link")
            for s in ("left", "right")
        ]
        self.dofs: list[list[int]] = []
        self.qadr: list[list[int]] = []
        self.lower: list[FloatArray] = []
        self.upper: list[FloatArray] = []
        for side in ("left", "right"):
            jids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"vx300s_{side}/{j}") for j in ARM_JOINTS]
            self.dofs.append([int(m.jnt_dofadr[j]) for j in jids])
            self.qadr.append([int(m.jnt_qposadr[j]) for j in jids])
            self.lower.append(np.array([m.jnt_range[j, 0] for j in jids]))
            self.upper.append(np.array([m.jnt_range[j, 1] for j in jids]))
        # Position servo gains per arm joint (actuator i drives the joint with the same index).
        self.kp = [np.zeros(6), np.zeros(6)]
        for a in range(m.nu):
            jid = int(m.actuator_trnid[a, 0])
            for arm in range(2):
                qa = int(m.jnt_qposadr[jid])
                if qa in self.qadr[arm]:
                    self.kp[arm][self.qadr[arm].index(qa)] = float(m.actuator_gainprm[a, 0])

    def set_state(self, q14: npt.ArrayLike) -> None:
        state_to_qpos(self.model, self.data.qpos, q14)
        self._mj.mj_kinematics(self.model, self.data)
        self._mj.mj_comPos(self.model, self.data)

    def gripper_pose(self, arm: int) -> tuple[FloatArray, FloatArray]:
        """(grasp point, rotation matrix) of ``arm``'s gripper after :meth:`set_state`."""
        b = self.gripper_body[arm]
        rot = np.asarray(self.data.xmat[b], dtype=np.float64).reshape(3, 3).copy()
        pos = np.asarray(self.data.xpos[b], dtype=np.float64) + GRASP_OFFSET * rot[:, 0]
        return pos, rot

    def camera(self, name: str) -> tuple[FloatArray, FloatArray, float]:
        """(position, rotation, vertical fov [rad]) of a MuJoCo camera (scene at rest)."""
        mj = self._mj
        data = mj.MjData(self.model)
        mj.mj_forward(self.model, data)
        cid = mj.mj_name2id(self.model, mj.mjtObj.mjOBJ_CAMERA, name)
        if cid < 0:
            raise ValueError(f"no camera {name!r} in the model")
        pos = np.asarray(data.cam_xpos[cid], dtype=np.float64).copy()
        rot = np.asarray(data.cam_xmat[cid], dtype=np.float64).reshape(3, 3).copy()
        return pos, rot, math.radians(float(self.model.cam_fovy[cid]))

    def ik(
        self,
        arm: int,
        q_seed: FloatArray,
        pos: FloatArray,
        rot: FloatArray,
        *,
        iters: int = 200,
        damping: float = 0.02,
        rot_weight: float = 0.3,
    ) -> FloatArray:
        """Damped-least-squares IK of ``arm``'s grasp point; returns the full 14-D state."""
        mj = self._mj
        q = np.asarray(q_seed, dtype=np.float64).copy()
        idx = slice(7 * arm, 7 * arm + 6)
        jacp = np.zeros((3, self.model.nv))
        jacr = np.zeros((3, self.model.nv))
        for _ in range(iters):
            self.set_state(q)
            p, r = self.gripper_pose(arm)
            e_pos = pos - p
            e_rot = 0.5 * sum(np.cross(r[:, i], rot[:, i]) for i in range(3))
            err = np.concatenate([e_pos, rot_weight * e_rot])
            if np.linalg.norm(e_pos) < 1e-4 and np.linalg.norm(e_rot) < 1e-3:
                break
            mj.mj_jac(self.model, self.data, jacp, jacr, p, self.gripper_body[arm])
            jac = np.vstack([jacp[:, self.dofs[arm]], rot_weight * jacr[:, self.dofs[arm]]])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + damping**2 * np.eye(6), err)
            dq = np.clip(dq, -0.3, 0.3)
            q[idx] = np.clip(q[idx] + dq, self.lower[arm], self.upper[arm])
        return q

    def sag(self, q14: npt.ArrayLike) -> FloatArray:
        """Static servo sag of each arm joint at ``q14`` (gravity torque / kp), 14-D, grippers 0."""
        mj = self._mj
        state_to_qpos(self.model, self.data.qpos, q14)
        self.data.qvel[:] = 0.0
        mj.mj_fwdPosition(self.model, self.data)
        mj.mj_rne(self.model, self.data, 0, self.data.qfrc_bias)
        out = np.zeros(14)
        for arm in range(2):
            bias = np.asarray(self.data.qfrc_bias[self.dofs[arm]], dtype=np.float64)
            out[7 * arm : 7 * arm + 6] = bias / self.kp[arm]
        return out


def rot_from_axes(x: FloatArray, y_hint: FloatArray) -> FloatArray:
    """Rotation whose x axis is ``x`` and y axis the part of ``y_hint`` orthogonal to it."""
    x = x / np.linalg.norm(x)
    y = y_hint - np.dot(y_hint, x) * x
    y = y / np.linalg.norm(y)
    return np.column_stack([x, y, np.cross(x, y)])
