"""The qvla policy node: a thin lifecycle node around qvla_core's PolicyEngine.

configure: load the robot YAML and the policy, create subscriptions, publishers, services.
activate: start producing commands.  deactivate: stop commanding and hold.
cleanup/shutdown: stop the inference worker and free the model (and its GPU memory).
"""

from __future__ import annotations

import gc
import sys
import threading
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from qvla_core.errors import QvlaError
from qvla_core.runtime.engine import EngineSink, PolicyEngine
from qvla_msgs.msg import PolicyStatus
from qvla_msgs.srv import SetInstruction
from qvla_ros.io import conversions as conv
from qvla_ros.io.outputs import RobotOutputs
from qvla_ros.io.parameters import POLICY_NODE_PARAMS, declare_all, validate_update
from qvla_ros.io.status import engine_status, unconfigured_status
from qvla_ros.nodes.policy_factory import make_policy
from qvla_ros.nodes.shutdown import prepare_exit, release_ros, stop_on_signals


class PolicyNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("qvla_policy", **kwargs)
        # A bad launch value: refuse to configure, stay up (ros2 lifecycle can retry after a fix).
        _, self._startup_faults = declare_all(self, POLICY_NODE_PARAMS)
        self.add_on_set_parameters_callback(validate_update)
        self._engine: PolicyEngine | None = None
        self._outputs: RobotOutputs | None = None
        self._lifecycle_label = "unconfigured"
        self._entities: list[Any] = []
        self._lock = threading.Lock()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._status_pub = self.create_publisher(PolicyStatus, "qvla/status", 10)
        rate = float(self.get_parameter("status_rate_hz").value)
        self._status_timer = self.create_timer(1.0 / rate, self._publish_status)
        # The one parameter that applies while running; the rest are read-only (see parameters.py).
        self.add_post_set_parameters_callback(self._after_set_parameters)
        if self.get_parameter("autostart").value:
            self._auto_timer = self.create_timer(0.0, self._autostart)

    def _after_set_parameters(self, params: list[Any]) -> None:
        for p in params:
            if p.name == "status_rate_hz":
                self.destroy_timer(self._status_timer)
                self._status_timer = self.create_timer(1.0 / float(p.value), self._publish_status)

    # ---------------------------------------------------------------- lifecycle
    def _autostart(self) -> None:
        self.destroy_timer(self._auto_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._startup_faults:
            for fault in self._startup_faults:
                self.get_logger().error(fault)
            return TransitionCallbackReturn.FAILURE
        p = {spec.name: self.get_parameter(spec.name).value for spec in POLICY_NODE_PARAMS}
        try:
            engine, outputs = self._build(p)
        except (QvlaError, OSError, ValueError, RuntimeError) as exc:
            self._fault_at_configure(str(exc))
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:
            # Any other library error (e.g. safetensors' SafetensorError): rclpy would swallow it and
            # return to unconfigured without a word; report it like the others and stay up.
            self._fault_at_configure(f"{type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._engine, self._outputs = engine, outputs
        self._create_entities(p)
        # What configure loaded (torch, transformers, the model: ~400k objects) leaves the cyclic
        # garbage collector: a full collection over it stops every thread of this process, the
        # watchdog's included, for 0.4-0.5 s on a busy 2-core machine, which made the stale-camera
        # hold come that much late. New objects are still collected; cleanup unfreezes.
        gc.collect()
        gc.freeze()
        self._lifecycle_label = "inactive"
        self.get_logger().info(
            f"configured: robot {engine.embodiment.name} ({p['robot_config']}), policy {p['policy']}, "
            f"{len(engine.embodiment.cameras)} cameras, horizon {engine.embodiment.horizon} at "
            f"{engine.embodiment.control_rate_hz:g} Hz, chunking {engine.config.ros.chunking.mode}"
            + (", DRY RUN" if p["dry_run"] else "")
        )
        return TransitionCallbackReturn.SUCCESS

    def _build(self, p: dict[str, Any]) -> tuple[PolicyEngine, RobotOutputs]:
        from qvla_core.robot_io import load_robot_config

        if not p["robot_config"]:
            raise ValueError("parameter robot_config is empty: give the path of a robot YAML")
        config = load_robot_config(p["robot_config"])
        policy = make_policy(p, config)
        outputs = RobotOutputs(self, config)
        engine = PolicyEngine(
            config,
            policy,
            clock=self._now,
            sink=_Sink(self, outputs),
            decode=conv.image_to_rgb,
            dry_run=bool(p["dry_run"]),
            max_instruction_length=int(p["max_instruction_length"]),
            command_lead_s=float(p["command_lead_s"]),
            # The watchdog runs on the engine's own thread, not as a timer of this node's executor:
            # a hold must not wait behind camera callbacks (or anything else the executor runs).
            watch_period_s=min(config.embodiment.dt, 0.02),
        )
        warm = engine.warm_up()
        if warm is not None:
            self.get_logger().info(f"warm-up inference: {warm * 1e3:.1f} ms")
        if p["initial_instruction"]:
            engine.set_instruction(p["initial_instruction"], reset=True)
        return engine, outputs

    def _fault_at_configure(self, text: str) -> None:
        self.get_logger().error(f"configure failed: {text}")
        self._configure_fault = text

    def _create_entities(self, p: dict[str, Any]) -> None:
        assert self._engine is not None
        engine = self._engine
        io = engine.config.ros
        image_qos: QoSProfile = (
            qos_profile_sensor_data if p["image_qos"] == "sensor_data" else QoSProfile(depth=5)
        )
        subs = self._entities
        for cam in io.cameras:
            # Raw: the bytes as they came off the wire, read without copying the pixels (see
            # conversions.camera_message_from_cdr); rclpy's deserialisation costs 1.5 ms a frame.
            subs.append(
                self.create_subscription(
                    CompressedImage if cam.compressed else Image,
                    cam.topic,
                    lambda raw, c=cam.camera, z=cam.compressed: self._on_image(c, z, raw),
                    image_qos,
                    raw=True,
                )
            )
        for src in io.joint_states:
            subs.append(
                self.create_subscription(
                    JointState,
                    src.topic,
                    lambda m, t=src.topic: self._on_joint_state(t, m),
                    qos_profile_sensor_data,
                )
            )
        subs.append(self.create_service(SetInstruction, "qvla/set_instruction", self._srv_set_instruction))
        subs.append(self.create_service(Trigger, "qvla/pause", self._srv(engine.pause, "paused")))
        subs.append(self.create_service(Trigger, "qvla/resume", self._srv(engine.resume, "resumed")))
        subs.append(
            self.create_service(
                Trigger, "qvla/stop", self._srv(engine.stop, "stopped (latched until resume)")
            )
        )
        subs.append(self.create_subscription(String, "qvla/instruction", self._on_instruction_topic, 10))

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self._engine is not None
        self._engine.activate()
        self._lifecycle_label = "active"
        self.get_logger().info(
            "active: commanding the robot" if not self._engine.dry_run else "active (dry run)"
        )
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._engine is not None:
            self._engine.deactivate()
        self._lifecycle_label = "inactive"
        self.get_logger().info("inactive: holding position, no commands")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._lifecycle_label = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._lifecycle_label = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def hold_before_exit(self, timeout_s: float = 0.5) -> None:
        """Deactivate (hold the measured position) and give the hold a moment to be acknowledged."""
        engine, outputs = self._engine, self._outputs
        if engine is None or outputs is None or not self.context.ok():
            return
        try:
            engine.deactivate()
            outputs.wait_delivered(timeout_s)
        except Exception as exc:  # shutting down anyway: say why the hold may not have arrived
            self.get_logger().warning(f"hold at exit may not have reached the robot: {exc}")

    def _release(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
        for entity in self._entities:
            self._destroy(entity)
        self._entities = []
        if self._outputs is not None:
            self._outputs.destroy()
        self._engine = self._outputs = None
        gc.unfreeze()  # the model's objects may be garbage now (nothing is commanded: a pause is fine)
        gc.collect()
        _empty_cuda_cache()

    def _destroy(self, entity: Any) -> None:
        for destroy in (
            self.destroy_subscription,
            self.destroy_service,
            self.destroy_timer,
            self.destroy_publisher,
        ):
            try:
                if destroy(entity):
                    return
            except (TypeError, AttributeError):
                continue

    # ---------------------------------------------------------------- inputs
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, camera: str, compressed: bool, raw: bytes) -> None:
        engine = self._engine
        if engine is None:
            return
        try:
            stamp, msg = conv.camera_message_from_cdr(raw, compressed)
        except ValueError as exc:
            engine.reject_input(camera, str(exc))
            return
        engine.on_camera(camera, stamp, msg)

    def _on_joint_state(self, topic: str, msg: JointState) -> None:
        engine = self._engine
        if engine is not None:
            engine.on_joint_state(
                topic,
                list(msg.name),
                np.asarray(msg.position, dtype=np.float64),
                conv.to_sec(msg.header.stamp),
            )

    def _srv_set_instruction(
        self, request: SetInstruction.Request, response: SetInstruction.Response
    ) -> SetInstruction.Response:
        assert self._engine is not None
        try:
            text = self._engine.set_instruction(request.instruction, reset=request.reset)
        except QvlaError as exc:
            response.success, response.message = False, str(exc)
            self.get_logger().warning(f"set_instruction rejected: {exc}")
            return response
        response.success, response.message = True, f"instruction set ({len(text)} characters)"
        self.get_logger().info(f"instruction: {text[:200]!r}")
        return response

    def _on_instruction_topic(self, msg: String) -> None:
        assert self._engine is not None
        try:
            self._engine.set_instruction(msg.data, reset=False)
        except QvlaError as exc:
            self.get_logger().warning(f"/qvla/instruction rejected: {exc}")

    def _srv(self, action: Any, done: str) -> Any:
        def handle(request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
            action()
            response.success, response.message = True, done
            self.get_logger().info(done)
            return response

        return handle

    # ---------------------------------------------------------------- status
    def _outputs_without_subscriber(self) -> list[str]:
        """Topic outputs (controllers, goal_pose, path) that nothing subscribes to, while commanding."""
        engine = self._engine
        if engine is None or engine.dry_run or self._lifecycle_label != "active":
            return []
        topics = [
            o.topic for o in engine.config.ros.outputs if o.type in ("joint_trajectory", "goal_pose", "path")
        ]
        return [t for t in topics if self.count_subscribers(t) == 0]

    def _publish_status(self) -> None:
        now = self.get_clock().now().to_msg()
        engine = self._engine
        if engine is None:
            fault = getattr(self, "_configure_fault", "") or "; ".join(self._startup_faults)
            msg, diag = unconfigured_status(now, self._lifecycle_label, fault)
        else:
            msg, diag = engine_status(now, self._lifecycle_label, engine, self._outputs_without_subscriber())
        self._status_pub.publish(msg)
        self._diag_pub.publish(DiagnosticArray(header=msg.header, status=[diag]))


class _Sink(EngineSink):
    """What the engine asks of the ROS side: publish commands and chunks."""

    def __init__(self, node: PolicyNode, outputs: RobotOutputs) -> None:
        self._node, self._outputs = node, outputs

    def _send(self, send: Any, *args: Any) -> None:
        # When the context is shut down from outside (rclpy.shutdown elsewhere) before main() stops the
        # inference worker, a chunk finishing in between cannot be published any more. That is
        # shutdown, not an inference fault. (Ctrl-C is handled by main(), which holds first.)
        try:
            send(*args)
        except Exception:
            if self._node.context.ok():
                raise

    def send_trajectory(self, start: float, positions: np.ndarray, dt: float) -> None:
        self._send(self._outputs.send_trajectory, start, positions, dt)

    def send_hold(self, positions: np.ndarray) -> None:
        self._send(self._outputs.send_hold, positions)

    def send_waypoints(self, waypoints: np.ndarray, stamp: float) -> None:
        self._send(self._outputs.send_waypoints, waypoints, stamp)

    def cancel_navigation(self) -> None:
        self._send(self._outputs.cancel_navigation)

    def publish_chunk(self, chunk: Any, first_due: float, instruction: str) -> None:
        self._send(self._outputs.publish_chunk, chunk, first_due, instruction)

    def log(self, level: str, text: str) -> None:
        # rclpy ties a severity to each call site, so each level needs its own call.
        logger = self._node.get_logger()
        if level == "error":
            logger.error(text)
        elif level == "warn":
            logger.warning(text)
        else:
            logger.info(text)


def _empty_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(args: list[str] | None = None) -> None:
    # Ctrl-C (launch sends SIGINT, then SIGTERM) must leave the robot holding, not running out its
    # last trajectory: with rclpy's own handler the context is gone before we could send the hold.
    # Here a signal only sets a flag; the loop wakes at least every 0.1 s of wall time (sim-time
    # timers stop with /clock) and sends the hold while the context still works.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop_on_signals()
    node = PolicyNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.hold_before_exit()
        node._release()
        node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        del node, executor  # they hold the node's handle until collected (see release_ros)
        release_ros()
        prepare_exit()


if __name__ == "__main__":
    main()
