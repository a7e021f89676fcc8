"""Systematic damage to recordings: MCAP files cut at many offsets, single bits flipped inside chunks
(uncompressed, LZ4, Zstd) and in the other records, and bag directories whose metadata.yaml is
missing or wrong. Each :class:`Case` damages a copy of the tree :func:`make_bags` builds."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from .fuzz_inputs import our_bag, robot_yaml, ros2_bag

# The files of the tree, relative to its root.
OURS = "rec/episode_000000/episode_000000_0.mcap"  # recorder_node, uncompressed chunks
OURS_LZ4 = "rec/episode_000001/episode_000001_0.mcap"  # recorder_node, LZ4 chunks
OLD = "rec/episode_000002/episode_000002_0.mcap"  # recorder_node before d4c3afa: no data-section CRC
ROS2 = "ros2/ros2_0.mcap"  # ros2 bag record, Zstd chunks (first of two split files)
ROS2_SECOND = "ros2/ros2_1.mcap"
FILES = {OURS: "uncompressed", OURS_LZ4: "LZ4", OLD: "uncompressed, no data CRC", ROS2: "Zstd"}
BAGS = ("rec/episode_000000", "rec/episode_000001", "rec/episode_000002")

OPCODES = {
    0x01: "header", 0x02: "footer", 0x03: "schema", 0x04: "channel", 0x05: "message", 0x06: "chunk",
    0x07: "message index", 0x08: "chunk index", 0x09: "attachment", 0x0A: "attachment index",
    0x0B: "statistics", 0x0C: "metadata", 0x0D: "metadata index", 0x0E: "summary offset",
    0x0F: "data end",
}  # fmt: skip


@dataclass(frozen=True)
class Case:
    kind: str  # the report's row
    name: str
    target: str  # the damaged file or directory, relative to the tree
    damage: Callable[[Path], None]  # applied to the file's path in a copy of the tree
    names: tuple[str, ...] = ()  # what an error must mention (default: the target's file name)

    @property
    def group(self) -> str:
        """Which conversion the target belongs to: 'rec' (our bags) or 'ros2'."""
        return "ros2" if self.target.startswith("ros2") else "rec"

    def mentions(self) -> tuple[str, ...]:
        return self.names or (Path(self.target).name,)


def make_bags(root: Path) -> Path:
    """rec/ (two recorder bags: uncompressed, LZ4), ros2/ (Zstd, split in two) and robot.yaml."""
    our_bag(root / "rec/episode_000000", 0, "none")
    our_bag(root / "rec/episode_000001", 1, "lz4")
    old = our_bag(root / "rec/episode_000002", 2, "none") / Path(OLD).name
    _without_data_crc(old)
    ros2_bag(root / "ros2")
    (root / "robot.yaml").write_text(robot_yaml())
    return root


def _without_data_crc(path: Path) -> None:
    """Zero the DataEnd record's CRC (0 = "not stored"): a bag as the recorder wrote it before it
    stored one, and as rosbag2 writes them."""
    data = bytearray(path.read_bytes())
    (data_end,) = [pos for op, pos, _ in records(bytes(data)) if op == 0x0F]
    data[data_end + 9 : data_end + 13] = bytes(4)
    path.write_bytes(bytes(data))


def records(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(opcode, offset of the record, record length incl. opcode and length) of an MCAP file."""
    pos = 8
    while pos + 9 <= len(data) - 8:
        opcode, length = struct.unpack_from("<BQ", data, pos)
        yield opcode, pos, 9 + length
        pos += 9 + length


def _cut(size: int) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: size if size >= 0 else len(data) + size])

    return damage


def _flip(offset: int, bit: int) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[offset] ^= 1 << bit
        path.write_bytes(bytes(data))

    return damage


def truncations(target: str, size: int, fractions: int = 16) -> list[Case]:
    """Cuts at 0, inside the magic, after it, at 1/16 steps, and around the footer."""
    sizes = {0, 5, 8, 9 + 8, size - 1, size - 8, size - 12, size - 8 - 29, size - 8 - 29 - 13}
    sizes |= {size * k // fractions for k in range(1, fractions)}
    kind = f"MCAP truncated ({FILES[target]})"
    return [
        Case(kind, f"{Path(target).name} cut to {n} of {size} bytes", target, _cut(n)) for n in sorted(sizes)
    ]


def _chunk_positions(data: bytes, start: int, length: int) -> list[tuple[str, int]]:
    """Where to flip inside a chunk record: each header field, and the compressed records."""
    body = start + 9
    (compression_len,) = struct.unpack_from("<I", data, body + 8 + 8 + 8 + 4)
    records_at = body + 8 + 8 + 8 + 4 + 4 + compression_len + 8
    end = start + length
    spots = [
        ("opcode", start), ("record length", start + 3), ("message_start_time", body + 2),
        ("uncompressed_size", body + 16 + 1), ("uncompressed_crc", body + 24 + 1),
        ("compression name length", body + 28), ("records length", records_at - 6),
    ]  # fmt: skip
    if compression_len:
        spots.append(("compression name", body + 32))
    for frac in (0, 1, 3, 7):  # the first record's header, then spread through the payload
        spots.append((f"payload {frac}/8", records_at + (end - records_at) * frac // 8 + (1 if frac else 0)))
    spots.append(("payload last byte", end - 1))
    return spots


def chunk_flips(target: str, data: bytes) -> list[Case]:
    chunks = [(pos, n) for op, pos, n in records(data) if op == 0x06]
    picked = {0: chunks[0], len(chunks) // 2: chunks[len(chunks) // 2]}
    kind = f"MCAP bit flip in a chunk ({FILES[target]})"
    cases = []
    for number, (pos, n) in picked.items():
        for i, (where, offset) in enumerate(_chunk_positions(data, pos, n)):
            bit = (i * 3 + number) % 8
            name = f"{Path(target).name} chunk {number}/{len(chunks)}: bit {bit} of {where} (byte {offset})"
            cases.append(Case(kind, name, target, _flip(offset, bit)))
    return cases


def _text_spots(data: bytes, pos: int, n: int) -> list[tuple[str, int]]:
    body = data[pos : pos + n]
    spots = []
    for label, needle in (("task text", b"transfer"), ("start_ns", b"200000000"), ("success", b"true")):
        k = body.find(needle)
        if k >= 0:
            spots.append((label, pos + k + 2))
    return spots


def other_flips(target: str, data: bytes) -> list[Case]:
    """One flip in the first record of each other kind (and in the episode record's values)."""
    kind = f"MCAP bit flip outside chunks ({FILES[target]})"
    seen: set[int] = set()
    cases = []
    for op, pos, n in records(data):
        if op == 0x06 or (op in seen and op != 0x0C):
            continue
        seen.add(op)
        label = OPCODES.get(op, f"opcode {op:#x}")
        spots = [(label, pos + 9 + (n - 9) // 2)] if n > 9 else [(label, pos)]
        if op == 0x0C:
            spots = [(f"{label} {what}", at) for what, at in _text_spots(data, pos, n)] or spots
        for i, (where, offset) in enumerate(spots):
            bit = (i + op) % 7  # not bit 7 of text: that makes invalid UTF-8, the easy case
            cases.append(Case(kind, f"{Path(target).name}: bit {bit} of the {where} (byte {offset})", target,
                              _flip(offset, bit)))  # fmt: skip
    footer = len(data) - 8 - 29
    for where, offset in (("footer summary_start", footer + 9 + 1), ("footer summary_crc", footer + 9 + 17)):
        cases.append(Case(kind, f"{Path(target).name}: bit 2 of the {where}", target, _flip(offset, 2)))
    return cases


def _meta(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        meta = path / "metadata.yaml"
        data = yaml.safe_load(meta.read_text())
        change(data["rosbag2_bagfile_information"])  # edits in place (what it returns is ignored)
        meta.write_text(yaml.safe_dump(data))

    return damage


def _remove(rel: str) -> Callable[[Path], None]:
    return lambda path: (path / rel).unlink()


def _write(rel: str, content: bytes) -> Callable[[Path], None]:
    return lambda path: (path / rel).write_bytes(content)


def bag_dir_cases() -> list[Case]:
    """metadata.yaml missing or wrong, files missing or empty, in our bags and in the split ros2 bag."""
    ours, ros2 = "rec/episode_000000", "ros2"
    kind = "bag directory / metadata.yaml"
    meta = ("metadata.yaml",)
    listing = ("metadata.yaml", "ros2_1.mcap")
    return [
        Case(kind, "our bag: metadata.yaml missing", ours, _remove("metadata.yaml"), (ours,)),
        Case(kind, "ros2 bag: metadata.yaml missing (both files still there)", ros2, _remove("metadata.yaml"),
             (ros2,)),
        Case(kind, "metadata.yaml empty", ros2, _write("metadata.yaml", b""), meta),
        Case(kind, "metadata.yaml binary garbage", ros2, _write("metadata.yaml", bytes(range(256))), meta),
        Case(kind, "metadata.yaml not YAML", ours, _write("metadata.yaml", b"rosbag2: [unclosed"), meta),
        Case(kind, "metadata.yaml a list", ours, _write("metadata.yaml", b"- 1\n- 2\n"), meta),
        Case(kind, "metadata.yaml without relative_file_paths", ros2,
             _meta(lambda m: m.pop("relative_file_paths")), meta),
        Case(kind, "relative_file_paths a string", ros2,
             _meta(lambda m: m.update(relative_file_paths="ros2_0.mcap")), meta),
        Case(kind, "relative_file_paths names a missing file", ros2,
             _meta(lambda m: m["relative_file_paths"].append("ros2_9.mcap")), ("ros2_9.mcap",)),
        Case(kind, "relative_file_paths lists one of the two split files", ros2,
             _meta(lambda m: m["relative_file_paths"].pop()), listing),
        Case(kind, "storage_identifier sqlite3", ros2,
             _meta(lambda m: m.update(storage_identifier="sqlite3")), (ros2,)),
        Case(kind, "second split file deleted", ros2, _remove("ros2_1.mcap"), ("ros2_1.mcap",)),
        Case(kind, "second split file empty", ros2, _write("ros2_1.mcap", b""), ("ros2_1.mcap",)),
        Case(kind, "our .mcap replaced by zero bytes", ours, _write("episode_000000_0.mcap", b""),
             ("episode_000000_0.mcap",)),
        Case(kind, "our .mcap deleted", ours, _remove("episode_000000_0.mcap"), ("episode_000000_0.mcap",)),
    ]  # fmt: skip


def all_cases(root: Path) -> list[Case]:
    cases: list[Case] = []
    for target in FILES:
        data = (root / target).read_bytes()
        cases += truncations(target, len(data))
        cases += chunk_flips(target, data)
        cases += other_flips(target, data)
    return cases + bag_dir_cases()
