"""A checkpoint load walks the model room once (issue 17): each loading module is entered once.

An *entry* is a call into model/F.py from a frame of another model file (torch, transformers and
modules outside model/ are transparent; a resumed generator is not a new call). Before the loader
owned the whole path, ``from_checkpoint`` entered checkpoint.py 7 times and pretrained.py 4 times,
with the cross-checks written in between.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import qvla_core.model
from qvla_core.embodiment import Embodiment
from qvla_core.model.policy import QwenVLAPolicy

MODEL = str(Path(qvla_core.model.__file__).parent) + "/"
# The modules a load goes through. The helpers below them (device.py, action_decoder.py, dit_blocks.py,
# ...) may be entered more than once: a device guard around each load, a constructor per DiT block.
LOADING = (
    "policy.py",
    "loader.py",
    "checkpoint.py",
    "pretrained.py",
    "processor.py",
    "backbone.py",
    "saving.py",
)


def _file(frame: FrameType | None) -> str | None:
    name = frame.f_code.co_filename if frame is not None else ""
    return name[len(MODEL) :] if name.startswith(MODEL) else None


def entries_during(call: Any) -> list[tuple[str, str, str | None]]:
    """(file entered, function, from which model file) for every entry while ``call()`` runs."""
    seen: list[tuple[str, str, str | None]] = []
    running: dict[int, FrameType] = {}  # generator frames, kept alive so that their ids stay unique

    def tracer(frame: FrameType, event: str, arg: Any) -> None:
        here = _file(frame)
        if event != "call" or here is None:
            return
        if frame.f_code.co_flags & 0x20:  # CO_GENERATOR: its later 'call' events are resumptions
            if id(frame) in running:
                return
            running[id(frame)] = frame
        caller = frame.f_back
        while caller is not None and _file(caller) is None:
            caller = caller.f_back
        there = _file(caller)
        if there != here:
            seen.append((here, frame.f_code.co_name, there))

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(previous)
    return seen


def test_from_checkpoint_enters_each_loading_module_once(ckpt_dir: Path, aloha: Embodiment) -> None:
    QwenVLAPolicy.from_checkpoint(ckpt_dir, aloha)  # imports done, so that only the load is traced
    seen = entries_during(lambda: QwenVLAPolicy.from_checkpoint(ckpt_dir, aloha))
    counts = Counter(f for f, _, _ in seen)
    walk = "\n".join(f"  {f} {fn} <- {by}" for f, fn, by in seen)
    assert {f: counts[f] for f in LOADING} == dict.fromkeys(LOADING, 1), f"entries:\n{walk}"
    # The order of the loader's module docstring: config and files, backbone files, processor,
    # backbone weights, then the decoder's.
    order = [f for f, _, _ in seen if f in LOADING or f == "action_decoder.py"]
    assert order.index("checkpoint.py") < order.index("pretrained.py") < order.index("processor.py")
    assert order.index("processor.py") < order.index("backbone.py")
    assert len(order) - order[::-1].index("action_decoder.py") - 1 > order.index("backbone.py"), walk
