"""What the nodes exchange with ROS: message conversions (the only module that knows message fields),
the robot's command outputs (JointTrajectory, goal_pose, Path, Nav2 actions), the typed parameter
tables the nodes declare, and the episode bag writer the recorder uses."""
