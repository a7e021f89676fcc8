"""docs/architecture.md stays true: every module it names exists, and every room and node of the code
is in it (a new node or room fails here until the map says where it is)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "architecture.md").read_text()
CORE = REPO / "src" / "qvla_core" / "qvla_core"
ROS = REPO / "src" / "qvla_ros" / "qvla_ros"


def _exists(ref: str) -> bool:
    """``room/module.py`` or ``room/module`` relative to either package (or a repo path)."""
    ref = ref.rstrip("/")
    candidates = [REPO / ref, CORE / ref, ROS / ref, CORE.parent / ref, ROS.parent / ref]
    candidates += [CORE / f"{ref}.py", ROS / f"{ref}.py"]
    return any(c.exists() for c in candidates)


def test_every_module_path_in_the_map_exists() -> None:
    refs = set(re.findall(r"(?<![\w/])([a-z_]+/[a-z_/]+\.py|[a-z_]+/[a-z_]+/)", DOC))
    missing = sorted(r for r in refs if not _exists(r))
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_room_and_node_is_on_the_map() -> None:
    rooms = [p.name for p in CORE.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    rooms += [p.name for p in ROS.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    nodes = [p.stem for p in (ROS / "nodes").glob("*.py") if p.stem != "__init__"]
    absent = [f"{r}/" for r in rooms if f"{r}/" not in DOC] + [n for n in nodes if n not in DOC]
    assert not absent, f"docs/architecture.md does not say where these are: {absent}"
