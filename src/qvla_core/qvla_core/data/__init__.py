"""The data room: MCAP recordings, LeRobot v3.0 datasets, and the training samples read from them.

The format code here never imports the model; :class:`~qvla_core.data.sample.TrainingSample` is
what training consumes.
"""
