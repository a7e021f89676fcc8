"""Transport-free runtime core: images, frame history, joint state, sync, chunk scheduling, safety.

Everything here takes numpy arrays, floats (seconds on the robot clock) and plain
Python values; the ROS policy node converts its messages once and delegates here.
"""
