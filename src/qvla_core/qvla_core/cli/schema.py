"""``qvla-schema``: print the robot YAML schema, as JSON Schema or as a Markdown reference.

Both are generated from the pydantic models in :mod:`qvla_core.embodiment` and
:mod:`qvla_core.robot_io` (``RobotConfig.model_json_schema()``), so they cannot drift from
what the loader accepts. The Markdown has one table per model (key, type, default,
description, constraints), the meaning of every channel kind, and the checks that span
several keys (taken from the model validators' docstrings). docs/robot_config_schema.md is::

    qvla-schema --format markdown > docs/robot_config_schema.md
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import sys
import tokenize
from collections.abc import Iterator
from enum import Enum
from typing import Any

from pydantic import BaseModel

from qvla_core.embodiment import ChannelKind
from qvla_core.robot_io import RobotConfig

JSONSCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
REGENERATE = "qvla-schema --format markdown > docs/robot_config_schema.md"
ENUMS: tuple[type[Enum], ...] = (ChannelKind,)

Schema = dict[str, Any]


# --------------------------------------------------------------------------- sources
def enum_comments(enum: type[Enum]) -> dict[str, str]:
    """Value -> the trailing ``# comment`` of its member line in the enum's source ('' if none)."""
    try:
        source = inspect.getsource(enum)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    member = ""
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.string in enum.__members__:
            member = tok.string
        elif tok.type == tokenize.COMMENT and member:
            comments[str(enum.__members__[member].value)] = tok.string.lstrip("#").strip()
        elif tok.type == tokenize.NEWLINE:
            member = ""
    return comments


def json_schema() -> Schema:
    """The JSON Schema of a robot YAML, with the meaning of each enum value (``enumDescriptions``,
    the key editors such as VS Code's YAML/JSON support show)."""
    schema: Schema = {"$schema": JSONSCHEMA_DIALECT, **RobotConfig.model_json_schema()}
    for enum in ENUMS:
        node = schema.get("$defs", {}).get(enum.__name__)
        if node is not None:
            comments = enum_comments(enum)
            node["enumDescriptions"] = [comments.get(str(v), "") for v in node["enum"]]
    return schema


def _models() -> dict[str, type[BaseModel]]:
    """Every pydantic model reachable from RobotConfig, by class name (= its ``$defs`` key)."""
    found: dict[str, type[BaseModel]] = {}

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ not in found:
                found[annotation.__name__] = annotation
                for field in annotation.model_fields.values():
                    visit(field.annotation)
            return
        for arg in getattr(annotation, "__args__", ()):
            visit(arg)

    visit(RobotConfig)
    return found


def _checks(model: type[BaseModel]) -> list[str]:
    """First paragraph of each model validator's docstring, joined to one line."""
    out = []
    for decorator in model.__pydantic_decorators__.model_validators.values():
        doc = inspect.getdoc(decorator.func)
        if doc:
            out.append(_text(doc.split("\n\n")[0]))
    return out


# --------------------------------------------------------------------------- rendering
def _anchor(name: str) -> str:
    return name.lower()


def _link(name: str) -> str:
    return f"[{name}](#{_anchor(name)})"


def _ref_name(node: Schema) -> str | None:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _code(value: Any) -> str:
    return f"`{json.dumps(value)}`"


def _type(node: Schema) -> str:
    """Readable type of a schema node; models and enums are links to their tables."""
    name = _ref_name(node)
    if name is not None:
        return _link(name)
    if "const" in node:
        return _code(node["const"])
    if "enum" in node:
        return "one of " + ", ".join(_code(v) for v in node["enum"])
    if "oneOf" in node or "anyOf" in node:
        branches: list[Schema] = node["oneOf"] if "oneOf" in node else node["anyOf"]
        text = " or ".join(_type(b) for b in branches)
        discriminator = node.get("discriminator", {}).get("propertyName")
        return f"{text} (chosen by `{discriminator}`)" if discriminator else text
    kind = node.get("type")
    if kind == "array":
        if "prefixItems" in node:
            return "[" + ", ".join(_type(item) for item in node["prefixItems"]) + "]"
        return "list of " + _type(node.get("items", {}))
    if kind == "object":
        values = node.get("additionalProperties")
        return "map of name to " + _type(values) if isinstance(values, dict) else "mapping"
    return str(kind) if kind else "any"


def _number(value: Any) -> str:
    return json.dumps(value)


def _constraints(node: Schema) -> list[str]:
    """Range, length, count and pattern rules of a node (and of its branches / items)."""
    out: list[str] = []
    bounds = (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    )
    for key, op in bounds:
        if key in node:
            out.append(f"{op} {_number(node[key])}")
    if "minLength" in node or "maxLength" in node:
        out.append(f"length {node.get('minLength', 0)}..{node.get('maxLength', 'any')}")
    if "pattern" in node:
        out.append(f"pattern `{node['pattern']}`")
    if node.get("type") == "array" and "prefixItems" not in node:
        if "minItems" in node and "maxItems" in node:
            out.append(f"{node['minItems']}..{node['maxItems']} items")
        elif "minItems" in node:
            out.append(f"at least {node['minItems']} item{'s' if node['minItems'] != 1 else ''}")
        elif "maxItems" in node:
            out.append(f"at most {node['maxItems']} items")
        items = node.get("items", {})
        if _ref_name(items) is None:
            out += [f"each {c}" for c in _constraints(items)]
    for branch in node.get("anyOf", []):
        out += _constraints(branch)
    return out


def _default(node: Schema, required: bool) -> str:
    if required:
        return "required"
    if "default" not in node:
        kind = node.get("type")
        return {"array": "`[]`", "object": "`{}`"}.get(str(kind), "optional")
    value = node["default"]
    if isinstance(value, dict) and _ref_name(node) is not None and value:
        return "all defaults"
    return _code(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _refs(node: Any) -> Iterator[str]:
    """``$defs`` names referenced inside ``node``, in document order (discriminator maps skipped)."""
    if isinstance(node, dict):
        name = _ref_name(node)
        if name is not None:
            yield name
        for key, value in node.items():
            if key != "discriminator":
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _walk(schema: Schema) -> list[str]:
    """``$defs`` names depth-first from the root: each type right after the table that first uses it."""
    seen: list[str] = []

    def visit(node: Schema) -> None:
        for name in _refs(node.get("properties", {})):
            if name not in seen:
                seen.append(name)
                visit(schema["$defs"][name])

    visit(schema)
    return seen


def _text(description: str) -> str:
    """A docstring or description as one Markdown line (reST ``code`` becomes `code`)."""
    return " ".join(description.replace("``", "`").split())


def _model_section(name: str, node: Schema, model: type[BaseModel] | None) -> list[str]:
    lines = [f"## {name}", ""]
    if node.get("description"):
        lines += [_text(node["description"]), ""]
    required = set(node.get("required", []))
    lines += [
        "| Key | Type | Default | Description | Constraints |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, prop in node.get("properties", {}).items():
        cells = [
            f"`{key}`",
            _type(prop),
            _default(prop, key in required),
            _text(prop.get("description", "")),
            "; ".join(_constraints(prop)),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    if node.get("additionalProperties") is False:
        lines += ["Unknown keys are errors.", ""]
    checks = _checks(model) if model is not None else []
    if checks:
        lines += ["Checked on load:", ""] + [f"* {c}" for c in checks] + [""]
    return lines


def _enum_section(name: str, node: Schema) -> list[str]:
    lines = [f"## {name}", ""]
    if node.get("description"):
        lines += [_text(node["description"]), ""]
    lines += ["| Value | Meaning |", "| --- | --- |"]
    meanings = node.get("enumDescriptions", [""] * len(node["enum"]))
    for value, meaning in zip(node["enum"], meanings, strict=True):
        lines.append(f"| {_code(value)} | {_cell(meaning)} |")
    return [*lines, ""]


def markdown() -> str:
    """The Markdown reference: the root model first, then each model and enum it uses."""
    schema = json_schema()
    models = _models()
    names = ["RobotConfig", *_walk(schema)]
    lines = [
        "# Robot configuration schema",
        "",
        f"<!-- Generated by `{REGENERATE}`; do not edit by hand. -->",
        "",
        "A robot YAML (`config/robots/*.yaml`) is validated on load by",
        "`qvla_core.robot_io.load_robot_config`; an error names the file, the key and the bad value.",
        "`qvla-schema --format json` prints the same schema as JSON Schema (2020-12).",
        "",
        "Units: angles in radians, lengths in meters, times in seconds, rates in Hz.",
        "Worked examples: the robot files in `config/robots/`.",
        "",
        "Contents:",
        "",
        *(f"* {_link(n)}" for n in names),
        "",
    ]
    for name in names:
        node = schema if name == "RobotConfig" else schema["$defs"][name]
        if "enum" in node:
            lines += _enum_section(name, node)
        else:
            lines += _model_section(name, node, models.get(name))
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- CLI
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qvla-schema", description=__doc__.splitlines()[0])
    p.add_argument(
        "--format",
        choices=("markdown", "json"),
        default="markdown",
        help="markdown: a reference with one table per model (default); json: JSON Schema",
    )
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write here instead of stdout")
    return p


def render(fmt: str) -> str:
    if fmt == "json":
        return json.dumps(json_schema(), indent=2) + "\n"
    return markdown()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    text = render(args.format)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    except OSError as exc:
        print(f"qvla-schema: error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
