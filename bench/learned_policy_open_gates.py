"""Open the DiT decoder's cross-attention gates in a checkpoint before training (an experiment).

The decoder's blocks are adaLN-Zero: every residual branch is scaled by a gate that the zero-initialised
modulation layer makes 0 at the start. In the TransferCube runs the cross-attention gates (the only way
the image reaches the actions) stayed near 0 while the self-attention and MLP gates grew: the policy
learned from the joint state and never looked (docs/bench/learned_policy_probe.md). This sets the bias
of each block's cross-attention gate to ``--value`` (the gate is then that value at every flow time
until training moves it); run E of docs/bench/learned_policy.md started from such a checkpoint and was
the first to follow the cube.

Checkpoints that ``qvla-build-checkpoint --preset small_conv`` writes now start with these gates open
(``DecoderConfig.cross_gate_init``, with the pooled FiLM path beside it); this script remains for
opening them in checkpoints built before, as run E's was.

Run (from the repository root)::

    python bench/learned_policy_open_gates.py CHECKPOINT_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import load_file, save_file

from qvla_core.model.dit_blocks import set_cross_gate


def open_gates(checkpoint: Path, value: float) -> int:
    """Set every block's cross-attention gate bias to ``value`` in ``checkpoint/decoder.safetensors``."""
    path = checkpoint / "decoder.safetensors"
    if not path.is_file():
        raise SystemExit(f"{path}: missing file (a qvla checkpoint directory has decoder.safetensors)")
    weights = load_file(str(path))
    opened = 0
    for key, tensor in weights.items():
        if key.startswith("blocks.") and key.endswith(".modulation.bias"):
            set_cross_gate(tensor, value)
            opened += 1
    if opened == 0:
        raise SystemExit(f"{path}: no blocks.N.modulation.bias tensors (not a DiT decoder?)")
    save_file(weights, str(path), metadata={"format": "pt"})
    return opened


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (changed in place)")
    p.add_argument("--value", type=float, default=1.0, help="gate bias (default 1)")
    args = p.parse_args()
    print(f"opened {open_gates(args.checkpoint, args.value)} cross-attention gates in {args.checkpoint}")


if __name__ == "__main__":
    main()
