"""``qvla-build-checkpoint --backbone-from`` a directory laid out as each Qwen release: build, infer,
train, save, reload; the release's chat templates render our prompt; bad directories are refused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from qvla_core.cli import build_checkpoint as build_cli
from qvla_core.embodiment import Embodiment
from qvla_core.errors import CheckpointError
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.model.prompt import render_prompt
from qvla_core.policy import Observation
from tests.model.hf_release import RELEASE, token_ids
from tests.model.qwen_templates import TEMPLATES

TYPES = ("qwen3_5", "qwen3_vl", "qwen2_5_vl")
IMAGE = {"qwen3_5": "128x128", "qwen3_vl": "128x128", "qwen2_5_vl": "112x112"}
Release = Callable[[str], Path]


def train_steps(policy: QwenVLAPolicy, observations: list[Observation], steps: int) -> bool:
    """A few AdamW steps on the decoder through policy.training_loss; True if every loss was finite."""
    rng = np.random.default_rng(0)
    e = policy.embodiment
    actions = [rng.uniform(-0.5, 0.5, (e.horizon, len(e.action))).astype(np.float32) for _ in observations]
    optimizer = torch.optim.AdamW(policy.decoder.parameters(), lr=1e-3)
    finite = True
    policy.decoder.train()
    for i in range(steps):
        optimizer.zero_grad()
        loss = policy.training_loss(observations, actions, generator=torch.Generator().manual_seed(i))
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        finite &= bool(torch.isfinite(loss))
    policy.decoder.eval()
    return finite


def build(out: Path, release: Path, robot: Path, *extra: str, image: str = "128x128") -> dict[str, object]:
    args = ["--out", str(out), "--backbone-from", str(release), "--robot", str(robot)]
    args += ["--stats-from-limits", "--randomize-head", "--image-size", image, *extra]
    assert build_cli.main(args) == 0
    return json.loads((out / "policy_config.json").read_text())


@pytest.mark.parametrize("backbone", TYPES)
def test_backbone_from_infer_train_save_reload(
    backbone: str,
    hf_release: Release,
    arm7_yaml: Path,
    arm7: Embodiment,
    obs_factory: Callable[..., Observation],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    release = hf_release(backbone)
    cfg = build(tmp_path / "ck", release, arm7_yaml, image=IMAGE[backbone])
    info = json.loads(capsys.readouterr().out)
    assert info["backbone"] == backbone and info["cond_dim"] == 64 and info["backbone_params"] > 1e6
    # Referenced, not copied: no weights of the release in the checkpoint.
    assert cfg["backbone_path"] == str(release.resolve()) and not (tmp_path / "ck" / "backbone").exists()
    assert cfg["decoder"]["cond_dim"] == 64 and cfg["backbone_type"] == backbone

    policy = QwenVLAPolicy.from_checkpoint(tmp_path / "ck", arm7, seed=0)
    ids = token_ids(backbone)
    prompt = policy.processor.prompt_ids(arm7, "pick up the cube")
    assert prompt[0] == ids["<|im_start|>"] and policy.processor.image_token_id == ids["<|image_pad|>"]
    assert prompt.count(ids["<|image_pad|>"]) == 3 * policy.processor.spec.tokens_per_image
    # The release's weights were read as published (Qwen2.5-VL: legacy tensor names).
    shards = {k: v for f in sorted(release.glob("model-*.safetensors")) for k, v in load_file(str(f)).items()}
    embed = (
        "model.embed_tokens.weight"
        if backbone == "qwen2_5_vl"
        else "model.language_model.embed_tokens.weight"
    )
    loaded = policy.backbone.model.model.language_model.embed_tokens.weight
    torch.testing.assert_close(loaded, shards[embed].float())

    obs = obs_factory(arm7)
    chunk = policy.infer(obs)
    assert chunk.actions.shape == (16, 8) and np.all(np.isfinite(chunk.actions))

    assert train_steps(policy, [obs_factory(arm7, seed=i) for i in range(2)], steps=3)

    saved = policy.save(tmp_path / "trained", backbone="reference")
    assert json.loads((saved / "policy_config.json").read_text())["backbone_path"] == str(release.resolve())
    policy.reset()
    before = policy.infer(obs).actions
    again = QwenVLAPolicy.from_checkpoint(saved, arm7, seed=0)
    np.testing.assert_array_equal(before, again.infer(obs).actions)
    assert not np.array_equal(before, chunk.actions)  # the decoder did train


@pytest.mark.parametrize("backbone", TYPES)
def test_release_templates_render_the_prompt(backbone: str, arm7: Embodiment, hf_release: Release) -> None:
    """Each release's own template: one vision block per frame, our system text, HF's rendering."""
    from transformers import AutoTokenizer

    text = render_prompt(TEMPLATES[backbone], arm7, "stack the blocks")
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 3
    assert text.startswith("<|im_start|>system\nYou control a robot.")
    assert "Camera wrist, 0.2 s ago:\n<|vision_start|>" in text and "Task: stack the blocks<|im_end|>" in text
    assert "You are a helpful assistant" not in text  # our system message replaces the default one
    tail = "<|im_start|>assistant\n" + ("<think>\n\n</think>\n\n" if backbone == "qwen3_5" else "")
    assert text.endswith(tail)
    tok = AutoTokenizer.from_pretrained(str(hf_release(backbone)))
    tok.chat_template = TEMPLATES[backbone]
    assert render_prompt(tok, arm7, "stack the blocks") == text  # our Jinja set-up is transformers'


@pytest.mark.parametrize(
    ("backbone", "billions", "decoder"),
    [
        ("qwen3_5", 4.54, 1_153_710_112),  # the published 1.15B DiT on a 2560-wide backbone
        ("qwen3_vl", 4.44, 1_153_710_112),
        # 512 narrower conditioning: 16 blocks x (K and V) x 512 x 1536 weights + the LayerNorm's 2 x 512
        ("qwen2_5_vl", 3.76, 1_153_710_112 - 16 * 2 * 512 * 1536 - 2 * 512),
    ],
)
def test_full_shapes_build_without_weights(
    backbone: str, billions: float, decoder: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aloha = str(Path(__file__).resolve().parents[2] / "config" / "robots" / "aloha.yaml")
    args = ["--out", str(tmp_path / "full"), "--preset", "full", "--backbone", backbone, "--robot", aloha]
    assert build_cli.main([*args, "--stats-from-limits", "--no-weights"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backbone_params"] / 1e9 == pytest.approx(billions, abs=0.01)
    assert info["decoder_params"] == decoder
    assert not list((tmp_path / "full").rglob("*.safetensors"))


def _without(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).unlink()


def _edit(name: str, key: str, value: object) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        data = json.loads((root / name).read_text())
        data[key] = value
        (root / name).write_text(json.dumps(data))

    return f


BAD_RELEASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("no config", _without("config.json"), "config.json: missing file"),
    ("no preprocessor", _without("preprocessor_config.json"), "preprocessor_config.json: missing file"),
    (
        "no shard",
        _without("model-00002-of-00002.safetensors"),
        "model-00002-of-00002.safetensors: missing file",
    ),
    ("no tokenizer config", _without("tokenizer_config.json"), "tokenizer_config.json: missing file"),
    ("no template", _without("chat_template.json"), "no chat template"),
    ("model_type", _edit("config.json", "model_type", "llava"), "model_type: unknown backbone type 'llava'"),
    ("patch size", _edit("preprocessor_config.json", "patch_size", 14), "vision_config.patch_size 16"),
    ("no patch size", _edit("preprocessor_config.json", "patch_size", None), "patch_size must be a positive"),
    ("image token", _edit("config.json", "image_token_id", 7), "image_token_id 7"),
]


@pytest.mark.parametrize(("name", "breaker", "message"), BAD_RELEASES, ids=[c[0] for c in BAD_RELEASES])
def test_bad_backbone_from(
    name: str,
    breaker: Callable[[Path], None],
    message: str,
    hf_release: Release,
    arm7_yaml: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    release = tmp_path / "release"
    shutil.copytree(hf_release("qwen3_vl"), release)
    breaker(release)
    args = ["--out", str(tmp_path / "ck"), "--backbone-from", str(release), "--robot", str(arm7_yaml)]
    assert build_cli.main([*args, "--stats-from-limits", "--image-size", "128x128"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(release) in err, err
    assert not (tmp_path / "ck").exists()  # nothing half-written


def test_backbone_that_does_not_fit_the_decoder(
    hf_release: Release, arm7_yaml: Path, arm7: Embodiment, tmp_path: Path
) -> None:
    build(tmp_path / "ck", hf_release("qwen3_vl"), arm7_yaml)
    cfg_file = tmp_path / "ck" / "policy_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["backbone_path"] = str(hf_release("qwen3_5"))  # another release under the same decoder
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"backbone_type 'qwen3_vl' but .*model_type 'qwen3_5'"):
        QwenVLAPolicy.from_checkpoint(tmp_path / "ck", arm7)
    cfg["backbone_path"] = str(hf_release("qwen3_vl"))
    cfg["decoder"]["cond_dim"] = 2560
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"decoder.cond_dim 2560 != backbone hidden size 64"):
        QwenVLAPolicy.from_checkpoint(tmp_path / "ck", arm7)
    cfg["backbone_path"] = str(tmp_path / "nowhere")
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"nowhere: missing backbone directory .backbone_path in"):
        QwenVLAPolicy.from_checkpoint(tmp_path / "ck", arm7)


def test_missing_tensor_is_an_error_not_a_random_init(
    hf_release: Release, arm7_yaml: Path, arm7: Embodiment, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    shutil.copytree(hf_release("qwen3_vl"), release)
    shard = release / "model-00001-of-00002.safetensors"
    weights = load_file(str(shard))
    dropped = sorted(weights)[0]
    del weights[dropped]
    save_file(weights, str(shard), metadata={"format": "pt"})
    index = json.loads((release / "model.safetensors.index.json").read_text())
    del index["weight_map"][dropped]
    (release / "model.safetensors.index.json").write_text(json.dumps(index))
    build(tmp_path / "ck", release, arm7_yaml)
    with pytest.raises(CheckpointError, match=f"do not fit config.json: missing .*{dropped}"):
        QwenVLAPolicy.from_checkpoint(tmp_path / "ck", arm7)


@pytest.mark.parametrize("mode", ["--link-backbone", "--copy-backbone"])
def test_link_and_copy_modes(
    mode: str,
    hf_release: Release,
    arm7_yaml: Path,
    arm7: Embodiment,
    obs_factory: Callable[..., Observation],
    tmp_path: Path,
) -> None:
    release = hf_release("qwen3_vl")
    cfg = build(tmp_path / "ck", release, arm7_yaml, mode)
    backbone = tmp_path / "ck" / "backbone"
    assert "backbone_path" not in cfg
    assert backbone.is_symlink() == (mode == "--link-backbone")
    assert (backbone / "model-00002-of-00002.safetensors").is_file()
    policy = QwenVLAPolicy.from_checkpoint(tmp_path / "ck", arm7, seed=1)
    assert policy.infer(obs_factory(arm7)).actions.shape == (16, 8)


def test_release_name_in_docs() -> None:
    """docs/pretrained_backbones.md covers each release these tests stand in for."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "pretrained_backbones.md").read_text()
    for name in RELEASE.values():
        assert name in doc
