"""Loading a broken checkpoint raises CheckpointError with a clear message."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qvla_core.embodiment import Embodiment
from qvla_core.errors import CheckpointError
from qvla_core.model.policy import QwenVLAPolicy


def _edit_json(path: Path, fn: Callable[[dict[str, object]], None]) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _edit_decoder(path: Path, fn: Callable[[dict[str, torch.Tensor]], None]) -> None:
    weights = load_file(str(path))
    fn(weights)
    save_file(weights, str(path))


def _set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    def f(d: dict[str, object]) -> None:
        d[key] = value

    return f


def _set_decoder(key: str, value: int) -> Callable[[dict[str, object]], None]:
    def f(d: dict[str, object]) -> None:
        dec = d["decoder"]
        assert isinstance(dec, dict)
        dec[key] = value

    return f


def _shrink_stats(d: dict[str, object]) -> None:
    entry = d["panda7"]
    assert isinstance(entry, dict)
    entry["action"] = {"mode": "mean_std", "mean": [0.0] * 7, "std": [1.0] * 7}


CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("missing dir", shutil.rmtree, "checkpoint directory does not exist"),
    (
        "missing config",
        lambda root: (root / "policy_config.json").unlink(),
        "policy_config.json: missing file",
    ),
    (
        "missing decoder",
        lambda root: (root / "decoder.safetensors").unlink(),
        "decoder.safetensors: missing file",
    ),
    ("missing stats", lambda root: (root / "norm_stats.json").unlink(), "norm_stats.json: missing file"),
    ("missing backbone", lambda root: shutil.rmtree(root / "backbone"), "missing backbone directory"),
    ("bad json", lambda root: (root / "policy_config.json").write_text("{not json"), "not valid JSON"),
    (
        "bad stats json",
        lambda root: (root / "norm_stats.json").write_text("[1, 2"),
        "norm_stats.json: not valid JSON",
    ),
    (
        "unknown backbone",
        lambda root: _edit_json(root / "policy_config.json", _set("backbone_type", "llava")),
        "unknown backbone_type 'llava'",
    ),
    (
        "unknown model_type",
        lambda root: _edit_json(root / "backbone" / "config.json", _set("model_type", "gpt2")),
        "unknown backbone type 'gpt2'",
    ),
    (
        "format version",
        lambda root: _edit_json(root / "policy_config.json", _set("format_version", 99)),
        "format_version 99",
    ),
    (
        "decoder shape",
        lambda root: _edit_decoder(
            root / "decoder.safetensors", lambda w: w.update(action_pos=torch.zeros(10, 64))
        ),
        "shape mismatch for 'action_pos'",
    ),
    (
        "decoder missing key",
        lambda root: _edit_decoder(root / "decoder.safetensors", lambda w: w.pop("action_in.weight")),
        "missing keys ['action_in.weight']",
    ),
    (
        "decoder garbage",
        lambda root: (root / "decoder.safetensors").write_bytes(b"garbage"),
        "cannot read safetensors",
    ),
    (
        "cond_dim",
        lambda root: _edit_json(root / "policy_config.json", _set_decoder("cond_dim", 96)),
        "cond_dim 96 != backbone hidden size 64",
    ),
    (
        "stats width",
        lambda root: _edit_json(root / "norm_stats.json", _shrink_stats),
        "panda7.action has 7 values",
    ),
    (
        "horizon",
        lambda root: _edit_json(root / "policy_config.json", _set_decoder("max_horizon", 8)),
        "horizon 16 exceeds the decoder's max_horizon 8",
    ),
    (
        "action width",
        lambda root: _edit_json(root / "policy_config.json", _set_decoder("action_width", 6)),
        "8 action channels but the decoder's action_width is 6",
    ),
]


@pytest.mark.parametrize(("name", "breaker", "message"), CASES, ids=[c[0] for c in CASES])
def test_broken_checkpoint(
    name: str,
    breaker: Callable[[Path], None],
    message: str,
    *,
    ckpt_dir: Path,
    tmp_path: Path,
    arm7: Embodiment,
) -> None:
    root = tmp_path / "ck"
    shutil.copytree(ckpt_dir, root)
    breaker(root)
    with pytest.raises(CheckpointError) as err:
        QwenVLAPolicy.from_checkpoint(root, arm7)
    assert message in str(err.value), str(err.value)
