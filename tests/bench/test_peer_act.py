"""The pure parts of bench/peer_act.py: LeRobot log parsing, saved-checkpoint detection, the report."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peer_act_under_test", REPO / "bench" / "peer_act.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


peer = _load()

LOG = """\
INFO 2026-12-06 08:25:40 ot_train.py:400 Creating dataset
Training:   0%|          | 6/100000 [00:20<92:26:26,  3.33s/step]Training:   0%|  | 7/100000
INFO 2026-12-06 08:26:01 ot_train.py:641 step:25 smpl:200 ep:0 epch:0.01 loss:54.025 grdn:812.3 lr:1.0e-05 \
updt_s:3.201 data_s:0.055
INFO 2026-12-06 08:26:15 ot_train.py:687 Checkpoint policy after step 50
INFO 2026-12-06 08:27:30 ot_train.py:641 step:50 smpl:400 ep:1 epch:0.01 loss:6.5 grdn:90.0 lr:1.0e-05 \
updt_s:3.1 data_s:0.05
INFO 2026-12-06 09:30:00 ot_train.py:641 step:1K smpl:8K ep:27 epch:0.27 loss:0.834 grdn:52.1 lr:1.0e-05 \
updt_s:3.0
"""


def test_parse_train_log_counts_logged_steps_and_reads_fields() -> None:
    rows = peer.parse_train_log(LOG, log_freq=25)
    assert [r["step"] for r in rows] == [25, 50, 75]  # "step:1K" is rounded: the line count is exact
    assert [r["loss"] for r in rows] == [54.025, 6.5, 0.834]
    assert rows[0]["updt_s"] == 3.201 and rows[0]["data_s"] == 0.055
    assert "data_s" not in rows[2]
    assert peer.parse_train_log("no training here\n", log_freq=25) == []


def _checkpoint(run: Path, step: int) -> Path:
    folder = run / "checkpoints" / f"{step:06d}"
    (folder / "pretrained_model").mkdir(parents=True)
    return folder


def test_saved_checkpoints_follow_the_last_link(tmp_path: Path) -> None:
    assert peer.saved_checkpoints(tmp_path) == {}
    for step in (250, 500, 750):
        _checkpoint(tmp_path, step)
    # Cut mid-save of 750: `last` still names 500.
    (tmp_path / "checkpoints" / "last").symlink_to("000500")
    assert sorted(peer.saved_checkpoints(tmp_path)) == [250, 500]
    # Cut between unlinking `last` and re-linking it: the newest is not trusted unless finished.
    (tmp_path / "checkpoints" / "last").unlink()
    assert sorted(peer.saved_checkpoints(tmp_path)) == [250, 500]
    assert sorted(peer.saved_checkpoints(tmp_path, finished=True)) == [250, 500, 750]


def test_resolve_checkpoint_accepts_run_checkpoint_or_model_folder(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path, 250)
    (tmp_path / "checkpoints" / "last").symlink_to("000250")
    model = folder / "pretrained_model"
    for name in ("config.json", "model.safetensors"):
        (model / name).write_text("{}")
    assert peer.resolve_checkpoint(tmp_path) == model
    assert peer.resolve_checkpoint(folder) == model
    assert peer.resolve_checkpoint(model) == model
    assert peer.checkpoint_step(model) == 250
    with pytest.raises(SystemExit):
        peer.resolve_checkpoint(tmp_path / "nothing")


def test_wilson_matches_the_known_interval() -> None:
    lo, hi = peer.wilson(2, 50)
    assert round(lo, 3) == 0.011 and round(hi, 3) == 0.135
    assert peer.wilson(0, 0) == (0.0, 1.0)
    assert peer.seeds_range("2000-2003") == [2000, 2001, 2002, 2003]


def test_qvla_rows_are_tolerant() -> None:
    full = {
        "label": "qvla",
        "train_minutes": 75.0,
        "steps": 1234,
        "modes": {"rtc": {"successes": 4, "n": 50, "levels": [17, 10, 4, 4]}, "replace": "garbage"},
    }
    (row,) = peer.qvla_rows(full)
    assert row == "| qvla, rtc | 1234 | 75.0 | 4/50 = 8% [3%, 19%] | 17 / 10 / 4 / 4 of 50 | - |"
    (flat,) = peer.qvla_rows({"successes": 1, "n": 10})
    assert flat.startswith("| qvla | - | - | 1/10 = 10% ") and "| - | - |" in flat
    (sparse,) = peer.qvla_rows({"modes": {"rtc": {"levels": [3, None]}}})
    assert sparse == "| qvla, rtc | - | - | - | 3 / - | - |"
    assert peer.qvla_rows({}) == []


def test_render_report_puts_act_and_qvla_side_by_side() -> None:
    act = {
        "step": 1250,
        "n": 50,
        "successes": 2,
        "levels": [30, 20, 3, 2],
        "median_chunk_ms": 90.0,
        "seeds": "2000-2049",
        "episodes": [{"seed": 2000, "max_level": 2}],
    }
    train = {"checkpoints": {"1250": 74.5}, "loss": [[25, 5.0], [50, 2.0]], "loadavg_1min_samples": [2.0]}
    qvla = {"label": "qvla", "modes": {"rtc": {"successes": 4, "n": 50, "levels": [17, 10, 4, 4]}}}
    text = peer.render_report([act], train, qvla, "python bench/peer_act.py report", {"cpu": "x", "cpus": 2})
    assert "| LeRobot ACT | 1250 | 74.5 | 2/50 = 4% [1%, 13%] | 30 / 20 / 3 / 2 of 50 | 90 |" in text
    assert "| qvla, rtc |" in text
    assert "| 50 | 2.000 |" in text  # the loss table ends on the last logged step
    assert "2000: 2" in text
    assert "no real-time limit" in text
