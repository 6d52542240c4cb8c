"""Fair shares of the agent's inbox between users (issue 18, item 5).

The broker's queue towards the agent is one FIFO: behind one user's backlog of hundreds of samples, another user's
sentence waited for all of them. A :class:`FairQueue` takes what the bus delivered and hands the pump at most a
batch per turn, round-robin by user: every user with something waiting gets a message into the batch before any user
gets a second one. Each user's messages keep their order (the core's decisions depend on it); what does not fit
stays for the next turn (unacknowledged, so a crash loses nothing: the broker delivers it again).
"""

from __future__ import annotations

from collections import deque

from schemas.envelope import Message


class FairQueue:
    """Messages waiting for the pump, one FIFO per user, taken round-robin."""

    __slots__ = ("_queues", "_size")

    def __init__(self) -> None:
        self._queues: dict[str | None, deque[Message]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, messages: list[Message]) -> None:
        """Queue messages as they arrived (each after the earlier ones of its user)."""
        queues = self._queues
        for message in messages:
            user = message.where.user
            queue = queues.get(user)
            if queue is None:
                queue = queues[user] = deque()
            queue.append(message)
        self._size += len(messages)

    def take(self, limit: int) -> list[Message]:
        """Up to ``limit`` messages, round-robin by user (in the order users first had something waiting)."""
        if self._size <= limit:  # everything fits: no one waits (users are independent; each keeps its order)
            everything = [m for queue in self._queues.values() for m in queue]
            self._queues.clear()
            self._size = 0
            return everything
        out: list[Message] = []
        queues = self._queues
        while len(out) < limit and queues:
            for user in list(queues):
                queue = queues[user]
                out.append(queue.popleft())
                if not queue:
                    del queues[user]
                if len(out) >= limit:
                    break
        self._size -= len(out)
        return out
