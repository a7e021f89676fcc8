"""The training room: ``qvla-train`` fine-tunes a Qwen-VLA checkpoint on LeRobot datasets.

config.py (train.yaml, validated) -> session.py (datasets checked, stats, model, what trains,
frames and features caches, optimizer, resume) -> loop.py (steps, validation, checkpoints, Ctrl-C);
frames.py / sampler.py / augment.py feed the steps; checkpoints.py writes OUT atomically;
evaluate.py, logbook.py report. The loss itself stays in the policy
(:meth:`QwenVLAPolicy.condition` + :meth:`QwenVLAPolicy.action_loss`), so training and inference
share one preprocessing path. docs/training.md is the user's guide.
"""
