"""One host's agent as N worker processes (``wearbus agent --workers N``): each owns a fixed share of the buckets.

A user belongs to bucket :func:`~agent.cluster.assignment.bucket_of` (the cluster's hash) and worker ``i`` of ``n``
owns the buckets ``b`` with ``b % n == i``. The membership is fixed, so nothing is claimed, fenced or handed over,
and each worker keeps its users' state in its own SQLite file (:meth:`WorkerShare.db`). Every worker subscribes the
agent's usual filters on its own persistent session and reads only its users' messages: :class:`WorkerBus`
acknowledges the others' unread, before they are decoded (a broker subscription cannot select by hash, and a
``$share`` group hands messages out round-robin, which would split a user's devices between workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from agent.cluster.assignment import DEFAULT_BUCKETS, bucket_of
from broker.client import Bus, BusOptions
from schemas.errors import ConfigError
from schemas.topics import ROOT

_PREFIX = ROOT + "/"


@dataclass(frozen=True, slots=True)
class WorkerShare:
    """Worker ``index`` of ``count``, owning the buckets ``b`` (of ``buckets``) with ``b % count == index``."""

    index: int
    count: int
    buckets: int = DEFAULT_BUCKETS

    def __post_init__(self) -> None:
        if not 1 <= self.count <= self.buckets <= 4096:
            raise ConfigError(f"workers must be 1..{self.buckets} (the buckets) and buckets at most 4096")
        if not 0 <= self.index < self.count:
            raise ConfigError(f"worker index {self.index} is not in 0..{self.count - 1}")

    def owns(self, user: str) -> bool:
        """Whether this worker handles ``user``."""
        return _worker_of(user, self.buckets, self.count) == self.index

    def instance(self, base: str) -> str:
        """The worker's instance id (its MQTT client id and state topic): ``{base}-w{index}``."""
        return f"{base}-w{self.index}"

    def db(self, base: Path) -> Path:
        """The worker's SQLite database: ``agent.db`` becomes ``agent.w0.db``, ``agent.w1.db``, ..."""
        return base.with_name(f"{base.stem}.w{self.index}{base.suffix or '.db'}")


@lru_cache(maxsize=65_536)
def _worker_of(user: str, buckets: int, count: int) -> int:
    return bucket_of(user, buckets) % count


def user_level(topic: str) -> str | None:
    """The user level of a ``wb/v1/{user}/...`` topic (None for other topics)."""
    if not topic.startswith(_PREFIX):
        return None
    parts = topic.split("/", 3)
    return parts[2] if len(parts) > 3 else None  # wb, v1, user, the rest


class WorkerBus(Bus):
    """The bus of one worker: messages of other workers' users are acknowledged unread (:meth:`Bus.pass_over`).

    A topic's user level decides, whatever it holds, so exactly one worker reads (or rejects) each message;
    topics without one reach every worker.
    """

    def __init__(self, options: BusOptions, share: WorkerShare) -> None:
        super().__init__(options)
        self.share = share
        self.passed = 0

    def deliver(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, content_type: str | None) -> None:
        user = user_level(topic)
        if user is not None and not self.share.owns(user):
            self.passed += 1
            self.pass_over(qos, mid)
            return
        super().deliver(topic, payload, qos, retain, mid, content_type)
