"""The executables a robot or a sim runs, one node a file.

``policy_node`` is the node a robot runs (lifecycle: camera and joint-state topics in, JointTrajectory
or Nav2 goals out); ``sim_node`` is the MuJoCo ALOHA that looks like the real robot; ``recorder_node``
writes one ROS 2 bag per demonstration episode. ``policy_factory`` and ``shutdown`` are what the nodes
share: which policy a ``policy`` parameter means, and how a signal becomes a clean stop.
"""
