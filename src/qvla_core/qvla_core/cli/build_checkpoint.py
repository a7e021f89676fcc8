"""``qvla-build-checkpoint``: write a Qwen-VLA checkpoint directory (random, or on a pretrained VLM).

Examples::

    qvla-build-checkpoint --out /tmp/qvla-tiny --preset tiny --backbone qwen3_vl \\
        --robot config/robots/aloha.yaml --stats-from-limits
    qvla-build-checkpoint --out /data/qvla-full --preset full --backbone qwen3_5 \\
        --robot config/robots/aloha.yaml --stats-from-limits
    qvla-build-checkpoint --out /data/qvla-aloha --preset full --backbone-from /models/Qwen3.5-4B \\
        --robot config/robots/aloha.yaml --stats-from-limits

``--backbone-from DIR``: DIR is a Hugging Face model directory of Qwen3.5 / Qwen3-VL / Qwen2.5-VL
as published (docs/pretrained_backbones.md); the checkpoint keeps its tokenizer, chat template
and image settings, references DIR (``--link-backbone``: a ``backbone`` symlink to it,
``--copy-backbone``: a copy) and gets a new random decoder of ``--preset``'s shape, fitted to DIR's
hidden size and to the robots. ``qvla-train`` then fine-tunes it.

Norm stats for each ``--robot``: its YAML ``embodiment.normalization`` if present,
else (with ``--stats-from-limits``) quantile stats mapping the channel limits to
[-1, 1]. Nothing is downloaded; random checkpoints get a tokenizer trained locally.
``--no-weights`` writes the configs only and reports the parameter counts (meta device).
"""

from __future__ import annotations

import argparse
import json
import sys

from qvla_core.embodiment import load_embodiment
from qvla_core.errors import CheckpointError, QvlaError
from qvla_core.model.backbone_types import BACKBONE_TYPES
from qvla_core.model.builder import PRESETS, build_checkpoint


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, got {text!r}") from None
    return h, w


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qvla-build-checkpoint", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--preset", choices=PRESETS, default="tiny")
    p.add_argument(
        "--backbone", choices=BACKBONE_TYPES, default=None, help="random backbone type (default qwen3_vl)"
    )
    p.add_argument(
        "--backbone-from",
        metavar="DIR",
        default=None,
        help="a pretrained Qwen VLM directory (config.json, safetensors, tokenizer, preprocessor config)",
    )
    link = p.add_mutually_exclusive_group()
    link.add_argument(
        "--link-backbone", action="store_true", help="with --backbone-from: backbone/ is a symlink to DIR"
    )
    link.add_argument(
        "--copy-backbone", action="store_true", help="with --backbone-from: copy DIR's files into backbone/"
    )
    p.add_argument("--action-width", type=int, default=None, help="padded action channels of the decoder")
    p.add_argument("--max-horizon", type=int, default=None, help="longest action chunk the decoder takes")
    p.add_argument("--robot", action="append", default=[], metavar="YAML", help="robot YAML (repeatable)")
    p.add_argument(
        "--stats-from-limits",
        action="store_true",
        help="derive norm stats from channel limits for robots whose YAML has no normalization",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device", default="cpu", help="where the random weights are drawn (cuda makes --preset full quick)"
    )
    p.add_argument("--image-size", type=_size, default=(224, 224), metavar="HxW")
    p.add_argument("--instruction", action="append", default=[], help="extra tokenizer corpus text")
    p.add_argument(
        "--randomize-head",
        action="store_true",
        help="fill the decoder's zero-initialised layers with small random values (output then "
        "depends on the inputs; for tests and demos of an untrained model)",
    )
    p.add_argument(
        "--no-weights",
        action="store_true",
        help="write configs, tokenizer and stats only and report the parameter counts (shape inspection; "
        "such a directory does not load)",
    )
    return p


def tiny_random_command(
    out: str, robots: list[str], backbone: str = "qwen3_vl", seed: int | None = None
) -> list[str]:
    """The command line (for a subprocess) that builds a tiny random checkpoint for ``robots``
    with norm stats from their limits and a randomised head: what tests, benchmarks and the demo
    use when no trained checkpoint is given."""
    cmd = [sys.executable, "-m", "qvla_core.cli.build_checkpoint", "--out", out, "--preset", "tiny"]
    cmd += ["--backbone", backbone, "--stats-from-limits", "--randomize-head"]
    for robot in robots:
        cmd += ["--robot", robot]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    return cmd


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        embodiments = [load_embodiment(path) for path in args.robot]
        mode = "link" if args.link_backbone else "copy" if args.copy_backbone else "reference"
        if args.backbone_from is None and mode != "reference":
            raise CheckpointError("--link-backbone / --copy-backbone need --backbone-from DIR")
        info = build_checkpoint(
            args.out,
            preset=args.preset,
            backbone_type=args.backbone if args.backbone or args.backbone_from else "qwen3_vl",
            backbone_from=args.backbone_from,
            backbone_mode=mode,
            action_width=args.action_width,
            max_horizon=args.max_horizon,
            embodiments=embodiments,
            stats_from_limits=args.stats_from_limits,
            seed=args.seed,
            image_size=args.image_size,
            weights=not args.no_weights,
            instructions=args.instruction,
            randomize_head=args.randomize_head,
            device=args.device,
        )
    except QvlaError as exc:
        print(f"qvla-build-checkpoint: error: {exc}", file=sys.stderr)
        return 2
    for warning in info.get("warnings", []):
        print(f"qvla-build-checkpoint: warning: {warning}", file=sys.stderr)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
