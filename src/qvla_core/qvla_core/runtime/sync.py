"""Approximate-time assembly of one observation from several stamped inputs, pulled on demand.

Like message_filters' ApproximateTimeSynchronizer, each input keeps a queue of its last
``queue_size`` messages and a set takes one message per input whose stamps lie within
``slop_s`` of each other. Unlike it, nothing is pushed to a callback: the inference
worker calls :meth:`ApproximateTimeSync.latest` when it is ready and gets the freshest
complete set (the one whose *oldest* member is newest, each member the newest message
that fits), or None. Sets are not consumed: pulling twice without new messages gives
the same set again, so the caller compares ``SyncedSet.stamp`` to skip repeats.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from qvla_core.errors import ObservationError

P = TypeVar("P")


@dataclass(frozen=True)
class SyncedSet(Generic[P]):
    """One message per input. ``stamp`` is the newest member stamp (the observation stamp)."""

    stamp: float
    oldest_stamp: float
    stamps: dict[str, float]
    payloads: dict[str, P]

    @property
    def spread(self) -> float:
        return self.stamp - self.oldest_stamp


class ApproximateTimeSync(Generic[P]):
    """Per-input stamp queues; the freshest set within ``slop_s`` and younger than ``max_age_s``."""

    def __init__(
        self,
        inputs: list[str],
        slop_s: float,
        max_age_s: float,
        queue_size: int,
        future_tolerance_s: float = 0.05,
    ) -> None:
        if not inputs or len(set(inputs)) != len(inputs):
            raise ValueError(f"inputs must be non-empty and distinct, got {inputs}")
        if not (slop_s >= 0 and max_age_s > 0 and queue_size >= 1 and future_tolerance_s >= 0):
            raise ValueError(
                f"need slop_s >= 0, max_age_s > 0, queue_size >= 1, future_tolerance_s >= 0; got "
                f"{slop_s}, {max_age_s}, {queue_size}, {future_tolerance_s}"
            )
        self.inputs = tuple(inputs)
        self.slop_s = slop_s
        self.max_age_s = max_age_s
        self.future_tolerance_s = future_tolerance_s
        self._stamps: dict[str, deque[float]] = {n: deque(maxlen=queue_size) for n in inputs}
        self._payloads: dict[str, deque[P]] = {n: deque(maxlen=queue_size) for n in inputs}

    def clear(self) -> None:
        for name in self.inputs:
            self._stamps[name].clear()
            self._payloads[name].clear()

    def add(self, name: str, stamp: float, payload: P, now: float) -> None:
        """Queue one message. A repeated newest stamp replaces that message.

        Raises ObservationError for an unknown input, a non-finite stamp, a stamp more than
        ``future_tolerance_s`` ahead of ``now`` (clock skew or a bad driver), or a stamp
        older than the newest one queued on this input (out of order).
        """
        self.check(name, stamp, now)
        stamps = self._stamps[name]
        if stamps and stamp == stamps[-1]:
            self._payloads[name][-1] = payload
            return
        stamps.append(stamp)
        self._payloads[name].append(payload)

    def check(self, name: str, stamp: float, now: float) -> None:
        """What :meth:`add` would reject, without queueing: callers that keep their own state from
        the same message (the joint-state merger) check first, so a bad stamp changes nothing."""
        stamps = self._stamps.get(name)
        if stamps is None:
            raise ObservationError(f"sync: unknown input {name} (inputs: {list(self.inputs)})")
        if not math.isfinite(stamp):
            raise ObservationError(f"sync: {name}: stamp is not finite ({stamp})")
        if stamp > now + self.future_tolerance_s:
            raise ObservationError(
                f"sync: {name}: stamp {stamp:.6f} is {stamp - now:.3f} s in the future "
                f"(tolerance {self.future_tolerance_s} s); are the clocks synchronised?"
            )
        if stamps:
            newest = stamps[-1]
            if stamp < newest:
                raise ObservationError(
                    f"sync: {name}: stamp {stamp:.6f} is older than the newest queued "
                    f"{newest:.6f} (out of order)"
                )

    def latest(self, now: float) -> SyncedSet[P] | None:
        """The freshest complete set, or None if no set fits within slop and max age.

        Fixpoint search with one cursor per input that only moves backwards: with an upper
        bound U (initially +inf), take each input's newest stamp <= U; if they span at most
        slop, that set is optimal; otherwise no valid set can have its oldest member after
        the current minimum m, so U becomes m + slop. Each round moves at least one cursor,
        so a call costs at most inputs * queue cursor steps (typically one round).
        """
        queues = [self._stamps[n] for n in self.inputs]
        cursor = [len(q) - 1 for q in queues]
        if min(cursor) < 0:
            return None
        oldest_allowed = now - self.max_age_s
        bound = math.inf
        while True:
            lo = math.inf
            hi = -math.inf
            for i, q in enumerate(queues):
                c = cursor[i]
                while c >= 0 and q[c] > bound:
                    c -= 1
                if c < 0:
                    return None
                cursor[i] = c
                s = q[c]
                lo = min(lo, s)
                hi = max(hi, s)
            if lo < oldest_allowed:
                return None
            if hi - lo <= self.slop_s:
                break
            bound = lo + self.slop_s
        stamps = {n: queues[i][cursor[i]] for i, n in enumerate(self.inputs)}
        payloads = {n: self._payloads[n][cursor[i]] for i, n in enumerate(self.inputs)}
        return SyncedSet(stamp=hi, oldest_stamp=lo, stamps=stamps, payloads=payloads)
