"""Which frames each training step sees: seeded, shuffled, and a pure function of (seed, step).

Each step takes its batch from one dataset (a batch holds one embodiment: one prompt layout, one
horizon), chosen at random in proportion to the datasets' sizes or to given shares (``data.mix``).
Within a dataset the frames are visited in a fresh random order every epoch. Everything derives
from ``numpy.random.default_rng`` seeded with ``[seed, ...]`` and the step number, so ``--resume``
continues with exactly the batches an uninterrupted run would have seen, without saving any sampler
state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


class StepSampler:
    """Yields, for steps ``start`` .. ``stop - 1``, a list of ``(part, row)`` pairs (one part each)."""

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        seed: int,
        start: int,
        stop: int,
        row_maps: Sequence[np.ndarray | None] | None = None,
        shares: Sequence[float] | None = None,
    ) -> None:
        """``row_maps[part]``: the rows an epoch of that part visits, repeats allowed (oversampling);
        None = each row once. ``sizes`` are then the maps' lengths. ``shares[part]``: the fraction of
        steps that part's batches take (normalised); None = in proportion to ``sizes``."""
        if not sizes or min(sizes) <= 0:
            raise ValueError(f"every frame set needs frames, got sizes {list(sizes)}")
        self.row_maps = list(row_maps) if row_maps is not None else [None] * len(sizes)
        sizes = [len(m) if m is not None else n for m, n in zip(self.row_maps, sizes, strict=True)]
        self.sizes = [int(n) for n in sizes]
        self.batch_size = batch_size
        self.seed = seed
        self.start = start
        self.stop = stop
        weights = np.asarray(self.sizes if shares is None else shares, dtype=np.float64)
        if len(weights) != len(self.sizes) or not np.all(weights > 0):
            raise ValueError(f"shares must be one positive number per frame set, got {shares}")
        self._cum = np.cumsum(weights / weights.sum())
        self._perm: dict[tuple[int, int], np.ndarray] = {}

    def part_of(self, step: int) -> int:
        if len(self.sizes) == 1:
            return 0
        u = np.random.default_rng([self.seed, 1, step]).random()
        part = int(np.searchsorted(self._cum, u, side="right"))
        return min(part, len(self.sizes) - 1)

    def _permutation(self, part: int, epoch: int) -> np.ndarray:
        key = (part, epoch)
        if key not in self._perm:
            if len(self._perm) > 4 * len(self.sizes):
                self._perm.clear()
            self._perm[key] = np.random.default_rng([self.seed, 2, part, epoch]).permutation(self.sizes[part])
        return self._perm[key]

    def rows(self, part: int, batch_number: int) -> list[int]:
        """The rows of ``part``'s ``batch_number``-th batch (0-based)."""
        n = self.sizes[part]
        pos = np.arange(batch_number * self.batch_size, (batch_number + 1) * self.batch_size)
        out = np.empty(len(pos), dtype=np.int64)
        for epoch in np.unique(pos // n):  # a batch may straddle two epochs (or more, if B > n)
            sel = pos // n == epoch
            out[sel] = self._permutation(part, int(epoch))[pos[sel] % n]
        row_map = self.row_maps[part]
        if row_map is not None:
            out = row_map[out]
        return [int(r) for r in out]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        counts = [0] * len(self.sizes)
        for step in range(self.start):  # how many batches each part gave before the start
            counts[self.part_of(step)] += 1
        for step in range(self.start, self.stop):
            part = self.part_of(step)
            yield [(part, row) for row in self.rows(part, counts[part])]
            counts[part] += 1
