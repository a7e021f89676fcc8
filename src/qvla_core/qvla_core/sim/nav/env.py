"""A MuJoCo mobile base in a generated indoor scene, stepped at 20 Hz, with a forward RGB camera.

:class:`NavSim` builds an MJCF for each :class:`~qvla_core.sim.nav.scene.NavScene` (walls, coloured
objects, a checkered floor) with a planar base: slide joints x and y and a hinge yaw, driven by
velocity actuators (a differential drive: :meth:`NavSim.step` takes v forward and w yaw rate in the
base's frame). The base is a cylinder that collides with walls and objects; a contact after at least
``COLLISION_GAP_S`` without any counts as a collision. A camera on the base looks forward
(REP-103 +x) at 0.45 m height.

Odometry is perfect wheel odometry: the odom frame is the start pose, as on a robot that has just
booted. :meth:`NavSim.pose_at` interpolates the recorded world pose at an earlier time, which is how
waypoints given in base_link at an observation's instant are placed in the world.

Threading and rendering are as in :mod:`qvla_core.sim.aloha_env`: one thread (EGL contexts belong to
the thread that made them); shadows and anti-aliasing off. Measured on this project's 2-core CPU
machine (llvmpipe): a 640x480 frame in ~6 ms, a 320x240 one in ~2.5 ms, ~3,000 control steps/s
without rendering; each reset builds a new model, and the first render after it a new GL context
(0.25-0.55 s).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from qvla_core.sim.aloha_env import import_mujoco
from qvla_core.sim.nav.controller import Limits, Pose2D, relative, wrap
from qvla_core.sim.nav.generate import generate_scene
from qvla_core.sim.nav.scene import BASE_RADIUS, COLOURS, WALL_HEIGHT, NavScene

ImageArray = npt.NDArray[np.uint8]

CONTROL_DT = 0.05  # s per control step (Nav2's controller runs at 20 Hz by default)
N_SUBSTEPS = 5  # 10 ms physics steps per control step
CAMERA_HEIGHT = 0.45
CAMERA_FOVY = 60.0  # degrees; 75 degrees horizontally at 4:3
HISTORY_S = 30.0  # how far back pose_at can look
COLLISION_GAP_S = 0.5  # contacts closer together than this are one collision


def scene_xml(scene: NavScene, width: int, height: int) -> str:
    """The MJCF of ``scene`` with the base at the world origin (reset puts it at the start pose)."""
    b = scene.bounds
    cx, cy = (b.xmin + b.xmax) / 2, (b.ymin + b.ymax) / 2
    hx, hy = (b.xmax - b.xmin) / 2 + 1.0, (b.ymax - b.ymin) / 2 + 1.0
    geoms = []
    for k, w in enumerate(scene.walls):
        (x, y), (sx, sy) = w.centre, w.half_size
        geoms.append(
            f'<geom name="wall{k}" type="box" pos="{x:.4f} {y:.4f} {WALL_HEIGHT / 2}" '
            f'size="{sx:.4f} {sy:.4f} {WALL_HEIGHT / 2}" material="wall" contype="2" conaffinity="1"/>'
        )
    for k, o in enumerate(scene.objects):
        r, g, bl = COLOURS[o.colour]
        common = f'name="obj{k}" rgba="{r} {g} {bl} 1" contype="2" conaffinity="1"'
        if o.shape == "box":
            geoms.append(
                f'<geom {common} type="box" pos="{o.x:.4f} {o.y:.4f} 0.2" size="0.2 0.2 0.2" '
                f'euler="0 0 {o.yaw:.4f}"/>'
            )
        elif o.shape == "cylinder":
            geoms.append(f'<geom {common} type="cylinder" pos="{o.x:.4f} {o.y:.4f} 0.25" size="0.2 0.25"/>')
        else:
            geoms.append(f'<geom {common} type="sphere" pos="{o.x:.4f} {o.y:.4f} 0.22" size="0.22"/>')
    body = "\n    ".join(geoms)
    return f"""<mujoco model="qvla_nav_{scene.seed}">
  <compiler angle="radian"/>
  <option timestep="{CONTROL_DT / N_SUBSTEPS}" integrator="implicitfast"/>
  <visual>
    <global offwidth="{max(width, 64)}" offheight="{max(height, 64)}"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.62 0.58 0.52" rgb2="0.52 0.48 0.43"
      width="64" height="64"/>
    <material name="floor" texture="floor" texrepeat="{2 * hx:.2f} {2 * hy:.2f}"/>
    <material name="wall" rgba="0.85 0.84 0.80 1"/>
  </asset>
  <worldbody>
    <light directional="true" pos="0 0 5" dir="0.3 0.2 -1" castshadow="false" diffuse="0.4 0.4 0.4"/>
    <geom name="floor" type="plane" pos="{cx:.3f} {cy:.3f} 0" size="{hx:.3f} {hy:.3f} 0.1"
      material="floor" contype="0" conaffinity="0"/>
    {body}
    <body name="base" pos="0 0 0.15">
      <joint name="base_x" type="slide" axis="1 0 0" damping="0"/>
      <joint name="base_y" type="slide" axis="0 1 0" damping="0"/>
      <joint name="base_yaw" type="hinge" axis="0 0 1" damping="0"/>
      <geom name="base" type="cylinder" size="{BASE_RADIUS} 0.12" mass="20" rgba="0.2 0.2 0.25 1"
        contype="1" conaffinity="2" friction="0.2 0.005 0.0001"/>
      <camera name="front_camera" pos="0.1 0 {CAMERA_HEIGHT - 0.15}" xyaxes="0 -1 0 0 0 1"
        fovy="{CAMERA_FOVY}"/>
    </body>
  </worldbody>
  <actuator>
    <velocity name="vx" joint="base_x" kv="4000"/>
    <velocity name="vy" joint="base_y" kv="4000"/>
    <velocity name="wz" joint="base_yaw" kv="400"/>
  </actuator>
</mujoco>
"""


class NavSim:
    """The navigation scene of a seed, stepped one 50 ms control step at a time.

    Args:
        width, height: camera image size [px] (the robot YAML's camera size).
        limits: the base's hard velocity limits (commands beyond them are clipped, as a motor driver
            would); acceleration limits are the controller's job.

    Not thread-safe; see :mod:`qvla_core.sim.aloha_env` on EGL and threads.
    """

    def __init__(self, width: int = 640, height: int = 480, limits: Limits | None = None) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.limits = limits or Limits()
        self.model: Any = None
        self.data: Any = None
        self._renderer: Any = None
        self._scene: NavScene | None = None
        self._history: deque[tuple[float, float, float, float]] = deque()
        self._touching: set[int] = set()
        self._last_contact = -math.inf
        self.collisions = 0

    # ------------------------------------------------------------------ lifecycle
    def reset(self, seed: int | NavScene) -> NavScene:
        """Build the scene of ``seed`` (or a given scene) and put the base at its start pose, at rest;
        time restarts at 0."""
        mujoco = import_mujoco()
        scene = seed if isinstance(seed, NavScene) else generate_scene(seed)
        self.close()
        self.model = mujoco.MjModel.from_xml_string(scene_xml(scene, self.width, self.height))
        self.data = mujoco.MjData(self.model)
        self.data.qpos[:3] = scene.start
        mujoco.mj_forward(self.model, self.data)
        self._scene = scene
        self._base_geom = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "base")
        self._history = deque([(0.0, *scene.start)])
        self._touching = set()
        self._last_contact = -math.inf
        self.collisions = 0
        return scene

    def set_pose(self, pose: Pose2D) -> None:
        """Put the base at a world pose, at rest (tests and tools; a new episode uses reset)."""
        mujoco = import_mujoco()

        self.data.qpos[:3] = pose
        self.data.qvel[:] = 0.0
        mujoco.mj_forward(self.model, self.data)
        self._history.append((self.time, *self.pose()))

    def close(self) -> None:
        """Free the renderer (call from the thread that rendered)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    @property
    def scene(self) -> NavScene:
        if self._scene is None:
            raise RuntimeError("NavSim.reset(seed) has not been called")
        return self._scene

    @property
    def time(self) -> float:
        """Simulated seconds since reset."""
        return 0.0 if self.data is None else float(self.data.time)

    # ------------------------------------------------------------------ control
    def step(self, v: float, w: float) -> None:
        """One control step at forward speed ``v`` [m/s] and yaw rate ``w`` [rad/s] (base frame)."""
        mujoco = import_mujoco()

        if not (math.isfinite(v) and math.isfinite(w)):
            raise ValueError(f"velocity command must be finite, got v={v}, w={w}")
        if self.data is None:
            raise RuntimeError("NavSim.reset(seed) has not been called")
        v = min(max(v, -self.limits.max_speed), self.limits.max_speed)
        w = min(max(w, -self.limits.max_yaw_rate), self.limits.max_yaw_rate)
        for _ in range(N_SUBSTEPS):
            yaw = float(self.data.qpos[2])
            # The wheels cannot slide sideways: command zero lateral velocity in the base frame.
            self.data.ctrl[:] = (v * math.cos(yaw), v * math.sin(yaw), w)
            mujoco.mj_step(self.model, self.data)
            self._count_contacts()
        x, y, yaw = self.pose()
        self._history.append((self.time, x, y, yaw))
        while self._history and self._history[0][0] < self.time - HISTORY_S:
            self._history.popleft()

    def _count_contacts(self) -> None:
        touching: set[int] = set()
        for i in range(self.data.ncon):
            c = self.data.contact[i]
            if c.dist < 0.0 and self._base_geom in (c.geom1, c.geom2):
                touching.add(int(c.geom2 if c.geom1 == self._base_geom else c.geom1))
        if touching:
            # A collision is a contact after COLLISION_GAP_S free of any: the base bounces on a wall
            # for a few steps, and touching two wall pieces at a corner is still one collision.
            if self.time - self._last_contact > COLLISION_GAP_S:
                self.collisions += 1
            self._last_contact = self.time
        self._touching = touching

    def in_collision(self) -> bool:
        """True while the base touches a wall or an object."""
        return bool(self._touching)

    # ------------------------------------------------------------------ state
    def pose(self) -> Pose2D:
        """(x, y, yaw) of base_link in the world frame (ground truth)."""
        q = self.data.qpos
        return (float(q[0]), float(q[1]), wrap(float(q[2])))

    def odom_pose(self) -> Pose2D:
        """(x, y, yaw) of base_link in the odom frame (the start pose is the origin)."""
        p = relative(self.scene.start, [self.pose()])[0]
        return (float(p[0]), float(p[1]), float(p[2]))

    def twist(self) -> tuple[float, float, float]:
        """(vx, vy, wz) of base_link in its own frame [m/s, rad/s]."""
        vx, vy, wz = (float(a) for a in self.data.qvel[:3])
        yaw = float(self.data.qpos[2])
        c, s = math.cos(yaw), math.sin(yaw)
        return (c * vx + s * vy, -s * vx + c * vy, wz)

    def pose_at(self, stamp: float) -> Pose2D:
        """World pose at sim time ``stamp`` (interpolated; clamped to the recorded window)."""
        h = self._history
        if not h:
            return self.pose()
        if stamp <= h[0][0]:
            return h[0][1:]
        if stamp >= h[-1][0]:
            return h[-1][1:]
        times = [e[0] for e in h]
        k = int(np.searchsorted(times, stamp))
        (t0, x0, y0, a0), (t1, x1, y1, a1) = h[k - 1], h[k]
        s = (stamp - t0) / (t1 - t0)
        return (x0 + s * (x1 - x0), y0 + s * (y1 - y0), wrap(a0 + s * wrap(a1 - a0)))

    # ------------------------------------------------------------------ rendering
    def render(self) -> ImageArray:
        """The forward camera's (H, W, 3) uint8 RGB image."""
        mujoco = import_mujoco()

        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, height=self.height, width=self.width)
        self._renderer.update_scene(self.data, camera="front_camera")
        return np.asarray(self._renderer.render(), dtype=np.uint8).copy()
