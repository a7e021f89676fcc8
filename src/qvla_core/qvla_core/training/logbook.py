"""The run's log: one JSON object per line (``training/log.jsonl``) and the loss curve (``loss.png``).

Lines carry ``kind``: ``train`` (step, loss averaged since the last line, learning rate, gradient
norm, steps/s, the share of the time spent waiting for data), ``validation`` (held-out loss and the
action error per channel in robot units), ``checkpoint`` and ``start``/``end``. A resumed run
appends to the same file; the plot reads it back, so it shows the whole run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

LOG_FILE = "log.jsonl"
PLOT_FILE = "loss.png"


class Logbook:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / LOG_FILE

    def write(self, kind: str, **fields: Any) -> None:
        entry = {"kind": kind, "time": round(time.time(), 3), **fields}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=_plain) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash
        return out

    def plot(self) -> Path | None:
        """Write loss.png (training and validation loss against the step; log scale)."""
        entries = self.read()
        train = [(e["step"], e["loss"]) for e in entries if e["kind"] == "train" and _finite(e.get("loss"))]
        val = [
            (e["step"], e["loss"]) for e in entries if e["kind"] == "validation" and _finite(e.get("loss"))
        ]
        if not train and not val:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        if train:
            ax.plot(*zip(*train, strict=True), label="training loss", lw=1)
        if val:
            ax.plot(*zip(*val, strict=True), "o-", label="validation loss (held-out episodes)", ms=3)
        ax.set_xlabel("step")
        ax.set_ylabel("flow-matching loss")
        if all(v > 0 for _, v in train + val):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = self.directory / PLOT_FILE
        tmp = path.with_name(".loss.tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(path)
        return path


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _plain(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot log {type(x).__name__}")
