"""``qvla-prompt``: print the exact prompt text the policy feeds its backbone.

``--checkpoint DIR`` renders through that checkpoint's tokenizer chat template
and also reports the token count (each ``<|image_pad|>`` is expanded to the
image's token count before tokenisation). Without it, the built-in ChatML
template that every ``qvla-build-checkpoint`` checkpoint carries is used.
"""

from __future__ import annotations

import argparse
import sys

from qvla_core.embodiment import load_embodiment
from qvla_core.errors import QvlaError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qvla-prompt", description=__doc__.splitlines()[0])
    p.add_argument("--robot", required=True, metavar="YAML", help="robot YAML")
    p.add_argument("--instruction", required=True, help="task instruction")
    p.add_argument("--checkpoint", default=None, help="checkpoint directory whose chat template to use")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        embodiment = load_embodiment(args.robot)
        if args.checkpoint is None:
            from qvla_core.model.prompt import render_prompt
            from qvla_core.model.tokenizer import CHAT_TEMPLATE

            sys.stdout.write(render_prompt(CHAT_TEMPLATE, embodiment, args.instruction))
            return 0
        from qvla_core.model import checkpoint as ckpt
        from qvla_core.model.processor import QwenVLAProcessor

        root = ckpt.check_dir(args.checkpoint)
        cfg = ckpt.read_policy_config(root)
        processor = QwenVLAProcessor.from_pretrained(ckpt.backbone_dir(root, cfg), cfg.image_size)
        sys.stdout.write(processor.prompt_text(embodiment, args.instruction))
        ids = processor.prompt_ids(embodiment, args.instruction)
        print(
            f"\n[{len(ids)} tokens; {processor.spec.tokens_per_image} per image at "
            f"{processor.spec.height}x{processor.spec.width}]",
            file=sys.stderr,
        )
    except QvlaError as exc:
        print(f"qvla-prompt: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
