"""What the agent remembers about messages beside its store, in small files next to its database (issue 18).

:class:`SeenFile` is a persistent set of digests: retained garbage (a device's retained event, undecodable bytes on
its state topic) comes again at every subscribe, i.e. at every start of the agent; it is dead-lettered the first
time and acknowledged silently after that, also across restarts.

:class:`Attempts` counts how often a message was in a batch the agent failed on and did not survive: past
``max_attempts`` it is parked on the DLQ instead of being handled again, so one message that crashes the agent
cannot do so for ever.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, MutableSet
from pathlib import Path


class SeenFile(MutableSet[str]):
    """A set of strings kept in a file, one a line (the newest ``limit`` at most)."""

    def __init__(self, path: Path, limit: int = 10_000) -> None:
        self.path = path
        self.limit = limit
        self._items: dict[str, None] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text(encoding="utf-8").splitlines():
                if line:
                    self._items[line] = None
        self._trim()

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, value: str) -> None:
        """Remember ``value`` (appended to the file at once: a crash right after must not forget it)."""
        if value in self._items:
            return
        self._items[value] = None
        if len(self._items) > self.limit:
            self._trim()
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(value + "\n")

    def discard(self, value: str) -> None:
        """Forget ``value``."""
        if self._items.pop(value, 0) is None:
            self._rewrite()

    def _trim(self) -> None:
        if len(self._items) > self.limit:
            for old in list(self._items)[: len(self._items) - self.limit]:
                del self._items[old]
            self._rewrite()

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text("".join(f"{v}\n" for v in self._items), encoding="utf-8")
        os.replace(tmp, self.path)


class Attempts:
    """How often each message (by envelope id) was in a batch the agent did not survive, kept in a file."""

    def __init__(self, path: Path, max_attempts: int = 3) -> None:
        self.path = path
        self.max_attempts = max_attempts
        self._counts: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self._counts = {str(k): int(v) for k, v in loaded.items()}

    def __len__(self) -> int:
        return len(self._counts)

    def suspect(self, message_id: str) -> bool:
        """Whether it was in a batch that failed before (it is then handled on its own)."""
        return message_id in self._counts

    def exhausted(self, message_id: str) -> bool:
        """Whether it failed ``max_attempts`` times: park it."""
        return self._counts.get(message_id, 0) >= self.max_attempts

    def count(self, message_id: str) -> int:
        """Its failures so far."""
        return self._counts.get(message_id, 0)

    def failed(self, ids: Iterable[str]) -> None:
        """These were in the batch being handled when the agent failed: one more attempt each (written at once)."""
        for i in ids:
            self._counts[i] = self._counts.get(i, 0) + 1
        self._save()

    def settled(self, ids: Iterable[str]) -> None:
        """These were handled or parked: forget them."""
        if not self._counts:
            return
        changed = False
        for i in ids:
            changed |= self._counts.pop(i, None) is not None
        if changed:
            self._save()

    def _save(self) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self._counts), encoding="utf-8")
        os.replace(tmp, self.path)
