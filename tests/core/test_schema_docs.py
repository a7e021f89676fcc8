"""The generated schema: docs/robot_config_schema.md is current, and the JSON Schema fits the robots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from qvla_core.cli import schema as schema_cli
from qvla_core.embodiment import Camera, Channel, ChannelKind
from qvla_core.robot_io import RosIO

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "robot_config_schema.md"
ROBOTS = sorted((REPO / "config" / "robots").glob("*.yaml"))


def test_committed_docs_match_the_generator() -> None:
    assert DOC.exists(), f"{DOC} missing; run: {schema_cli.REGENERATE}"
    assert DOC.read_text(encoding="utf-8") == schema_cli.markdown(), (
        f"{DOC.relative_to(REPO)} is stale; regenerate it with: {schema_cli.REGENERATE}"
    )


def test_docs_header_names_the_command() -> None:
    assert schema_cli.REGENERATE in schema_cli.markdown().splitlines()[2]


@pytest.mark.parametrize("model", [Channel, Camera, RosIO], ids=lambda m: m.__name__)
def test_markdown_lists_every_field(model: Any) -> None:
    text = schema_cli.markdown()
    section = text.split(f"\n## {model.__name__}\n", 1)[1].split("\n## ", 1)[0]
    for field in model.model_fields:
        assert f"| `{field}` |" in section, f"{model.__name__}.{field} missing from its table"


def test_markdown_explains_every_channel_kind() -> None:
    text = schema_cli.markdown()
    section = text.split("\n## ChannelKind\n", 1)[1].split("\n## ", 1)[0]
    for kind in ChannelKind:
        row = next((line for line in section.splitlines() if line.startswith(f'| `"{kind.value}"` |')), None)
        assert row is not None, f"{kind.value} missing"
        assert row.split("|")[2].strip(), f"{kind.value} has no meaning (add a # comment to its member)"


def test_json_schema_mentions_every_channel_kind() -> None:
    text = json.dumps(schema_cli.json_schema())
    for kind in ChannelKind:
        assert f'"{kind.value}"' in text
    kinds = schema_cli.json_schema()["$defs"]["ChannelKind"]
    assert len(kinds["enumDescriptions"]) == len(kinds["enum"]) == len(ChannelKind)


# ----------------------------------------------------------------- a small JSON Schema checker
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _problems(value: Any, node: dict[str, Any], root: dict[str, Any], path: str) -> list[str]:
    """Structural JSON Schema check: $ref, type, properties/required/additionalProperties,
    items/prefixItems, enum/const, anyOf/oneOf, minItems. Enough to catch unknown or missing keys."""
    if "$ref" in node:
        node = {
            **root["$defs"][node["$ref"].rsplit("/", 1)[-1]],
            **{k: v for k, v in node.items() if k != "$ref"},
        }
    for key in ("anyOf", "oneOf"):
        if key in node:
            results = [_problems(value, branch, root, path) for branch in node[key]]
            if not any(not r for r in results):
                return [f"{path}: matches no branch of {key}: {results}"]
    out: list[str] = []
    kind = node.get("type")
    if kind is not None:
        ok = isinstance(value, _TYPES[kind]) and not (
            kind in ("integer", "number") and isinstance(value, bool)
        )
        if not ok:
            return [f"{path}: expected {kind}, got {type(value).__name__}"]
    if "enum" in node and value not in node["enum"]:
        out.append(f"{path}: {value!r} not in {node['enum']}")
    if "const" in node and value != node["const"]:
        out.append(f"{path}: {value!r} != {node['const']!r}")
    if isinstance(value, dict):
        props = node.get("properties", {})
        out += [f"{path}.{k}: required" for k in node.get("required", []) if k not in value]
        extra = node.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                out += _problems(item, props[key], root, f"{path}.{key}")
            elif extra is False:
                out.append(f"{path}.{key}: unknown key")
            elif isinstance(extra, dict):
                out += _problems(item, extra, root, f"{path}.{key}")
    if isinstance(value, list):
        if len(value) < node.get("minItems", 0):
            out.append(f"{path}: fewer than {node['minItems']} items")
        prefix = node.get("prefixItems")
        for i, item in enumerate(value):
            sub = prefix[i] if prefix is not None and i < len(prefix) else node.get("items")
            if sub is not None:
                out += _problems(item, sub, root, f"{path}[{i}]")
    return out


@pytest.mark.parametrize("path", ROBOTS, ids=[p.stem for p in ROBOTS])
def test_json_schema_accepts_every_shipped_robot(path: Path) -> None:
    schema = schema_cli.json_schema()
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(data) <= set(schema["properties"]), (
        f"unknown top-level keys {set(data) - set(schema['properties'])}"
    )
    assert _problems(data, schema, schema, path.stem) == []


def test_json_schema_rejects_unknown_and_missing_keys() -> None:
    schema = schema_cli.json_schema()
    data = yaml.safe_load((REPO / "config" / "robots" / "aloha.yaml").read_text(encoding="utf-8"))
    data["embodiment"]["horizn"] = data["embodiment"].pop("horizon")
    data["ros"]["outputs"][0]["type"] = "teleport"
    problems = "\n".join(_problems(data, schema, schema, "aloha"))
    assert "aloha.embodiment.horizn: unknown key" in problems
    assert "aloha.embodiment.horizon: required" in problems
    assert "aloha.ros.outputs[0]: matches no branch" in problems


# ----------------------------------------------------------------- the command line
def test_cli_writes_both_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert schema_cli.main(["--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["title"] == "RobotConfig" and "$defs" in printed
    out = tmp_path / "schema.md"
    assert schema_cli.main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == schema_cli.markdown()
    assert schema_cli.main(["--output", str(tmp_path / "absent" / "x.md")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_runs_as_a_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qvla_core.cli.schema", "--format", "markdown"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == schema_cli.markdown()
