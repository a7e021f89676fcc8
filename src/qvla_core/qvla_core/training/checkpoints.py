"""The output directory of a run, written so that a crash never leaves a broken checkpoint as the latest.

Layout::

    OUT/
      latest -> checkpoints/step_0001000      symlink, replaced atomically after a complete write
      policy_config.json, norm_stats.json,    symlinks into latest/: OUT itself loads as a
      decoder.safetensors, backbone/,         checkpoint (QwenVLAPolicy.from_checkpoint(OUT, ...),
      [backbone_lora/]                        the policy node's checkpoint:=OUT)
      checkpoints/step_N/                     a complete qvla checkpoint + trainer_state.pt
                                              (optimizer, scheduler, step, RNG) + train_config.yaml
      training/                               log.jsonl, loss.png, the command and config of the run
      cache/                                  frames read once (the frame cache)

A step checkpoint is written into ``checkpoints/.step_N.partial`` and renamed when complete; only
then does ``latest`` move (``os.replace`` of a fresh symlink). A failed write (a full disk) removes
the partial directory and leaves ``latest`` where it was. A frozen backbone is hard-linked from the
input checkpoint (one set of bytes on disk for every step) or, across filesystems, referenced; a
LoRA run writes its adapter; a fully trained backbone is saved (``Session.backbone_mode``).
``cp -rL OUT/latest DEST`` copies the newest checkpoint as plain files.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from qvla_core.errors import TrainingError

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer_state.pt"
TRAIN_CONFIG = "train_config.yaml"
RUN_FILES = (TRAINER_STATE, TRAIN_CONFIG)  # in a step directory, not part of the model


def step_name(step: int) -> str:
    return f"step_{step:07d}"


def latest(out: Path) -> Path | None:
    """The newest complete step checkpoint of a run, or None."""
    link = out / LATEST
    if not link.is_symlink() and not link.is_dir():
        return None
    target = link.resolve()
    return target if target.is_dir() else None


def latest_step(out: Path) -> int | None:
    path = latest(out)
    if path is None:
        return None
    try:
        return int(path.name.removeprefix("step_"))
    except ValueError:
        return None


def check_out_dir(out: Path, resume: bool) -> None:
    """A fresh run needs an empty (or new) OUT; ``--resume`` needs a run there."""
    if resume:
        if latest(out) is None:
            raise TrainingError(f"--resume: {out} has no checkpoint to resume ({out / LATEST} is missing)")
        return
    if out.exists() and any(p.name != "cache" for p in out.iterdir()):
        hint = " (it holds a training run: add --resume to continue it)" if latest(out) else ""
        raise TrainingError(f"--out {out} is not empty{hint}; choose a new directory")


def _is_disk_full(exc: BaseException | None) -> bool:
    """ENOSPC anywhere in the exception's chain (the checkpoint writer wraps it)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _symlink(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` atomically (a fresh symlink renamed over the old one)."""
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def write_step(out: Path, step: int, write: Callable[[Path], None], keep: int, previous: int | None) -> Path:
    """Write a step checkpoint with ``write(directory)``, then move ``latest`` to it.

    On any failure the partial directory is removed and ``latest`` is unchanged; a full disk becomes
    a :class:`TrainingError` naming the checkpoint that is still the latest.
    """
    root = out / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    partial = root / f".{step_name(step)}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
        write(partial)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if _is_disk_full(exc):
            kept = (
                f"{out / LATEST} still points at {step_name(previous)}"
                if previous is not None
                else "no earlier checkpoint exists"
            )
            raise TrainingError(
                f"no space left on the device while saving {final}: the partial checkpoint was removed and "
                f"{kept}; free some space (or lower checkpoint.keep) and run again with --resume"
            ) from exc
        raise
    _symlink(f"{CHECKPOINTS}/{final.name}", out / LATEST)
    _link_root(out, final)
    _prune(root, keep, final)
    return final


def _link_root(out: Path, step_dir: Path) -> None:
    """OUT/<entry> -> latest/<entry> for every model entry of the checkpoint (created once)."""
    for entry in step_dir.iterdir():
        if entry.name in RUN_FILES:
            continue
        link = out / entry.name
        if not link.is_symlink():
            if link.exists():
                raise TrainingError(f"{link} exists and is not a link into {LATEST}/; remove it")
            os.symlink(f"{LATEST}/{entry.name}", link)


def _prune(root: Path, keep: int, newest: Path) -> None:
    steps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))
    for old in steps[: max(0, len(steps) - keep)]:
        if old != newest:
            shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------- resuming a run


def trainer_state(
    step: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    noise_gen: torch.Generator,
    aug_gen: torch.Generator,
) -> dict[str, Any]:
    """What ``trainer_state.pt`` holds besides the model: step, optimizer, schedule, random states."""
    state: dict[str, Any] = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "noise_gen": noise_gen.get_state(),
        "aug_gen": aug_gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_trainer_state(
    path: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    noise_gen: torch.Generator,
    aug_gen: torch.Generator,
) -> int:
    """Put :func:`trainer_state` of the step checkpoint ``path`` back; returns its step."""
    try:
        state = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise TrainingError(f"--resume: {path / TRAINER_STATE}: cannot restore: {exc}") from exc
    torch.set_rng_state(state["torch_rng"])
    noise_gen.set_state(state["noise_gen"])
    aug_gen.set_state(state["aug_gen"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])


def check_same_datasets(path: Path, training: dict[str, Any], now: Sequence[tuple[str, str]]) -> None:
    """A resumed run trains on the data it began with (its norm stats are baked into the weights).

    ``training``: the provenance in the checkpoint's ``policy_config.json``; ``now``: (path,
    fingerprint) of each ``--dataset`` of this command."""
    was = [(d.get("path"), d.get("fingerprint")) for d in training.get("datasets", [])]
    if was and was != list(now):
        raise TrainingError(
            f"--resume: the datasets changed since {path} was saved (then {was}, now {now}); "
            "resume with the same --dataset arguments, or start a new run"
        )
