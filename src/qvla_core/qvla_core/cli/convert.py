"""``qvla-convert``: recorded ROS 2 bags (MCAP) -> one LeRobot v3.0 dataset.

Inputs: bags recorded by ``recorder_node`` (a recorder's output directory, or single episode bags:
they carry their robot YAML, task and episode boundaries), or bags of ``ros2 bag record -s mcap``
(a directory with metadata.yaml and .mcap files, or a .mcap file: one episode per bag, with
``--task`` and ``--robot-config``). Frames are resampled onto the robot YAML's control ticks with
the policy node's rules (see qvla_core.data.resample); any bad input stops with a message naming
the bag, episode and topic, and no dataset is left at ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qvla_core.errors import QvlaError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qvla-convert", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "bags", nargs="+", type=Path, help="bag directories, .mcap files, or a recorder's output dir"
    )
    p.add_argument("--out", required=True, type=Path, help="dataset directory to create")
    p.add_argument(
        "--robot-config", type=Path, help="robot YAML (default: the one recorder_node stored in the bags)"
    )
    p.add_argument("--task", help="task text for bags that do not carry one (plain ros2 bags)")
    p.add_argument("--only-success", action="store_true", help="leave out episodes recorded as unsuccessful")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out (and list) bad episodes and unreadable (truncated, corrupt) bags instead of stopping",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from qvla_core.data.convert import convert, summary
    from qvla_core.data.mcap_reader import find_bags

    try:
        bags = find_bags(args.bags, skip_bad=args.skip_bad)
        report = convert(
            bags,
            args.out,
            robot_config=args.robot_config,
            task=args.task,
            only_success=args.only_success,
            skip_bad=args.skip_bad,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except QvlaError as exc:
        print(f"qvla-convert: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qvla-convert: interrupted; no dataset was written", file=sys.stderr)
        return 130
    print(summary(report))
    for episode in report.episodes:
        if episode.skipped and episode.skipped != "not successful":
            print(f"qvla-convert: warning: left out {episode.source}: {episode.skipped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
