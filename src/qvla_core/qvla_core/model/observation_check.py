"""Does an observation fit an embodiment? The checks every ``QwenVLAPolicy.infer`` and training batch
start with (model/policy.py), apart from the model: cameras, image shapes and dtype, state, the
optional inpainting prefix and its weights, the stamp. Every refusal is an ObservationError that
says what was expected."""

from __future__ import annotations

import math

import numpy as np

from qvla_core.embodiment import Embodiment
from qvla_core.errors import ObservationError
from qvla_core.policy import Observation


def check_observation(embodiment: Embodiment, obs: Observation) -> None:
    """Raise ObservationError if ``obs`` does not fit ``embodiment``."""
    e = embodiment
    n_act = len(e.action)
    if not isinstance(obs.instruction, str) or not obs.instruction.strip():
        raise ObservationError("instruction must be a non-empty string")
    want = set(e.camera_names)
    got = set(obs.images)
    if got != want:
        missing, extra = sorted(want - got), sorted(got - want)
        raise ObservationError(
            f"camera images do not match embodiment '{e.name}': missing {missing}, unexpected {extra}"
        )
    for cam in e.cameras:
        img = obs.images[cam.name]
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            kind = getattr(img, "dtype", type(img).__name__)
            raise ObservationError(f"camera {cam.name}: images must be uint8 numpy arrays, got {kind}")
        shape = (cam.history.frames, cam.height, cam.width, 3)
        if img.shape != shape:
            raise ObservationError(
                f"camera {cam.name}: expected images shaped {shape} (frames, height, width, RGB), "
                f"got {img.shape}"
            )
    state = np.asarray(obs.state)
    if state.shape != (len(e.state),):
        raise ObservationError(f"state must have shape ({len(e.state)},), got {state.shape}")
    if not np.all(np.isfinite(state)):
        bad = [e.state_names[i] for i in np.flatnonzero(~np.isfinite(state))]
        raise ObservationError(f"state has non-finite values in {bad}")
    if obs.action_prefix is not None:
        p = np.asarray(obs.action_prefix)
        if p.ndim != 2 or p.shape[1] != n_act or not 0 < p.shape[0] <= e.horizon:
            raise ObservationError(
                f"action_prefix must have shape (k, {n_act}) with 1 <= k <= {e.horizon}, got {p.shape}"
            )
        if not np.all(np.isfinite(p)):
            raise ObservationError("action_prefix has non-finite values")
        if obs.prefix_weight is not None:
            w = np.asarray(obs.prefix_weight)
            if w.shape != (p.shape[0],) or not np.all(np.isfinite(w)) or np.any((w < 0) | (w > 1)):
                raise ObservationError(
                    f"prefix_weight must be {p.shape[0]} finite values in [0, 1], got shape {w.shape}"
                )
    elif obs.prefix_weight is not None:
        raise ObservationError("prefix_weight given without action_prefix")
    if not math.isfinite(float(obs.stamp)):
        raise ObservationError(f"stamp must be finite, got {obs.stamp}")
