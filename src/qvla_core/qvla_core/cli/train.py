"""``qvla-train``: fine-tune a Qwen-VLA checkpoint on LeRobot datasets.

Example (one robot)::

    qvla-train --checkpoint ckpt/base --dataset data/transfer_cube --robot config/robots/aloha.yaml \\
        --out runs/transfer_cube --config train.yaml --steps 3000

Several robots in one run: one ``--robot`` per ``--dataset`` (same order). The output directory is
a qvla checkpoint the policy node loads as it is (``checkpoint:=OUT``); ``--resume`` continues a run
from its latest checkpoint (the same arguments, optionally a larger ``--steps``). Settings come from
``--config`` (see docs/training.md), then ``--set KEY=VALUE`` (e.g. ``--set schedule.lr=1e-4``),
then the shortcut flags. Ctrl-C saves a checkpoint, then exits with status 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from qvla_core.data.sample import SampleSource
from qvla_core.embodiment import Embodiment, load_embodiment
from qvla_core.errors import QvlaError, TrainingError
from qvla_core.training.config import load_train_config
from qvla_core.training.datasets import DatasetSpec
from qvla_core.training.loop import train
from qvla_core.training.session import RunSpec

SHORTCUTS = (
    ("steps", "schedule.steps", int),
    ("batch_size", "schedule.batch_size", int),
    ("lr", "schedule.lr", float),
    ("train", "train", str),
    ("device", "device", str),
    ("dtype", "dtype", str),
    ("workers", "data.workers", int),
    ("seed", "seed", int),
    ("threads", "threads", int),
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qvla-train",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, type=Path, metavar="IN", help="checkpoint to start from")
    p.add_argument(
        "--dataset", required=True, action="append", type=Path, metavar="DIR", help="LeRobot v3.0 dataset"
    )
    p.add_argument(
        "--robot",
        required=True,
        action="append",
        type=Path,
        metavar="YAML",
        help="robot YAML of each --dataset",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory (a checkpoint + the run's logs)")
    p.add_argument("--config", type=Path, metavar="YAML", help="training config (docs/training.md)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--steps", type=int, help="schedule.steps")
    p.add_argument("--batch-size", type=int, help="schedule.batch_size")
    p.add_argument("--lr", type=float, help="schedule.lr")
    p.add_argument("--train", choices=("decoder", "lora", "all"), help="what trains")
    p.add_argument("--device", help="cpu or cuda[:N]")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), help="autocast precision")
    p.add_argument("--workers", type=int, help="data.workers")
    p.add_argument("--seed", type=int, help="seed")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument(
        "--cache-dir", type=Path, help="where decoded and resized frames are cached (default OUT/cache)"
    )
    p.add_argument(
        "--camera-map",
        action="append",
        default=[],
        metavar="KEY=CAMERA",
        help="dataset video key -> robot YAML camera (repeatable; default: the reader's matching)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    return p


def overrides(args: argparse.Namespace) -> list[str]:
    out = list(args.set)
    for attr, key, _ in SHORTCUTS:
        value = getattr(args, attr)
        if value is not None:
            out.append(f"{key}={value}")
    return out


def camera_map(items: list[str]) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        key, sep, cam = item.partition("=")
        if not sep or not key or not cam:
            raise TrainingError(f"--camera-map: expected KEY=CAMERA, got {item!r}")
        out[key] = cam
    return out


def open_dataset(
    root: Path, embodiment: Embodiment, cameras: dict[str, str] | None, cache: Path | None
) -> SampleSource:
    """The LeRobot v3.0 reader of the data room."""
    try:
        from qvla_core.data.dataset import LeRobotDataset
    except ImportError as exc:
        raise TrainingError(f"--dataset {root}: the LeRobot reader is not available ({exc})") from exc
    source: SampleSource = LeRobotDataset(root, embodiment, camera_map=cameras, cache_dir=cache)
    return source


def dataset_specs(args: argparse.Namespace) -> list[DatasetSpec]:
    robots = list(args.robot)
    if len(robots) == 1 and len(args.dataset) > 1:
        robots = robots * len(args.dataset)
    if len(robots) != len(args.dataset):
        raise TrainingError(
            f"{len(args.dataset)} --dataset but {len(robots)} --robot: give one robot YAML per dataset "
            "(same order), or one for all"
        )
    cameras = camera_map(args.camera_map)
    cache = args.cache_dir or args.out / "cache"  # the reader's decoded frames live there too
    specs = []
    for root, robot in zip(args.dataset, robots, strict=True):
        e = load_embodiment(robot)
        specs.append(DatasetSpec(open_dataset(root, e, cameras, cache), e, str(root)))
    return specs


class TqdmHandler(logging.Handler):
    """Log lines that do not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]

        tqdm.write(self.format(record), file=sys.stderr)


def setup_logging() -> None:
    logger = logging.getLogger("qvla")
    if not any(isinstance(h, TqdmHandler) for h in logger.handlers):
        handler = TqdmHandler()
        handler.setFormatter(logging.Formatter("qvla-train: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # `import launch` (ROS 2) installs a logger class whose loggers do not propagate; a qvla.* logger
    # created after it in the same process would never reach this handler. Ours always propagate.
    for name, child in logging.root.manager.loggerDict.items():
        if (name == "qvla" or name.startswith("qvla.")) and isinstance(child, logging.Logger):
            child.propagate = True


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging()
    command = ["qvla-train", *(sys.argv[1:] if argv is None else argv)]
    try:
        config = load_train_config(args.config, overrides(args))
        run = RunSpec(
            checkpoint=args.checkpoint,
            datasets=dataset_specs(args),
            out=args.out,
            config=config,
            resume=args.resume,
            command=command,
            cache_dir=args.cache_dir,
            progress=not args.no_progress,
        )
        result = train(run)
    except QvlaError as exc:
        print(f"qvla-train: error: {exc}", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {
        "out": str(result.out),
        "step": result.step,
        "minutes": round(result.seconds / 60, 2),
        "s_per_step": round(result.seconds_per_step, 4),
        "data_wait_share": round(result.data_wait_share, 4),
    }
    if result.interrupted:
        print(
            f"qvla-train: interrupted; saved {args.out} at step {result.step} (continue with --resume)",
            file=sys.stderr,
        )
        return 130
    where = Path(result.out).resolve()
    print(f"qvla-train: done: {summary}; the policy node loads it with checkpoint:={where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
