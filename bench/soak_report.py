"""The report of bench/soak.py: docs/bench/soak.md, soak.json (machine-readable, what CI asserts on)
and soak.png beside it. Rewritten after every sample and marked partial until the run has ended, so
an interrupted run leaves a valid report of what ran."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from machine_info import cpu_model

from qvla_core.robot_io import load_robot_config

WARMUP_NOTE = "warm-up: the first 20% of the run, at most 5 min"
RSS_FLAT_PCT = 5.0


def mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


class Report:
    def __init__(self, args: Any, sched: Any, spec: Any) -> None:
        self.args, self.sched, self.spec = args, sched, spec
        self.config = load_robot_config(spec.parameters["robot_config"])
        safety, dt = self.config.ros.safety, self.config.embodiment.dt
        # A command after a stale input may come at most this late: the image age limit, two control
        # periods (the watchdog's tick and the command's), 50 ms of transport and scheduling.
        self.limit_s = safety.max_image_age_s + 2 * dt + 0.05
        self.out = Path(args.out)
        self.samples: list[dict[str, Any]] = []
        self.stale: list[dict[str, Any]] = []
        self.instructions: list[dict[str, Any]] = []
        self.faults: list[tuple[float, str]] = []
        self.latencies: list[float] = []  # inference_latency of every chunk since the start
        self.notes: list[str] = []
        self.lost_before_start: dict[str, int] = {}  # sent before the node subscribed: not counted
        self.t_end_pause = float("inf")  # when every input stopped at the end (its fault is expected)
        self.latency_summary: dict[str, Any] = {}  # from a JSON, where the latencies are not kept
        self.final: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}
        self.complete = False
        self.written_utc = ""  # set when re-rendered from a JSON: the run's own time
        self.t0 = time.time()
        self.started_utc = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())

    @classmethod
    def from_json(cls, data: dict[str, Any], args: Any, sched: Any) -> Report:
        """A finished (or cut) run's report again from its JSON, e.g. after the page layout changed."""
        r = cls(args, sched, SimpleNamespace(parameters=data["node_parameters"]))
        r.samples, r.stale = data["samples"], data["stale_injections"]
        r.instructions, r.final, r.notes = data["instruction_changes"], data["final"], data["notes"]
        r.lost_before_start = data.get("lost_before_start") or {}
        r.complete, r.started_utc, r.written_utc = not data["partial"], data["started"], data["written"]
        # The JSON's times are relative to the start (t_s, rounded to 0.1 s) except each injection's
        # t_last; the start is rebuilt from the first injection.
        r.t0 = r.stale[0]["t_last"] - r.stale[0]["t_s"] if r.stale else 0.0
        r.faults = [(r.t0 + f["t_s"], f["fault"]) for f in data["faults"]]
        end = data.get("t_end_pause_s") or data["final"].get("elapsed_s")
        r.t_end_pause = r.t0 + end if end else float("inf")
        keys = ("chunks_observed", "latency_p50_s", "latency_p99_s", "latency_max_s")
        r.latency_summary = {k: data["summary"][k] for k in keys if k in data["summary"]}
        return r

    # ------------------------------------------------------------ recording
    def start(self, t0: float) -> None:
        self.t0 = t0
        self.started_utc = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t0))

    def note(self, text: str) -> None:
        print(f"soak: {text}", flush=True)
        self.notes.append(text)

    def add_sample(self, row: dict[str, Any]) -> None:
        self.samples.append(row)

    def add_instruction(self, t: float, text: str, ok: bool, message: str) -> None:
        self.instructions.append({"t_s": round(t, 1), "instruction": text, "success": ok, "message": message})

    def add_stale(self, res: dict[str, Any], t0: float) -> None:
        topics = res["topics"].values()
        delays = [v["hold_delay_s"] for v in topics if v["hold_delay_s"] is not None]
        after = sum(v["commands_after_hold"] for v in topics)
        rec = [v["recovery_s"] for v in topics]
        # On time: at the limit every controller's last trajectory is a hold (the one sent for this
        # camera, or one from a fault the node was already holding for: it sends no second hold),
        # and no command follows until the camera is back.
        on_time = all(
            v.get("held_at_limit", v["hold_delay_s"] is not None and v["hold_delay_s"] <= self.limit_s)
            and v.get("commands_after_limit", 0) == 0
            and v["commands_after_hold"] == 0
            for v in topics
        )
        entry = {
            "t_s": round(res["t_last"] - t0, 1),
            "camera": res["camera"],
            "t_last": res["t_last"],
            "t_resume": res["t_resume"],
            "hold_delay_s": max(delays) if len(delays) == len(topics) else None,  # the later controller's
            "already_holding": any(v.get("already_holding") for v in topics),
            "per_topic": res["topics"],
            "commands_after_hold": after,
            "recovery_s": None if None in rec else max(rec),
            "on_time": on_time,
        }
        worst = entry["hold_delay_s"]
        self.stale.append(entry)
        print(
            f"soak: t={entry['t_s']:.0f} s {res['camera']} stale: hold after {fmt(worst)} s "
            f"(limit {self.limit_s:.2f}), {after} commands after the hold, recovered in "
            f"{fmt(entry['recovery_s'])} s",
            flush=True,
        )

    # ------------------------------------------------------------ summary
    def _expected_fault(self, t: float, text: str) -> bool:
        return any(
            s["t_last"] - 0.5 <= t <= s["t_resume"] + self.sched.stale_settle_s + 1.0 and s["camera"] in text
            for s in self.stale
        )

    def summarize(self) -> dict[str, Any]:
        rows = [r for r in self.samples if not np.isnan(r["rss_mb"])]
        warm = [r for r in rows if r["t_s"] >= self.sched.warmup_s]
        s: dict[str, Any] = {"limit_s": round(self.limit_s, 3), "warmup_s": self.sched.warmup_s}
        if warm:
            base = warm[0]["rss_mb"]
            s["rss_after_warmup_mb"] = base
            s["rss_last_mb"] = warm[-1]["rss_mb"]
            s["rss_growth_pct"] = round(100.0 * (warm[-1]["rss_mb"] - base) / base, 2)
            s["rss_max_deviation_pct"] = round(max(100.0 * abs(r["rss_mb"] - base) / base for r in warm), 2)
            s["rss_flat"] = s["rss_max_deviation_pct"] <= RSS_FLAT_PCT
        s["rss_peak_mb"] = max((r["rss_mb"] for r in rows), default=None)
        s["chunks_observed"] = len(self.latencies)
        s.update(self.latency_summary)
        if self.latencies:
            s["latency_p50_s"] = round(float(np.percentile(self.latencies, 50)), 4)
            s["latency_p99_s"] = round(float(np.percentile(self.latencies, 99)), 4)
            s["latency_max_s"] = round(max(self.latencies), 4)
        delays = [x["hold_delay_s"] for x in self.stale if x["hold_delay_s"] is not None]
        s["stale_injections"] = len(self.stale)
        s["stale_on_time"] = sum(1 for x in self.stale if x["on_time"])
        s["max_hold_delay_s"] = round(max(delays), 4) if delays else None
        s["all_holds_on_time"] = bool(self.stale) and all(x["on_time"] for x in self.stale)
        lost = self.final.get("lost") or (self.samples[-1].get("lost") if self.samples else None)
        s["frames_lost"] = lost
        s["frames_lost_exact"] = "lost" in self.final
        s["instruction_changes"] = len(self.instructions)
        s["instruction_changes_ok"] = sum(1 for x in self.instructions if x["success"])
        # Faults before the start and after the final stop of every input are the run's own.
        during = [f for f in self.faults if self.t0 <= f[0] < self.t_end_pause]
        expected = [f for f in during if self._expected_fault(*f)]
        s["faults_injected"] = len(expected)
        s["faults_unexpected"] = [
            {"t_s": round(t - self.t0, 1), "fault": text} for t, text in during if (t, text) not in expected
        ]
        s["robot_max_gap_s"] = {
            k: max((r.get("robot_max_gap_s", {}).get(k, 0.0) for r in self.samples), default=None)
            for k in ("camera", "state")
        }
        last = self.samples[-1] if self.samples else {}
        s["commands_received"] = last.get("commands_received", 0)
        s["node_alive"] = all(r["node_alive"] for r in self.samples)
        s["exit_code"] = self.final.get("exit_code")
        s["traceback_in_log"] = self.final.get("traceback_in_log")
        s["no_crash"] = s["node_alive"] and s["exit_code"] == 0 and not s["traceback_in_log"]
        # A run cut short has not shown its goals for the whole duration.
        s["pass"] = bool(
            self.complete
            and s["no_crash"]
            and s["all_holds_on_time"]
            and s.get("rss_flat", False)
            and s["commands_received"] > 0
        )
        return s

    # ------------------------------------------------------------ output
    def progress_line(self) -> str:
        r = self.samples[-1]
        lost = sum(r.get("lost", {}).get(c.camera, 0) for c in self.config.ros.cameras)
        on_time = sum(1 for x in self.stale if x["on_time"])
        return (
            f"soak: {r['t_s'] / 60:5.1f}/{self.args.duration_s / 60:.0f} min  rss {r['rss_mb']:.0f} MB  "
            f"latency p50 {fmt(r['latency_p50_s'])} p99 {fmt(r['latency_p99_s'])} s  "
            f"commands {r['commands_received']}  frames lost {lost}  "
            f"holds on time {on_time}/{len(self.stale)}  "
            f"load {r['loadavg'][0]:.1f}"
        )

    def _table_rows(self) -> list[dict[str, Any]]:
        """One row per sample, or per minute when there are more than 60 samples."""
        if len(self.samples) <= 60:
            return self.samples
        rows, minute = [], -1
        for r in self.samples:
            if int(r["t_s"] // 60) != minute:
                minute = int(r["t_s"] // 60)
                rows.append(r)
        if rows[-1] is not self.samples[-1]:
            rows.append(self.samples[-1])
        return rows

    def table_text(self) -> str:
        cams = [c.camera for c in self.config.ros.cameras]
        head = "| t [min] | RSS [MB] | p50 [s] | p99 [s] | chunks | commands | holds | frames lost (cams) "
        head += "| faults | load 1m |"
        lines = [head, "|" + "---:|" * 10]
        other = [f["t_s"] for f in self.summary.get("faults_unexpected", [])]
        rows = self._table_rows()
        for k, r in enumerate(rows):
            lost = r.get("lost", {})
            since = rows[k - 1]["t_s"] if k else 0.0
            n_faults = sum(1 for t in other if since < t <= r["t_s"])
            lines.append(
                f"| {r['t_s'] / 60:.1f} | {r['rss_mb']:.1f} | {fmt(r['latency_p50_s'])} | "
                f"{fmt(r['latency_p99_s'])} | {r['chunks_window']} | {r['commands_received']} | "
                f"{r['holds_received']} | {sum(lost.get(c, 0) for c in cams)} | {n_faults} | "
                f"{r['loadavg'][0]:.2f} |"
            )
        return "\n".join(lines)

    def finish(self, final: dict[str, Any], complete: bool) -> None:
        self.final, self.complete = final, complete
        self.write(plot=True)

    def write(self, plot: bool = False, json_too: bool = True) -> None:
        self.summary = self.summarize()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "partial": not self.complete,
            "command": self.args.command,
            "started": self.started_utc,
            "written": self.written_utc or time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "duration_s": self.args.duration_s,
            "elapsed_s": self.final.get("elapsed_s", round(time.time() - self.t0, 1)),
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "mem_gib": round(mem_total_gib(), 1)},
            "node_parameters": {k: v for k, v in self.spec.parameters.items() if k != "checkpoint"},
            "ros_domain_id": self.args.domain_id,
            "schedule": vars(self.sched)
            | {
                "stale_at": [float(x) for x in self.sched.stale_at],
                "instruction_at": [float(x) for x in self.sched.instruction_at],
            },
            "summary": self.summary,
            "stale_injections": self.stale,
            "instruction_changes": self.instructions,
            "faults": [{"t_s": round(t - self.t0, 1), "fault": f} for t, f in self.faults],
            "samples": self.samples,
            "final": self.final,
            "lost_before_start": self.lost_before_start,
            "t_end_pause_s": None
            if self.t_end_pause == float("inf")
            else round(self.t_end_pause - self.t0, 2),
            "notes": self.notes,
        }
        if json_too:  # not when re-rendering from the JSON: it stays what the run measured
            _atomic_write(self.out.with_suffix(".json"), json.dumps(data, indent=1, default=str))
        if plot and self.samples:
            self._plot()
        _atomic_write(self.out, self._markdown(data))

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cams = [c.camera for c in self.config.ros.cameras]
        t = np.array([r["t_s"] / 60 for r in self.samples])
        fig, ax = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
        ax[0].plot(t, [r["rss_mb"] for r in self.samples], label="policy node RSS")
        ax[0].axvspan(0, self.sched.warmup_s / 60, color="0.9", label="warm-up")
        ax[0].set_ylabel("RSS [MB]")
        ax[0].legend(loc="lower right")
        p50 = [np.nan if r["latency_p50_s"] is None else r["latency_p50_s"] for r in self.samples]
        p99 = [np.nan if r["latency_p99_s"] is None else r["latency_p99_s"] for r in self.samples]
        ax[1].plot(t, p50, label="p50")
        ax[1].plot(t, p99, label="p99")
        ax[1].set_ylabel("inference latency [s]")
        ax[1].legend(loc="upper right")
        for c in cams:
            ax[2].plot(t, [r.get("lost", {}).get(c, np.nan) for r in self.samples], label=c)
        ax[2].set_ylabel("frames lost (cumulative)")
        ax[2].legend(loc="upper left", fontsize=7)
        ax[3].plot(t, [r["loadavg"][0] for r in self.samples], label="1 min load average")
        for x in self.stale:
            for a in ax:
                a.axvline(x["t_s"] / 60, color="r", alpha=0.25, lw=0.8)
        ax[3].set_ylabel("load (2 cores)")
        ax[3].set_xlabel("minutes (red lines: stale-camera injections)")
        fig.tight_layout()
        tmp = self.out.with_suffix(".png.tmp")
        fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)
        os.replace(tmp, self.out.with_suffix(".png"))

    def _markdown(self, data: dict[str, Any]) -> str:
        from soak_markdown import markdown

        return markdown(self, data)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
