"""The training config: defaults are valid, bad keys and values are named with the file, overrides
go through the same validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qvla_core.errors import ConfigError
from qvla_core.training.config import TrainConfig, apply_overrides, dump_train_config, load_train_config


def test_defaults_and_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "train.yaml"
    empty.write_text("", encoding="utf-8")
    assert load_train_config(empty) == load_train_config(None) == TrainConfig()
    cfg = TrainConfig()
    assert cfg.train == "decoder" and cfg.dtype == "auto" and cfg.data.workers == 0
    assert not cfg.augment.enabled


def test_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(
        yaml.safe_dump({"train": "lora", "schedule": {"steps": 50, "lr": 1e-3}, "augment": {"shift": 0.05}}),
        encoding="utf-8",
    )
    cfg = load_train_config(path, ["schedule.lr=2e-4", "validation.episodes=[0, 3]", "threads=1"])
    assert cfg.train == "lora" and cfg.schedule.steps == 50 and cfg.schedule.lr == 2e-4
    assert cfg.validation.episodes == [0, 3] and cfg.threads == 1 and cfg.augment.enabled
    # the dump reads back to the same config
    again = tmp_path / "again.yaml"
    again.write_text(dump_train_config(cfg), encoding="utf-8")
    assert load_train_config(again) == cfg


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("train: everything\n", "train: Input should be 'decoder', 'lora' or 'all' (got 'everything')"),
        ("schedule: {lr: -1}\n", "schedule.lr: Input should be greater than 0 (got -1)"),
        ("schedule: {betas: [0.9, 1.5]}\n", "schedule: Value error, betas must be in [0, 1)"),
        ("schedule: {stpes: 10}\n", "schedule.stpes: Extra inputs are not permitted (got 10)"),
        ("validation: {episodes: [1, 1]}\n", "episodes must be distinct indexes >= 0"),
        ("device: gpu\n", "device: String should match pattern"),
        ("augment: {crop_scale: 0.2}\n", "augment.crop_scale: Input should be greater than 0.5 (got 0.2)"),
    ],
)
def test_bad_values_name_file_key_value(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_bad_overrides() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["schedule.lr"])
    with pytest.raises(ConfigError, match=r"schedule\.lr: Input should be greater than 0 \(got 0\)"):
        load_train_config(None, ["schedule.lr=0"])
    with pytest.raises(ConfigError, match="train is not a section"):
        apply_overrides({"train": "all"}, ["train.x=1"])
