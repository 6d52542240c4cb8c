"""``wearbus bench`` (quick mode) end to end: the command runs, and every documented figure is there and positive.

Timing and ratios are never asserted (the machine is shared): only that each figure exists and is positive, that
nothing was lost, and that the JSON report has the keys docs/benchmarks.md documents.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.conftest import soaking

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.broker, pytest.mark.timeout(400)]

BENCH = (sys.executable, "-c", "import typer; from bench.agent import bench_command; typer.run(bench_command)")
#: The quick mode at a tenth of its sizes (every section, every figure; 30-40 s instead of 3-4 min on 2 busy cores):
#: this test checks that every figure is there, not what it is. ``--soak`` (or WB_SOAK=1) runs the real quick mode.
SMALL = (
    "import dataclasses, typer, bench.agent as b; "
    "b.QUICK = dataclasses.replace(b.QUICK, backlog_users=40, backlog_per_user=50, rtt_samples=100, rtt_warmup=20, "
    "probe_users=10, load_users=20, load_warmup_s=1.0, scale_users=40, scale_warmup_s=1.0, scale_window_s=3.0, "
    "core_users=40, ingest_rounds=2); typer.run(b.bench_command)"
)
TOP_KEYS = {"schema", "mode", "started", "machine", "mix", "workdir", "broker", "throughput", "latency", "scale",
            "dlq", "core_memory", "duration_s", "rows", "ratios", "targets"}  # fmt: skip
RECEIVERS = {"paho_q1", "bus_q1", "agent_q1", "native_q1", "gmqtt_q1"}
LATENCIES = {"rtt_paho_idle", "e2e_idle", "rtt_paho_load", "e2e_load"}


def test_quick_bench_reports_every_figure(tmp_path: Path, pytestconfig: pytest.Config) -> None:
    out = tmp_path / "bench.json"
    bench = BENCH if soaking(pytestconfig) else (sys.executable, "-c", SMALL)
    done = subprocess.run(
        [*bench, "--json", str(out), "--keep", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=380, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "agent / paho, QoS 1" in done.stdout
    report = json.loads(out.read_text())
    assert report["databases_removed_mib"] == 0  # --keep: everything stays
    assert list((tmp_path / "run").glob("bench-agent-*.db"))
    assert set(report) >= TOP_KEYS
    assert report["mode"] == "quick"
    tp = report["throughput"]
    assert set(tp) >= RECEIVERS
    for name in RECEIVERS | {n for n in ("paho_q0", "c_q0", "c_q1", "paho5_q1", "bus_paho_q1") if n in tp}:
        assert tp[name]["rate"] > 0, name
        assert tp[name]["lost"] == 0, name
    assert tp["rounds"] == 2  # each figure the median of two drains, every drain's figures kept
    assert [run["lost"] for run in tp["agent_q1"]["rounds"]] == [0, 0]
    floor = tp["store_floor"]  # the agent's own stored rows, written again with bare sqlite3
    assert floor["events"] == tp["agent_q1"]["received"]
    assert floor["cpu_us_per_event"] > 0
    assert report["ratios"]["floor: Bus CPU per message + SQLite floor"] > 0
    lat = report["latency"]
    assert set(lat) >= LATENCIES
    for name in LATENCIES:
        assert lat[name]["n"] > 0, name
        assert 0 < lat[name]["p50_us"] <= lat[name]["p99_us"] <= lat[name]["p999_us"], name
    sc = report["scale"]
    for key in ("offered_per_s", "stored_per_s", "agent_cpu_pct", "agent_rss_mb", "fleet_cpu_pct"):
        assert sc[key] > 0, key
    assert sc["connections"] == 4 * sc["users"]
    assert sc["host_idle_pct"] >= 0
    assert sc["fleet"]["connect_failed"] == 0
    assert report["core_memory"]["bytes_per_user"] > 0
    assert report["ratios"]["agent / paho, QoS 1"] > 0
    assert {"target", "met"} <= set(next(iter(report["targets"].values())))
    for row in report["rows"]:
        assert {"section", "metric", "value", "unit", "ratio", "baseline", "target", "met"} == set(row)


def test_only_runs_the_chosen_sections_and_refuses_unknown_ones(tmp_path: Path) -> None:
    out = tmp_path / "core.json"
    done = subprocess.run([sys.executable, "-c", SMALL, "--only", "core,scale", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["core_memory"]["bytes_per_user"] > 0
    assert report["scale"]["stored_per_s"] > 0
    workdir = Path(report["workdir"])  # no --keep: a temporary directory where the logs stay, the databases go
    assert list(workdir.glob("bench-agent-*.log"))
    assert not list(workdir.glob("*.db*"))
    assert report["databases_removed_mib"] > 0
    assert "databases, " in done.stdout
    assert "throughput" not in report
    assert "latency" not in report
    bad = subprocess.run([*BENCH, "--only", "ingest,speed"], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2
    assert "--only takes some of" in bad.stdout + bad.stderr


def test_the_ingest_of_an_agent_as_workers_counts_every_worker(tmp_path: Path) -> None:
    """``--workers 2``: each worker's session gets the backlog, each stores its own users' share, and the agent's
    figures are the sums over both databases and processes (the rate from their arrival times together)."""
    out = tmp_path / "ingest.json"
    done = subprocess.run(
        [sys.executable, "-c", SMALL, "--only", "ingest", "--rounds", "1", "--workers", "2", "--json", str(out),
         "--keep", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tp = json.loads(out.read_text())["throughput"]
    assert tp["workers"] == 2
    agent = tp["agent_q1"]
    assert agent["received"] == agent["expected"] == tp["events"]
    assert agent["lost"] == 0
    assert agent["rate"] > 0
    assert agent["cpu_s"] > 0
    stored = []
    for db in sorted((tmp_path / "run").glob("bench-ingest-*.w?.db")):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            stored.append(con.execute("SELECT COUNT(*) FROM events WHERE id LIKE 'bk-%'").fetchone()[0])
        finally:
            con.close()
    assert len(stored) == 2
    assert all(stored)  # each worker stored its own users' share
    assert sum(stored) == agent["received"]
