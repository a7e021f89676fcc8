"""Strict per-embodiment normalisation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from qvla_core.embodiment import Embodiment, Normalization, NormStats
from qvla_core.errors import CheckpointError, NormalizationError
from qvla_core.model.loader import load_checkpoint
from qvla_core.model.normalization import Normalizer, resolve_normalization, stats_from_limits
from qvla_core.model.policy import QwenVLAPolicy


def test_modes_round_trip() -> None:
    x = torch.tensor([[0.0, 1.0, -2.0], [3.0, 4.0, 5.0]])
    ms = Normalizer(NormStats(mode="mean_std", mean=[1.0, 2.0, 3.0], std=[2.0, 4.0, 0.5]), 3, "t")
    np.testing.assert_allclose(ms.normalize(x)[0].numpy(), [-0.5, -0.25, -10.0])
    q = Normalizer(NormStats(mode="quantile", q01=[0.0, 0.0, -2.0], q99=[3.0, 4.0, 6.0]), 3, "t")
    np.testing.assert_allclose(q.normalize(x)[1].numpy(), [1.0, 1.0, 0.75])
    np.testing.assert_allclose(q.normalize(x)[0].numpy(), [-1.0, -0.5, -1.0])
    for n in (ms, q):
        np.testing.assert_allclose(n.unnormalize(n.normalize(x)).numpy(), x.numpy(), atol=1e-5)
    with pytest.raises(NormalizationError, match="3 values for 4 channels"):
        Normalizer(NormStats(mode="quantile", q01=[0.0] * 3, q99=[1.0] * 3), 4, "t")


def test_checkpoint_first_then_yaml_then_error(arm7: Embodiment) -> None:
    assert arm7.normalization is not None
    limits = stats_from_limits(arm7)
    from_ckpt = resolve_normalization(arm7, {"panda7": limits}, "ck/norm_stats.json")
    assert from_ckpt.source.startswith("ck/norm_stats.json") and from_ckpt.action.mode == "quantile"
    from_yaml = resolve_normalization(arm7, {"aloha": limits}, "ck/norm_stats.json")
    assert "robot YAML" in from_yaml.source and from_yaml.action.mode == "mean_std"
    bare = arm7.model_copy(update={"normalization": None})
    with pytest.raises(NormalizationError) as err:
        resolve_normalization(bare, {"aloha": limits}, "ck/norm_stats.json")
    msg = str(err.value)
    assert "panda7" in msg and "ck/norm_stats.json" in msg and "embodiment.normalization" in msg
    assert "['aloha']" in msg


def test_policy_without_stats_raises(ckpt_dir: Path, tmp_path: Path, arm7: Embodiment) -> None:
    copy = tmp_path / "ck"
    shutil.copytree(ckpt_dir, copy)
    (copy / "norm_stats.json").write_text(json.dumps({}), encoding="utf-8")
    bare = arm7.model_copy(update={"normalization": None})
    with pytest.raises(NormalizationError, match=r"norm_stats\.json.*embodiment\.normalization"):
        QwenVLAPolicy.from_checkpoint(copy, bare)
    # the YAML's stats are the fallback
    policy = QwenVLAPolicy.from_checkpoint(copy, arm7)
    assert "robot YAML" in policy.normalizer.source


def test_policy_uses_checkpoint_stats(ckpt_dir: Path, aloha: Embodiment) -> None:
    policy = QwenVLAPolicy.from_checkpoint(ckpt_dir, aloha)
    assert policy.normalizer.source.endswith("norm_stats.json[aloha]")
    stats = Normalization.model_validate(json.loads((ckpt_dir / "norm_stats.json").read_text())["aloha"])
    assert stats.action.q01 == [c.lower for c in aloha.action]


def test_checkpoint_refuses_an_embodiment_it_does_not_know(
    ckpt_dir: Path, tmp_path: Path, arm7: Embodiment
) -> None:
    """A checkpoint whose norm_stats.json names its robots drives only those, even where the YAML
    carries stats of its own; training (new_embodiment=True) is the way to teach it another."""
    copy = tmp_path / "ck"
    shutil.copytree(ckpt_dir, copy)
    stats = json.loads((copy / "norm_stats.json").read_text(encoding="utf-8"))
    del stats["panda7"]
    (copy / "norm_stats.json").write_text(json.dumps(stats), encoding="utf-8")
    known = sorted(stats)
    assert known and arm7.normalization is not None
    with pytest.raises(CheckpointError) as err:
        QwenVLAPolicy.from_checkpoint(copy, arm7)
    msg = str(err.value)
    assert "norm_stats.json" in msg and "'panda7'" in msg and all(repr(n) in msg for n in known)
    assert "qvla-train" in msg
    parts = load_checkpoint(copy, arm7, new_embodiment=True)
    assert "robot YAML" in parts.normalizer.source
