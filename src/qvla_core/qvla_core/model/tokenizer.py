"""A small byte-level BPE tokenizer with Qwen's special tokens, trained locally.

Random-initialised checkpoints (tests, the demo, GPU benchmarks) cannot download
Qwen's real vocabulary, so the builder trains a tiny byte-level BPE on a small
corpus (the words of the robot YAMLs and typical instructions) with the
`tokenizers` library and wraps it as a ``Qwen2Tokenizer``. It carries the same
special tokens as Qwen's vocabulary (``<|im_start|>``, ``<|image_pad|>``, ...)
so the chat template and the VLM's image-token ids work exactly as with a real
Qwen checkpoint. Any text still tokenizes: byte-level BPE falls back to bytes.

The chat template below is the one every built checkpoint carries (and the one
``qvla-prompt`` uses without a checkpoint); a real Qwen checkpoint brings its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Qwen's special tokens, in Qwen's id order (they occupy ids 0..13 of a tiny vocab).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"

# ChatML as Qwen-VL renders it: string content or a list of {"type": "text"|"image"} parts.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'text' -%}"
    "{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

DEFAULT_CORPUS: tuple[str, ...] = (
    "You control a robot. Body: Control convention: Control rate: Hz. Horizon: actions per chunk.",
    "Each action is one row; the rows are spaced by the control period. Task: Predict the next actions.",
    "camera image frame now seconds ago newest oldest top low front wrist left right",
    "pick up the cube and place it in the bowl",
    "transfer the cube from the left arm to the right arm",
    "insert the peg into the socket",
    "open the drawer and put the sponge inside",
    "fold the towel, wipe the table, stack the red block on the blue block",
    "move to the kitchen and stop near the door; turn left at the hallway",
    "absolute joint positions in radians, gripper opening from 0 (closed) to 1 (open)",
    "end-effector position delta in meters, rotation in radians, base frame",
    "waypoints x forward y left yaw counter-clockwise in the robot frame",
    "a bimanual ALOHA: two 6-DoF ViperX-300 arms facing each other across a table",
    "a 7-DoF Franka arm with a parallel-jaw gripper, a mobile base with a lidar",
    "0 1 2 3 4 5 6 7 8 9 10 12 14 16 20 25 30 32 50 64 100 0.02 0.05 0.1 0.25 0.5",
)


def train_tokenizer(corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 512) -> Any:
    """Train a byte-level BPE on ``corpus`` and wrap it as a ``Qwen2Tokenizer``.

    Returns a transformers tokenizer with Qwen's special tokens and
    :data:`CHAT_TEMPLATE`; ``save_pretrained`` writes it into a checkpoint.
    """
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    qwen2_tokenizer: Any = transformers.Qwen2Tokenizer

    texts = [t for t in corpus if t.strip()] or list(DEFAULT_CORPUS)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    vocab: dict[str, int] = bpe.get_vocab()
    # BPE merges as (left, right) pairs in rank order, read from the trained model's JSON.
    import json

    dumped = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in dumped["merges"]]
    tok = qwen2_tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t != "<|endoftext|>"],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def corpus_from_texts(texts: Iterable[str]) -> list[str]:
    """The default corpus plus the given texts (robot YAML words, instructions)."""
    return [*DEFAULT_CORPUS, *(t for t in texts if t)]
