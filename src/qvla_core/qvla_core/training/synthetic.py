"""An in-memory :class:`~qvla_core.data.sample.SampleSource` of made-up episodes.

For the throughput benchmark and the tests (no dataset on disk, nothing downloaded): each episode
is a smooth random walk of the state within the channel limits, random camera images (or a fixed
image), and actions given by ``action_fn(state) -> action`` (default: the next state, as a
position-controlled robot records). Statistics follow LeRobot's ``stats.json`` layout.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qvla_core.data.sample import SampleSource, TrainingSample
from qvla_core.embodiment import Embodiment
from qvla_core.policy import Observation

FloatArray = npt.NDArray[np.float32]
ActionFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


@dataclass
class _Episode:
    index: int
    images: dict[str, npt.NDArray[np.uint8]]  # camera -> (frames, H, W, 3)
    state: npt.NDArray[np.float32]  # (frames, n_state)
    action: npt.NDArray[np.float32]  # (frames, n_action)


class SyntheticSource:
    """``episodes`` episodes of ``frames`` control ticks each for ``embodiment``."""

    def __init__(
        self,
        embodiment: Embodiment,
        *,
        episodes: int = 4,
        frames: int = 20,
        seed: int = 0,
        fps: float | None = None,
        action_fn: ActionFn | None = None,
        instruction: str = "transfer the cube",
        static_images: bool = False,
        _episodes: Sequence[_Episode] | None = None,
    ) -> None:
        self._embodiment = embodiment
        self._fps = float(embodiment.control_rate_hz if fps is None else fps)
        self.instruction = instruction
        self._params = [episodes, frames, seed, self._fps, instruction, static_images, action_fn is None]
        if _episodes is not None:
            self._data = list(_episodes)
        else:
            rng = np.random.default_rng(seed)
            self._data = [self._episode(i, frames, rng, action_fn, static_images) for i in range(episodes)]
        self._index = [(k, t) for k, ep in enumerate(self._data) for t in range(len(ep.state))]

    def _episode(
        self, index: int, frames: int, rng: np.random.Generator, action_fn: ActionFn | None, static: bool
    ) -> _Episode:
        e = self._embodiment
        images = {}
        for cam in e.cameras:
            if static:
                one = np.full((cam.height, cam.width, 3), 128, dtype=np.uint8)
                images[cam.name] = np.broadcast_to(one, (frames, *one.shape))
            else:
                images[cam.name] = rng.integers(0, 256, (frames, cam.height, cam.width, 3), dtype=np.uint8)
        lo = np.array([c.lower for c in e.state], dtype=np.float32)
        hi = np.array([c.upper for c in e.state], dtype=np.float32)
        start = lo + (hi - lo) * rng.uniform(0.3, 0.7, size=len(lo))
        steps = rng.normal(0.0, 0.01, size=(frames, len(lo))) * (hi - lo)
        state = np.clip(start + np.cumsum(steps, axis=0), lo, hi).astype(np.float32)
        if action_fn is not None:
            action = np.stack([action_fn(s) for s in state]).astype(np.float32)
        else:
            nxt = np.concatenate([state[1:], state[-1:]])
            action = (
                nxt[:, : len(e.action)]
                if len(e.state) >= len(e.action)
                else np.zeros((frames, len(e.action)), np.float32)
            )
        return _Episode(index, images, state, action.astype(np.float32))

    @classmethod
    def from_arrays(
        cls,
        embodiment: Embodiment,
        episodes: Sequence[
            tuple[dict[str, npt.NDArray[np.uint8]], npt.NDArray[np.float32], npt.NDArray[np.float32]]
        ],
        *,
        instruction: str = "transfer the cube",
        fps: float | None = None,
    ) -> SyntheticSource:
        """A source of the given episodes: (camera -> (frames, H, W, 3) images, states, actions)."""
        data = [
            _Episode(i, dict(images), np.asarray(state, np.float32), np.asarray(action, np.float32))
            for i, (images, state, action) in enumerate(episodes)
        ]
        source = cls(embodiment, fps=fps, instruction=instruction, _episodes=data)
        source._params = ["arrays", hashlib.sha256(b"".join(ep.action.tobytes() for ep in data)).hexdigest()]
        return source

    # ----------------------------------------------------------------- SampleSource

    @property
    def embodiment(self) -> Embodiment:
        return self._embodiment

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def episodes(self) -> tuple[int, ...]:
        return tuple(ep.index for ep in self._data)

    @property
    def stats(self) -> dict[str, dict[str, list[float]]]:
        out = {}
        for key, attr in (("observation.state", "state"), ("action", "action")):
            x = np.concatenate([getattr(ep, attr) for ep in self._data]).astype(np.float64)
            q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
            out[key] = {
                "min": x.min(0).tolist(),
                "max": x.max(0).tolist(),
                "mean": x.mean(0).tolist(),
                "std": x.std(0).tolist(),
                "q01": q01.tolist(),
                "q99": q99.tolist(),
            }
        return out

    @property
    def fingerprint(self) -> str:
        text = json.dumps([self._params, self._embodiment.name, list(self.episodes)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> TrainingSample:
        k, t = self._index[index]
        ep = self._data[k]
        e = self._embodiment
        n = len(ep.state)
        images = {}
        for cam in e.cameras:
            stride = max(1, round(cam.history.stride_s * self._fps))
            ticks = [max(0, t - (cam.history.frames - 1 - i) * stride) for i in range(cam.history.frames)]
            images[cam.name] = np.ascontiguousarray(ep.images[cam.name][ticks])
        rows = np.arange(t, t + e.horizon)
        actions = ep.action[np.minimum(rows, n - 1)]
        obs = Observation(
            images=images, state=ep.state[t].copy(), instruction=self.instruction, stamp=t / self._fps
        )
        return TrainingSample(
            observation=obs,
            actions=np.ascontiguousarray(actions),
            action_is_pad=rows >= n,
            episode_index=ep.index,
            frame_index=t,
            embodiment=e.name,
        )

    def select_episodes(self, episodes: Sequence[int]) -> SampleSource:
        keep = set(episodes)
        chosen = [ep for ep in self._data if ep.index in keep]
        other = SyntheticSource(
            self._embodiment, fps=self._fps, instruction=self.instruction, _episodes=chosen
        )
        other._params = [*self._params, sorted(keep)]
        return other
