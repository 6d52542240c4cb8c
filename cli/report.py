"""What a run did, from the agent's database: tasks and their rounds, alerts, latencies, traffic, storage."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.sealing import HealthCipher
from agent.storage import AgentStore
from agent.store import Store

PAID = frozenset({"order_food", "hail_ride"})
COMMITTED = frozenset(
    {"committed", "confirmed", "completed", "delivered", "arriving", "in_progress", "accepted", "processing", "placed",
     "accepted_by_merchant", "courier_assigned", "at_store", "picked_up", "near_customer", "done", "active"}
)  # fmt: skip


@dataclass(slots=True)
class TaskLine:
    """One task in the summary."""

    task_id: str
    user: str
    skill: str
    state: str
    rounds: int
    confirm_modality: str | None
    slots_autofilled: list[str]
    slots_asked: list[str]


@dataclass(slots=True)
class Summary:
    """The summary of a run."""

    db: str
    tasks: list[TaskLine] = field(default_factory=list)
    alerts: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_samples: int = 0
    timed_actions: int = 0
    answered: set[str] = field(default_factory=set)
    messages: dict[str, int] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)
    acks: dict[str, int] = field(default_factory=dict)
    health: dict[str, list[int]] = field(default_factory=dict)  # per type: [payloads with values, readable]

    @property
    def paid_rounds(self) -> list[int]:
        """Rounds of the paid tasks that were committed."""
        return [t.rounds for t in self.tasks if t.skill in PAID and t.state in COMMITTED]

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        data = asdict(self)
        del data["answered"]
        data["paid_rounds"] = self.paid_rounds
        return data


def timed_note(timed: int) -> str:
    """The note on timed actions that a latency line leaves out."""
    if not timed:
        return ""
    return f" ({timed} timed {'action' if timed == 1 else 'actions'} not counted: they wait for their time by design)"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def summarize(db: Path, cipher: HealthCipher | None = None) -> Summary:
    """Read a run's summary from the agent's database (``cipher``: the key its health values were sealed with)."""
    async with Store(db, cipher=cipher) as store:
        return await summary_of(store, str(db))


async def summary_of(store: AgentStore, name: str) -> Summary:
    """A run's summary from any open store (a SQLite file, a cluster's bucket in Redis), named ``name``."""
    summary = Summary(db=name)
    summary.health = {
        kind: [held, readable] for kind, (held, readable) in sorted((await store.health_samples()).items())
    }
    for t in await store.tasks():
        summary.tasks.append(
            TaskLine(t.task_id, t.user, t.skill, t.state, t.rounds, t.confirm_modality,
                     list(t.slots_autofilled), list(t.slots_asked))
        )  # fmt: skip
    summary.alerts = await store.alert_counts()
    # The first action an event caused in the turn that handled it (later ones are fallbacks and progress
    # updates by design). An event whose actions all came later caused a timed action (a "leave now" card at the
    # time to leave): it waited for its time, not for the agent, and is counted apart.
    latencies: list[float] = []
    for event_id, latency in await store.first_action_latencies():
        if latency is None:
            summary.timed_actions += 1
        else:
            latencies.append(latency)
            summary.answered.add(event_id)
    summary.latency_samples = len(latencies)
    if latencies:
        summary.latency_ms = {
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "max": max(latencies),
        }
    summary.messages.update(await store.message_counts())
    summary.stored = await store.stored_counts()
    summary.messages["cmd (actions out)"] = summary.stored["actions"]
    summary.acks.update(await store.action_status_counts())
    return summary


#: The two event-to-action latencies a summary may show, each saying what it measures (they differ by design).
LATENCY_STORED = (
    "Event to action, agent's record (the agent received the event -> the broker acknowledged the action, as "
    "stored at the agent's next store write)"
)
LATENCY_BUS = "Event to action on the bus (a subscriber saw the event -> saw the action it caused)"


def print_summary(summary: Summary, console: Console) -> None:
    """The human-readable summary."""
    tasks = Table(title="Tasks")
    for col in ("task", "skill", "state", "rounds", "confirmed by", "filled from context", "asked"):
        tasks.add_column(col)
    for t in summary.tasks:
        tasks.add_row(t.task_id, t.skill, t.state, str(t.rounds), t.confirm_modality or "-",
                      ", ".join(t.slots_autofilled) or "-", ", ".join(t.slots_asked) or "-")  # fmt: skip
    console.print(tasks)
    alerts = Table(title="Proactive rules that fired")
    alerts.add_column("rule")
    alerts.add_column("times", justify="right")
    for rule, n in summary.alerts.items():
        alerts.add_row(rule, str(n))
    console.print(alerts)
    lat = summary.latency_ms
    if lat:
        console.print(
            f"{LATENCY_STORED}: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
            f"max {lat['max']:.1f} ms over {summary.latency_samples} actions" + timed_note(summary.timed_actions)
        )
    traffic = Table(title="Messages")
    traffic.add_column("topic class")
    traffic.add_column("count", justify="right")
    for name, n in summary.messages.items():
        traffic.add_row(name, str(n))
    console.print(traffic)
    acks = ", ".join(f"{k} {v}" for k, v in sorted(summary.acks.items()))
    console.print(f"Action results: {acks or 'none'}")
    stored = ", ".join(f"{k} {v}" for k, v in summary.stored.items())
    console.print(f"Stored in {summary.db}: {stored}")
    if summary.paid_rounds:
        console.print(f"Interaction rounds of paid tasks: {summary.paid_rounds} (goal: 2 each)")
    if summary.health:
        held = ", ".join(f"{k} {n} ({r} readable)" for k, (n, r) in summary.health.items())
        console.print(f"Health samples with their values stored: {held}")
