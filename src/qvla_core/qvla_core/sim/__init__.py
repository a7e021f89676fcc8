"""Simulation pieces for running qvla without a robot.

* :mod:`qvla_core.sim.aloha_env` -- a MuJoCo bimanual ALOHA (the gym-aloha model) stepped at 50 Hz.
* :mod:`qvla_core.sim.trajectory_executor` -- executes joint trajectories the way ros2_control's
  joint_trajectory_controller does (pure numpy).
* :mod:`qvla_core.sim.expert` -- a scripted TransferCube expert that implements the ``Policy`` protocol.

Importing this package never needs gym-aloha or MuJoCo; they are imported lazily where used.
"""
