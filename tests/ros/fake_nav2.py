"""Nav2's action servers as Nav2 runs them, for integration tests over real DDS: real rclpy action
servers of the nav2_msgs actions (built from ../shared/ros2-extras, the Kilted definitions).

Like Nav2's SimpleActionServer (bt_navigator, controller_server): a goal runs until cancelled; a new
goal pre-empts the running one, which ends ABORTED; cancel requests are accepted; with ``reject``
set, goals are rejected (as by an inactive Nav2 server). Every goal, its arrival time and how it
ended are recorded.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node


@dataclass
class ServedGoal:
    action: str  # the action name, e.g. /navigate_through_poses
    goal_id: bytes
    goal: Any  # the action's Goal message
    arrival: float  # wall clock
    outcome: str = ""  # "" while running, then "preempted" (aborted by a newer goal) or "canceled"
    cancel_requested_at: float = 0.0


class FakeNav2:
    def __init__(self, actions: dict[str, Any]) -> None:
        """``actions``: action name -> nav2_msgs action type."""
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node("fake_nav2", context=self.context)
        self._lock = threading.Lock()
        self._types = dict(actions)
        self.goals: list[ServedGoal] = []
        self._current: dict[str, bytes] = {}
        self._closing = False
        self.reject = False  # True: goals are rejected, as an inactive Nav2 server does
        group = ReentrantCallbackGroup()
        self._servers = [
            ActionServer(
                self.node,
                action,
                name,
                execute_callback=lambda handle, n=name: self._execute(n, handle),
                goal_callback=lambda request: GoalResponse.REJECT if self.reject else GoalResponse.ACCEPT,
                handle_accepted_callback=lambda handle, n=name: self._accepted(n, handle),
                cancel_callback=lambda handle, n=name: self._cancel(n, handle),
                callback_group=group,
            )
            for name, action in actions.items()
        ]
        # Each running goal occupies a thread (its execute callback waits for its end).
        self._executor = MultiThreadedExecutor(num_threads=4 + 2 * len(actions), context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _accepted(self, name: str, handle: Any) -> None:
        goal_id = bytes(handle.goal_id.uuid)
        with self._lock:
            self.goals.append(ServedGoal(name, goal_id, handle.request, time.time()))
            self._current[name] = goal_id  # the running goal (if any) sees it is pre-empted
        handle.execute()

    def _find(self, goal_id: bytes) -> ServedGoal:
        return next(g for g in self.goals if g.goal_id == goal_id)

    def _cancel(self, name: str, handle: Any) -> CancelResponse:
        with self._lock:
            served = self._find(bytes(handle.goal_id.uuid))
            served.cancel_requested_at = served.cancel_requested_at or time.time()
        return CancelResponse.ACCEPT

    def _execute(self, name: str, handle: Any) -> Any:
        goal_id = bytes(handle.goal_id.uuid)
        while True:
            with self._lock:
                served = self._find(goal_id)
                preempted = self._current.get(name) != goal_id
                closing = self._closing
            if handle.is_cancel_requested:
                handle.canceled()
                outcome = "canceled"
                break
            if preempted or closing:
                handle.abort()
                outcome = "preempted" if preempted else "closing"
                break
            time.sleep(0.01)
        with self._lock:
            served.outcome = outcome
        return self._types[name].Result()

    # ------------------------------------------------------------------ what the tests read
    def received(self, name: str | None = None, since: float = 0.0) -> list[ServedGoal]:
        with self._lock:
            return [g for g in self.goals if (name is None or g.action == name) and g.arrival >= since]

    def running(self, name: str) -> list[ServedGoal]:
        with self._lock:
            return [g for g in self.goals if g.action == name and not g.outcome]

    def close(self) -> None:
        with self._lock:
            self._closing = True
        deadline = time.monotonic() + 2.0
        while self.running_any() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        for server in self._servers:
            server.destroy()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def running_any(self) -> bool:
        with self._lock:
            return any(not g.outcome for g in self.goals)
