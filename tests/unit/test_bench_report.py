"""The benchmark's statistics and its report table (no broker: a synthetic report)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from bench import harness as hx
from bench.agent import summarize
from bench.raw import latency_summary, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 0.999) == 100
    assert percentile([], 0.5) == 0
    assert percentile([7.0], 0.999) == 7


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200))
def test_latency_summary_is_ordered(samples: list[float]) -> None:
    s = latency_summary(samples)
    assert s["n"] == len(samples)
    assert min(samples) <= s["p50_us"] <= s["p99_us"] <= s["p999_us"] <= s["max_us"] == max(samples)


def test_ratio_handles_missing_figures() -> None:
    assert hx.ratio(10, 4) == 2.5
    assert hx.ratio(None, 4) is None
    assert hx.ratio(1, 0) is None


def recv(rate: float, lost: int = 0) -> dict[str, Any]:
    return {"rate": rate, "lost": lost, "received": 100 - lost, "expected": 100, "cpu_us_per_msg": 40.0}


def lat(p50: float, p99: float) -> dict[str, float]:
    return {"p50_us": p50, "p99_us": p99, "p999_us": p99 * 2, "n": 1000.0}


def report(agent_rate: float, e2e_p50: float, per_user_kb: float) -> dict[str, Any]:
    return {
        "throughput": {
            "users": 10,
            "paho_q1": recv(20_000),
            "c_q1": recv(40_000),
            "bus_q1": recv(10_000),
            "agent_q1": recv(agent_rate),
            "broker_dropped": 0,
        },
        "latency": {
            "rtt_paho_idle": lat(200, 400),
            "rtt_paho_load": lat(250, 900),
            "e2e_idle": lat(300, 700),
            "e2e_load": lat(e2e_p50, 1500),
            "load": {"users": 100},
        },
        "scale": {
            "users": 100,
            "connections": 400,
            "offered_per_s": 500.0,
            "stored_per_s": 499.0,
            "keep_up": 0.998,
            "lost": 0,
            "fleet": {"connect_failed": 0, "lost_connections": 0},
            "agent_cpu_pct": 20.0,
            "fleet_cpu_pct": 5.0,
            "agent_rss_mb": 80.0,
            "broker_cpu_pct": 3.0,
            "broker_rss_mb": 10.0,
            "agent_rss_per_user_kb": per_user_kb,
            "broker_dropped": 0,
        },
        "core_memory": {"users": 10.0, "bytes_per_user": 4096.0},
    }


def verdicts(rows: list[hx.Row]) -> dict[str, bool | None]:
    return {r.metric: r.met for r in rows if r.target}


def test_targets_are_judged_on_same_run_ratios() -> None:
    met = verdicts(summarize(report(agent_rate=21_000, e2e_p50=350, per_user_kb=8)))
    assert met["agent / paho, QoS 1"] is True
    assert met["agent / mosquitto_sub, QoS 1"] is True
    assert met["utterance to glasses under load (100 users) p50"] is True
    assert met["utterance to glasses under load (100 users) p99"] is True
    assert met["p50 under load / paho RTT idle"] is True  # 350 / 200
    assert met["p99 under load / paho RTT idle"] is True  # 1,500 / 400
    assert met["agent RSS growth per user"] is True
    missed = verdicts(summarize(report(agent_rate=9_000, e2e_p50=900, per_user_kb=20)))
    assert missed["agent / paho, QoS 1"] is False
    assert missed["agent / mosquitto_sub, QoS 1"] is False
    assert missed["utterance to glasses under load (100 users) p50"] is False
    assert missed["p50 under load / paho RTT idle"] is False
    assert missed["agent RSS growth per user"] is False
    # Met against the round trip under the same load (500 / 250), missed against the idle one (500 / 200).
    split = verdicts(summarize(report(agent_rate=21_000, e2e_p50=500, per_user_kb=8)))
    assert split["utterance to glasses under load (100 users) p50"] is True
    assert split["p50 under load / paho RTT idle"] is False


def test_agent_cpu_per_event_is_judged() -> None:
    rep = report(agent_rate=21_000, e2e_p50=350, per_user_kb=8)
    assert verdicts(summarize(rep))["agent CPU per event"] is False  # 40 µs
    rep["throughput"]["agent_q1"]["cpu_us_per_msg"] = 20.0
    assert verdicts(summarize(rep))["agent CPU per event"] is True
    rep["throughput"]["agent_q1"]["cpu_us_per_msg"] = 0.0  # not measured
    assert verdicts(summarize(rep))["agent CPU per event"] is None


def test_events_lost_counts_each_receiver_once() -> None:
    rep = report(agent_rate=21_000, e2e_p50=350, per_user_kb=8)
    rep["throughput"]["agent_q1"]["lost"] = 3
    rep["throughput"]["paho_q1"]["lost"] = 2
    rows = {r.metric: r for r in summarize(rep)}
    assert rows["events lost (all receivers)"].value == 5  # the agent's 3 once, not twice
    assert rows["events lost (all receivers)"].met is False


def test_ratio_rows_carry_the_ratio() -> None:
    rows = {r.metric: r for r in summarize(report(agent_rate=10_000, e2e_p50=400, per_user_kb=8))}
    assert rows["agent / paho, QoS 1"].ratio == pytest.approx(0.5)
    assert rows["utterance to glasses under load (100 users) p50"].ratio == pytest.approx(1.6)  # the loaded RTT
    assert rows["utterance to glasses under load (100 users) p50"].baseline == "paho RTT load p50"
    assert rows["p50 under load / paho RTT idle"].ratio == pytest.approx(2.0)
    assert rows["utterance to glasses idle p50"].ratio == pytest.approx(1.5)  # idle against idle
    assert rows["utterance to glasses idle p50"].target == "<= 2x"  # the targets hold idle too
    assert rows["utterance to glasses idle p50"].met is True
    assert rows["utterance to glasses idle p99"].target == "<= 5x"


def test_missing_sections_give_fewer_rows_not_errors() -> None:
    assert summarize({}) == []
    partial = report(10_000, 400, 8)
    del partial["scale"], partial["latency"]
    assert {r.section for r in summarize(partial)} == {"raw baselines", "agent ingest", "scale"}


def test_render_and_json_keep_every_row() -> None:
    rows = summarize(report(agent_rate=10_000, e2e_p50=400, per_user_kb=8))
    console = Console(record=True, width=220)
    table = hx.render(rows, "t", console)
    assert table.row_count == len(rows)
    assert "agent / paho, QoS 1" in console.export_text()
    as_json = hx.rows_to_json(rows)
    assert [r["metric"] for r in as_json] == [r.metric for r in rows]
    assert set(as_json[0]) == {"section", "metric", "value", "unit", "ratio", "baseline", "target", "met"}


def test_markdown_table_has_a_line_per_row() -> None:
    rows = summarize(report(agent_rate=9_000, e2e_p50=900, per_user_kb=20))
    text = hx.rows_to_markdown(rows)
    lines = text.strip().splitlines()
    assert len(lines) == len(rows) + 2
    assert all(line.startswith("|") and line.endswith("|") for line in lines)
    assert "**missed**" in text


def test_fleet_rate_uses_each_process_own_report_times() -> None:
    before = [(100.0, 1_000), (200.0, 50)]
    after = [(102.0, 3_000), (201.0, 550)]
    assert hx.FleetGroup.rate(before, after) == pytest.approx(1_000 + 500)
    assert hx.FleetGroup.rate([(5.0, 10)], [(5.0, 10)]) == 0


def test_no_samples_is_reported_as_missed_not_as_zero_latency() -> None:
    broken = report(agent_rate=9_000, e2e_p50=900, per_user_kb=0)
    broken["latency"]["e2e_load"] = {"n": 0.0, "p50_us": 0.0, "p99_us": 0.0, "p999_us": 0.0, "timeouts": 20}
    broken["scale"]["stored"] = 0
    rows = {r.metric: r for r in summarize(broken)}
    assert "utterance to glasses under load (100 users) p50" not in rows
    assert rows["utterance to glasses under load: no answer in 5 s (probing stopped)"].met is False
    assert rows["agent RSS growth per user"].value is None


def test_the_scale_section_shows_the_cpu_the_agent_needs_against_what_the_host_leaves_it() -> None:
    busy = report(agent_rate=21_000, e2e_p50=350, per_user_kb=8)
    busy["scale"].update(agent_cpu_pct=80.0, stored_per_s=10_000.0, offered_per_s=12_000.0, host_idle_pct=4.0)
    rows = {r.metric: r for r in summarize(busy)}
    assert rows["agent CPU per stored event"].value == pytest.approx(80.0)
    assert rows["CPU the agent could have had (its own + idle)"].value == pytest.approx(84.0)
    need = rows["agent CPU the offered rate needs at that cost"]
    assert need.value == pytest.approx(96.0)
    assert need.ratio == pytest.approx(96 / 84)
    busy["scale"]["host_idle_pct"] = 150.0  # a core and more idle: one process uses one at most
    assert {r.metric: r for r in summarize(busy)}["CPU the agent could have had (its own + idle)"].value == 100
    del busy["scale"]["host_idle_pct"]  # a report of before: the need alone
    metrics = {r.metric for r in summarize(busy)}
    assert "agent CPU the offered rate needs at that cost" in metrics
    assert "CPU the agent could have had (its own + idle)" not in metrics


def test_scale_probes_that_got_no_answer_are_a_row_not_a_silence() -> None:
    behind = report(agent_rate=21_000, e2e_p50=350, per_user_kb=8)
    behind["scale"]["e2e_scale"] = {"n": 0.0, "p50_us": 0.0, "p99_us": 0.0, "timeouts": 20, "aborted": True}
    rows = {r.metric: r for r in summarize(behind)}
    assert "utterance to glasses at 100 users p50" not in rows
    assert rows["utterance to glasses at 100 users: probes without an answer in 5 s (probing stopped)"].value == 20
    assert rows["utterance to glasses at 100 users: probes without an answer in 5 s (probing stopped)"].met is False
    some = report(agent_rate=21_000, e2e_p50=350, per_user_kb=8)
    some["scale"]["e2e_scale"] = {**lat(2_000, 9_000), "timeouts": 3, "aborted": False}
    rows = {r.metric: r for r in summarize(some)}
    assert rows["utterance to glasses at 100 users p50"].value == 2_000
    assert rows["utterance to glasses at 100 users: probes without an answer in 5 s"].value == 3


def test_scale_latency_is_judged_against_the_raw_round_trip_under_the_same_load() -> None:
    scaled = report(agent_rate=21_000, e2e_p50=350, per_user_kb=8)
    scaled["scale"]["rtt_paho_scale"] = lat(1_000, 4_000)
    scaled["scale"]["e2e_scale"] = {**lat(2_000, 19_000), "timeouts": 0, "aborted": False}
    rows = {r.metric: r for r in summarize(scaled)}
    assert rows["paho round trip under scale load p99"].value == 4_000
    ratio = rows["utterance to glasses at 100 users p99 / paho RTT under scale load"]
    assert ratio.ratio == pytest.approx(4.75)
    assert ratio.met is True
    none_lost = rows["utterance to glasses at 100 users: probes without an answer in 5 s"]
    assert (none_lost.value, none_lost.met) == (0, True)  # shown also when none timed out
    scaled["scale"]["e2e_scale"]["p99_us"] = 21_000
    assert verdicts(summarize(scaled))["utterance to glasses at 100 users p99 / paho RTT under scale load"] is False


def test_without_keep_a_run_leaves_its_logs_and_not_its_databases(tmp_path: Path) -> None:
    """A full run's databases are 0.4-0.7 GB: left in the temporary directory each time, they filled /tmp."""
    db = tmp_path / "bench-agent-1.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()  # the -wal and -shm files exist while it is open
    for side in ("bench-agent-1.db.retained", "bench-agent-1.db.attempts"):
        (tmp_path / side).write_text("x")
    (tmp_path / "bench-agent-1.log").write_text("a log line\n")
    (tmp_path / "mosquitto.conf").write_text("listener 1883\n")
    size = sum(p.stat().st_size for p in tmp_path.iterdir() if ".db" in p.name)
    con.close()  # (SQLite removes the -wal at close: what is left is counted again below)
    freed = hx.drop_databases(tmp_path)
    assert 0 < freed <= size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench-agent-1.log", "mosquitto.conf"]
