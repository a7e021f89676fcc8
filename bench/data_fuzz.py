"""Fuzz the data path with systematically damaged inputs and say how each run ended.

Builds a small valid recording (recorder_node's episode bags, uncompressed and LZ4, and a split
``ros2 bag record`` bag with Zstd chunks) and a small LeRobot v3.0 dataset, applies every damage of
tests/data/fuzz_mcap_cases.py and tests/data/fuzz_dataset_cases.py to a copy, and runs it through

* ``qvla-convert`` (find_bags + convert), strict and with ``--skip-bad``, for the recordings;
* the LeRobot reader (open, then every sample) and ``qvla-train``'s loading (open with a frame
  cache, check against the robot YAML, norm stats, the training frame cache), for the dataset.

Each run is classified (tests/data/fuzz_inputs.py): a clear error naming the file, left out with a
warning naming it (``--skip-bad``), loaded with a warning naming it (a documented fallback),
unaffected (the output equals the pristine input's), an error that does not name the file,
silent-wrong (loaded, output differs, nothing said), or a crash (an exception that is not a
QvlaError). Writes a Markdown table per input kind and entry point, and every run that did not
meet the bar, to ``--out``.

    source scripts/env.sh && nice -n 10 python bench/data_fuzz.py --out docs/bench/data_fuzz.md
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src" / "qvla_core"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.data import fuzz_cache_cases as ccases  # noqa: E402
from tests.data import fuzz_dataset_cases as dcases  # noqa: E402
from tests.data import fuzz_mcap_cases as mcases  # noqa: E402
from tests.data.fuzz_inputs import (  # noqa: E402
    ACCEPTABLE,
    OUTCOMES,
    TASK,
    Run,
    attempt,
    convert_digest,
    copy_tree,
    digest_dataset,
    judge,
    scratch,
    training_digest,
)

Result = tuple[str, str, str, str, str]  # kind, entry point, case name, outcome, message


def _message(run: Run) -> str:
    if run.error is not None:
        return f"{type(run.error).__name__}: {run.error}"
    return "; ".join(run.skipped + run.warnings)


def fuzz_recordings(work: Path, pick: Callable[[Sequence[object]], Sequence[object]]) -> list[Result]:
    pristine = mcases.make_bags(work / "pristine")
    groups = {
        "rec": ([Path("rec")], {}),
        "ros2": ([Path("ros2")], {"robot_config": "robot.yaml", "task": TASK}),
    }

    def convert_in(root: Path, group: str, out: Path, skip_bad: bool, bags: list[Path] | None = None) -> Run:
        rel, kwargs = groups[group]
        paths = [root / p for p in (bags or rel)]
        kw = {k: (root / v if k == "robot_config" else v) for k, v in kwargs.items()}
        shutil.rmtree(out, ignore_errors=True)
        return attempt(lambda run: convert_digest(run, paths, out, skip_bad=skip_bad, **kw))

    reference = {g: convert_in(pristine, g, work / f"ref-{g}", False) for g in groups}
    for g, run in reference.items():
        assert run.error is None, f"the pristine {g} bags do not convert: {run.error!r}"
    # What --skip-bad must give when it leaves one bag out: the others converted on their own.
    without = {
        bag: convert_in(pristine, "rec", work / f"ref-{k}", False, [Path(b) for b in mcases.BAGS if b != bag])
        for k, bag in enumerate(mcases.BAGS)
    }
    results: list[Result] = []
    for case in pick(mcases.all_cases(pristine)):
        assert isinstance(case, mcases.Case)
        root = copy_tree(pristine, work / "case")
        case.damage(root / case.target)
        expect = None
        if case.group == "rec":
            expect = next(run for bag, run in without.items() if case.target.startswith(bag))
        for mode, skip_bad in (("qvla-convert", False), ("qvla-convert --skip-bad", True)):
            run = convert_in(root, case.group, work / "out", skip_bad)
            outcome = judge(run, reference[case.group], case.mentions(), expect)
            results.append((case.kind, mode, case.name, outcome, _message(run)))
    return results


def fuzz_datasets(work: Path, pick: Callable[[Sequence[object]], Sequence[object]]) -> list[Result]:
    pristine = dcases.make_dataset(work / "pristine")
    robot = dcases.robot()
    ref_read = attempt(lambda run: digest_dataset(pristine, robot))
    ref_train = attempt(lambda run: training_digest(pristine, robot, work / "ref-train"))
    for run in (ref_read, ref_train):
        assert run.error is None, f"the pristine dataset does not load: {run.error!r}"
    results: list[Result] = []
    for case in pick(dcases.all_cases(pristine)):
        assert isinstance(case, dcases.Case)
        root = copy_tree(pristine, work / "case")
        case.damage(root)
        shutil.rmtree(work / "train", ignore_errors=True)
        for mode, fn, ref in (
            ("LeRobot reader", lambda run, root=root: digest_dataset(root, robot), ref_read),
            (
                "qvla-train loading",
                lambda run, root=root: training_digest(root, robot, work / "train"),
                ref_train,
            ),
        ):
            run = attempt(fn)
            outcome = judge(run, ref, case.mentions())
            results.append((case.kind, mode, case.name, outcome, _message(run)))
    return results


def fuzz_caches(work: Path, pick: Callable[[Sequence[object]], Sequence[object]]) -> list[Result]:
    """A second qvla-train loading over the caches a first one left, one of them damaged."""
    dataset = dcases.make_dataset(work / "dataset")
    robot = dcases.robot()
    ref = attempt(lambda run: training_digest(dataset, robot, work / "ref"))
    assert ref.error is None, f"the pristine dataset does not load: {ref.error!r}"
    results: list[Result] = []
    for case in pick(ccases.cache_cases()):
        assert isinstance(case, dcases.Case)
        shutil.rmtree(work / "run", ignore_errors=True)
        first = attempt(lambda run: training_digest(dataset, robot, work / "run"))
        assert first.error is None and first.digest == ref.digest
        case.damage(work / "run")
        if case.target == "reader-cache":  # the training cache would be used instead
            shutil.rmtree(work / "run" / "train-cache")
        run = attempt(lambda run: training_digest(dataset, robot, work / "run"))
        results.append(
            (case.kind, "qvla-train loading", case.name, judge(run, ref, case.mentions()), _message(run))
        )
    return results


def table(results: Sequence[Result]) -> str:
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for kind, mode, _, outcome, _ in results:
        counts[(kind, mode)][outcome] += 1
    head = "| input kind | entry point | variants | " + " | ".join(OUTCOMES) + " |"
    rows = [head, "|" + "---|" * (3 + len(OUTCOMES))]
    for (kind, mode), c in counts.items():
        rows.append(
            f"| {kind} | {mode} | {sum(c.values())} | " + " | ".join(str(c[o]) for o in OUTCOMES) + " |"
        )
    total = Counter(r[3] for r in results)
    rows.append(
        f"| **all** | | **{len(results)}** | " + " | ".join(f"**{total[o]}**" for o in OUTCOMES) + " |"
    )
    return "\n".join(rows)


def report(results: Sequence[Result], command: str, seconds: float) -> str:
    bad = [r for r in results if r[3] not in ACCEPTABLE]
    lines = [
        "# Data fuzz: damaged recordings and datasets",
        "",
        f"`{command}` ({seconds:.0f} s on this machine). Every variant is one damage applied to a copy of a",
        "small valid input (bench/data_fuzz.py says which and how outcomes are judged); each runs through",
        "each entry point of its input kind. The bar: a clear error naming the file, or left out / loaded",
        "with a warning naming it where an option or fallback says so, or no effect at all; never",
        "silent-wrong, never a raw exception.",
        "",
        table(results),
        "",
        f"Runs that miss the bar: {len(bad)}.",
    ]
    notes = [
        "",
        "Inputs: recorder_node's bags (uncompressed, LZ4) store MCAP's data-section CRC, which qvla-convert",
        "checks when it opens a bag; the `no data CRC` rows are a recorder bag as written before it did",
        "(rosbag2 leaves it out too). MCAP has no other CRC over metadata records, so in such a bag a bit",
        "flip that turns the qvla_episode task text into other printable text cannot be told from the",
        "original: that is what a silent-wrong row there is. Unaffected runs are damage to bytes the",
        "readers never use (a chunk's own start time or length field, message indexes, the header).",
    ]
    lines += notes
    for kind, mode, name, outcome, message in bad:
        lines.append(f"- {kind} / {mode} / {name}: **{outcome}**: {message[:300]}")
    examples: dict[str, Result] = {}
    for r in results:
        examples.setdefault(r[0], r) if r[3] == OUTCOMES[0] else None
    lines += ["", "One error message per input kind, as a user sees it:", ""]
    for kind, (_, mode, name, _, message) in examples.items():
        lines.append(f"- {kind} ({name}, {mode}): `{message[:400]}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="write the Markdown report here")
    p.add_argument("--only", choices=("recordings", "datasets", "caches"), help="fuzz one input kind")
    p.add_argument("--every", type=int, default=1, help="run every n-th variant (a quicker sample)")
    p.add_argument("--verbose", action="store_true", help="print every run")
    args = p.parse_args(argv)
    import logging

    logging.getLogger("qvla").setLevel(logging.INFO)
    logging.getLogger("qvla").propagate = False  # warnings are collected per run, not printed

    def pick(cases: Sequence[object]) -> Sequence[object]:
        return cases[:: args.every]

    t0 = time.monotonic()
    work = scratch("bench")
    results: list[Result] = []
    try:
        if args.only in (None, "recordings"):
            results += fuzz_recordings(work / "bags", pick)
        if args.only in (None, "datasets"):
            results += fuzz_datasets(work / "datasets", pick)
        if args.only in (None, "caches"):
            results += fuzz_caches(work / "caches", pick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Messages name the damaged copies under the scratch directory; the report shows them relative.
    results = [(k, m, n, o, msg.replace(f"{work}/", "")) for k, m, n, o, msg in results]
    if args.verbose:
        for r in results:
            print(" | ".join(r[:4]), "|", r[4][:200])
    command = "python bench/data_fuzz.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = report(results, command.strip(), time.monotonic() - t0)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0 if all(r[3] in ACCEPTABLE for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
