"""Damage to the decoded-frame caches a previous qvla-train run left: the reader's (``cache_dir``,
one .npy per video file) and the training frame cache (one .npy per field and a meta.json). A
damaged cache must be rebuilt (with a warning naming it), never fed to the trainer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .fuzz_dataset_cases import Case


def _in_glob(pattern: str, damage: Callable[[Path], None]) -> Callable[[Path], None]:
    """Apply ``damage`` to the first file matching ``pattern`` under the work directory."""

    def apply(work: Path) -> None:
        path = sorted(work.glob(pattern))[0]
        damage(path)

    return apply


def _file_cut(keep: float) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def _npy_reshaped(path: Path) -> None:
    array = np.load(path)
    np.save(path, array.reshape(array.shape[0], -1)[:, : max(1, array.size // array.shape[0] // 2)])


def cache_cases() -> list[Case]:
    """Damage to the caches a previous run left (applied to its work directory: ``reader-cache/`` is
    the reader's cache_dir, ``train-cache/`` the training frame cache)."""
    kind = "frame caches left by a previous run"
    reader, train = "reader-cache/*/*/*.npy", "train-cache/*/"
    damages: list[tuple[str, Callable[[Path], None]]] = [
        ("cut in half", _file_cut(0.5)),
        ("zero bytes", _file_cut(0.0)),
        ("of another shape", _npy_reshaped),
    ]
    cases = [
        Case(kind, f"reader cache .npy {what}", "reader-cache", _in_glob(reader, fn), (".npy",))
        for what, fn in damages
    ]
    for name in ("images.npy", "actions.npy", "state.npy", "task.npy"):
        cases += [
            Case(kind, f"training cache {name} {what}", "train-cache", _in_glob(train + name, fn), (name,))
            for what, fn in damages
        ]
    garbage = _in_glob(train + "meta.json", lambda p: p.write_bytes(b"\x00{"))
    cases.append(Case(kind, "training cache meta.json garbage", "train-cache", garbage, ("meta.json",)))
    deleted = _in_glob(train + "episode.npy", Path.unlink)
    cases.append(Case(kind, "training cache episode.npy deleted", "train-cache", deleted, ("episode.npy",)))
    return cases
