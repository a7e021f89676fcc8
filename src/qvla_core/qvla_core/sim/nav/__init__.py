"""The navigation sim for the vln_nav embodiment (pure Python; MuJoCo is imported where used).

* :mod:`~qvla_core.sim.nav.scene` -- the world as data: walls, objects, the target, the start.
* :mod:`~qvla_core.sim.nav.generate` -- seeded random rooms, corridors, objects and an instruction.
* :mod:`~qvla_core.sim.nav.env` -- :class:`NavSim`: a MuJoCo planar base with a forward camera.
* :mod:`~qvla_core.sim.nav.controller` -- the local controller (what Nav2's controller does on a
  robot): follows waypoints under velocity and acceleration limits; frame helpers.
* :mod:`~qvla_core.sim.nav.planner` -- occupancy grid, shortest paths (the expert's and SPL's).
* :mod:`~qvla_core.sim.nav.expert` -- the privileged expert and the chance baseline (Policy plugins).
* :mod:`~qvla_core.sim.nav.metrics` -- SR, OSR, NE, TL, SPL, collisions.
* :mod:`~qvla_core.sim.nav.episode` -- run a policy on the sim without ROS.
"""
