"""The vision-language backbone: a Hugging Face Qwen-VL model read from a local directory.

The backbone type is the ``model_type`` of the directory's ``config.json``:

* ``qwen3_5`` -- Qwen3.5 (Qwen-VLA's published backbone is Qwen3.5-4B),
* ``qwen3_vl`` -- Qwen3-VL,
* ``qwen2_5_vl`` -- Qwen2.5-VL.

Conditioning for the action decoder: the hidden states of one language-model
layer (default: the last, after the final norm) for every prompt token, image
tokens included, with the attention mask -> ``(cond (B, L, hidden), cond_mask (B, L) bool)``.
Only the inner multimodal model runs (no LM head, no KV cache).

The supported types and their transformers classes are listed in model/backbone_types.py; the
shapes of the random models qvla builds of each are in model/backbone_configs.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from qvla_core.errors import CheckpointError
from qvla_core.model.backbone_configs import full_config, tiny_config  # noqa: F401 (kept importable here)
from qvla_core.model.backbone_types import (  # noqa: F401 (kept importable here)
    BACKBONE_TYPES,
    BackboneType,
    config_class,
    model_class,
)
from qvla_core.model.device import (
    DTYPES,
    LOAD_ADVICE,
    Placement,
    oom_as_error,
    require_accelerate,
    resolve_placement,
)
from qvla_core.model.prefix_cache import (
    PrefixMemo,
    forward_with_shared_prefix,
    shared_prefix_length,
    supports_shared_prefix,
)
from qvla_core.model.pretrained import read_model_type


@contextmanager
def quiet_hf() -> Iterator[None]:
    """Hide transformers' progress bars (weight loading/saving) for the duration."""
    from transformers.utils import logging

    hf_logging: Any = logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def text_hidden_size(config: Any) -> int:
    return int(config.text_config.hidden_size)


def text_num_layers(config: Any) -> int:
    return int(config.text_config.num_hidden_layers)


class Backbone(nn.Module):
    """Wraps a Qwen-VL ``...ForConditionalGeneration``; returns conditioning tokens."""

    def __init__(self, model: Any, backbone_type: str, cond_layer: int = -1) -> None:
        super().__init__()
        self.model = model
        self.backbone_type = backbone_type
        n_layers = text_num_layers(model.config)
        if not -1 <= cond_layer <= n_layers:
            raise CheckpointError(
                f"conditioning layer {cond_layer} out of range: the backbone has {n_layers} layers "
                f"(use -1 for the last layer after the final norm, 0 for the embeddings, 1..{n_layers})"
            )
        self.cond_layer = cond_layer
        # The prompt's shared text prefix runs once per batch and, at inference, once per prompt
        # (model/prefix_cache.py); only with the last layer as conditioning and softmax-attention LMs.
        self.shared_prefix = cond_layer == -1 and supports_shared_prefix(model)
        self.prefix_memo = PrefixMemo()
        # A vision stem may ask the decoder to read only the tokens from the first image on
        # (model/vision_stem.py, StemConfig.cond); the vision towers' checkpoints read every token.
        self.cond_from_images = False

    @property
    def hidden_size(self) -> int:
        return text_hidden_size(self.model.config)

    @property
    def vision_config(self) -> Any:
        return self.model.config.vision_config

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        cond_layer: int = -1,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        attn_implementation: str = "sdpa",
        *,
        placement: Placement | None = None,
        adapter: Path | None = None,
        model_type: str | None = None,
    ) -> Backbone:
        """Load a backbone directory (a Hugging Face model directory), chosen by its ``model_type``.

        Weights go straight onto the device through ``device_map`` on every device (CPU included,
        so the path a GPU takes is the one every test runs). Missing or mis-shaped weights are an
        error, not a silent random init. ``adapter``: a peft LoRA directory applied and merged.
        ``model_type``: the directory's, when the caller has read it already (model/loader.py).
        """
        path = Path(path)
        if placement is None:
            name = next(k for k, v in DTYPES.items() if v == dtype)
            placement = resolve_placement(str(device), name)
        model_type = model_type or read_model_type(path)
        require_accelerate()
        klass = model_class(model_type)
        with oom_as_error(placement, f"loading the {model_type} backbone from {path}", LOAD_ADVICE):
            if _asks_for_stem(path):  # a conv stem in place of the vision tower (model/vision_stem.py)
                from qvla_core.model.vision_stem import load_stem_model

                model = load_stem_model(klass, path, placement.dtype, placement.device, attn_implementation)
                if adapter is not None:
                    model = merge_adapter(model, adapter)
                model.eval()
                backbone = cls(model, model_type, cond_layer)
                backbone.cond_from_images = _stem_cond(model) == "from_images"
                return backbone
            try:
                with quiet_hf():
                    model, info = klass.from_pretrained(
                        str(path),
                        dtype=placement.dtype,
                        attn_implementation=attn_implementation,
                        local_files_only=True,
                        device_map=placement.device_map(),
                        output_loading_info=True,
                    )
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # OSError, ValueError, safetensors' SafetensorError, ...
                raise CheckpointError(
                    f"{path}: cannot load the {model_type} backbone: {type(exc).__name__}: {exc}"
                ) from exc
            _check_loading_info(path, model, info)
            if adapter is not None:
                model = merge_adapter(model, adapter)
        model.eval()
        return cls(model, model_type, cond_layer)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        pixel_values: Tensor,
        image_grid_thw: Tensor,
        mm_token_type_ids: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """(cond (B, L, hidden), cond_mask (B, L) bool) for one batch of prompts + images."""
        prefix = (
            shared_prefix_length(input_ids, attention_mask, self.image_token_id) if self.shared_prefix else 0
        )
        if prefix > 0:
            hidden_states = forward_with_shared_prefix(
                self.model,
                input_ids=input_ids,
                attention_mask=attention_mask,
                pixel_values=pixel_values.to(self.model.dtype),
                image_grid_thw=image_grid_thw,
                mm_token_type_ids=mm_token_type_ids,
                prefix_length=prefix,
                memo=self.prefix_memo,
            )
            return hidden_states, self._cond_mask(input_ids, attention_mask)
        inner = self.model.model
        want_all = self.cond_layer != -1
        out = inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values.to(self.model.dtype),
            image_grid_thw=image_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            use_cache=False,
            output_hidden_states=want_all,
            return_dict=True,
        )
        hidden = out.hidden_states[self.cond_layer] if want_all else out.last_hidden_state
        return hidden, self._cond_mask(input_ids, attention_mask)

    def _cond_mask(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The tokens the decoder reads: every real token, or (``cond_from_images``) those from each
        row's first image token on."""
        mask = attention_mask.to(torch.bool)
        if not self.cond_from_images:
            return mask
        is_image = input_ids == self.image_token_id
        first = torch.where(is_image.any(dim=1), is_image.int().argmax(dim=1), 0)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return mask & (positions[None, :] >= first[:, None])


def _stem_cond(model: Any) -> str:
    from qvla_core.model.vision_stem import stem_config_of

    stem = stem_config_of(model.config)
    return stem.cond if stem is not None else "all"


def _asks_for_stem(path: Path) -> bool:
    """Whether ``path/config.json`` names a vision stem (absent in every Qwen release)."""
    import json

    from qvla_core.model.vision_stem import STEM_KEY

    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # read_model_type has already reported an unreadable config.json
    vision = data.get("vision_config") if isinstance(data, dict) else None
    return isinstance(vision, dict) and vision.get(STEM_KEY) is not None


def _check_loading_info(path: Path, model: Any, info: dict[str, Any]) -> None:
    """transformers fills weights missing from the files with random values and only warns: refuse."""
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    missing = sorted(k for k in info.get("missing_keys", ()) if k not in tied)
    mismatched = sorted(
        str(m[0]) if isinstance(m, tuple) else str(m) for m in info.get("mismatched_keys", ())
    )
    if missing or mismatched:
        raise CheckpointError(
            f"{path}: the weight files do not fit config.json: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, wrong shape {mismatched[:5]}"
        )


def merge_adapter(model: Any, adapter: Path) -> Any:
    """Apply a peft LoRA adapter directory to ``model`` and merge it into the weights (inference)."""
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{config_file}: missing file (backbone_adapter names {adapter})")
    try:
        from peft import PeftModel
    except ImportError:
        raise CheckpointError(
            f"{adapter}: applying a LoRA adapter needs peft: pip install peft==0.21.2"
        ) from None
    try:
        with quiet_hf():
            wrapped = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"{adapter}: cannot apply the LoRA adapter: {type(exc).__name__}: {exc}"
        ) from exc
    return wrapped.merge_and_unload()
