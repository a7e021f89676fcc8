"""The embodiment-aware prompt: which robot, how it is controlled, what to do.

Qwen-VLA switches embodiments by prompt alone (one shared padded action space,
no per-robot heads); its literal prompt is not public. Ours is two chat messages:

* **system** -- the embodiment: name, body, control convention, control rate,
  horizon (actions and seconds), and the action / state channel names in order;
* **user** -- one labelled image per camera and frame (oldest frame first,
  cameras in the embodiment's order), e.g. ``Camera cam_high, 0.2 s ago:``
  followed by the image, ``Camera cam_high, now:`` ..., then ``Task: <instruction>``.

:func:`build_messages` returns them in the Hugging Face content-list format
(``{"type": "image"}`` / ``{"type": "text"}`` parts), which Qwen-VL chat templates
render as ``<|vision_start|><|image_pad|><|vision_end|>``; the processor then
expands each ``<|image_pad|>`` to the image's token count. The real templates of the three releases
render it so (tests/model/qwen_templates.py holds them): Qwen2.5-VL's and Qwen3-VL's ChatML with
content lists, and Qwen3.5's, which also trims each message and opens the answer with a thinking
block; ``enable_thinking=False`` makes that block the empty ``<think>\n\n</think>\n\n`` (the
policy answers with actions, not a chain of thought; templates without the flag ignore it).
"""

from __future__ import annotations

from typing import Any

from qvla_core.embodiment import Embodiment

# Passed to every chat template (see the module docstring).
TEMPLATE_FLAGS: dict[str, Any] = {"enable_thinking": False}


def _num(x: float) -> str:
    return f"{x:g}"


def frame_label(camera: str, age_s: float) -> str:
    """The text before one image: camera name and how old the frame is."""
    when = "now" if age_s <= 0.0 else f"{_num(round(age_s, 4))} s ago"
    return f"Camera {camera}, {when}:"


def system_text(embodiment: Embodiment) -> str:
    """The system message: every embodiment field the policy is conditioned on."""
    e = embodiment
    lines = [
        "You control a robot. Predict its next actions from the camera images and the task.",
        f"Robot: {e.name}",
        f"Body: {e.body}",
        f"Control convention: {e.control_convention}",
        f"Control rate: {_num(e.control_rate_hz)} Hz (one action every {_num(round(e.dt, 6))} s)",
        f"Horizon: {e.horizon} actions per chunk ({_num(round(e.horizon * e.dt, 6))} s)",
        f"Action channels ({len(e.action)}): {', '.join(e.action_names)}",
    ]
    if e.state:
        lines.append(f"State channels ({len(e.state)}): {', '.join(e.state_names)}")
    else:
        lines.append("State channels (0): none")
    return "\n".join(lines)


def build_messages(embodiment: Embodiment, instruction: str) -> list[dict[str, Any]]:
    """Chat messages (system + user with labelled images) for one observation."""
    parts: list[dict[str, Any]] = []
    for cam in embodiment.cameras:
        frames = cam.history.frames
        for i in range(frames):  # oldest first, as Observation.images
            age = (frames - 1 - i) * cam.history.stride_s
            parts.append({"type": "text", "text": frame_label(cam.name, age) + "\n"})
            parts.append({"type": "image"})
            parts.append({"type": "text", "text": "\n"})
    parts.append({"type": "text", "text": f"Task: {instruction.strip()}"})
    return [
        {"role": "system", "content": system_text(embodiment)},
        {"role": "user", "content": parts},
    ]


def num_images(embodiment: Embodiment) -> int:
    return sum(c.history.frames for c in embodiment.cameras)


def render_prompt(tokenizer_or_template: Any, embodiment: Embodiment, instruction: str) -> str:
    """The prompt text through a chat template (a tokenizer, or a Jinja template string).

    Each image appears once as ``<|vision_start|><|image_pad|><|vision_end|>``;
    the processor expands the pad token to the image's token count.
    """
    messages = build_messages(embodiment, instruction)
    if isinstance(tokenizer_or_template, str):
        return _render_template(tokenizer_or_template, messages)
    text: str = tokenizer_or_template.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **TEMPLATE_FLAGS
    )
    return text


def _render_template(template: str, messages: list[dict[str, Any]]) -> str:
    """Render a template string the way transformers' apply_chat_template compiles it."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.globals["raise_exception"] = raise_exception
    text: str = env.from_string(template).render(
        messages=messages, add_generation_prompt=True, **TEMPLATE_FLAGS
    )
    return text
