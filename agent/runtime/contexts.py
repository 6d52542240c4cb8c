"""The retained context of each user (``context``, ``health``, ``consent``): republished when it changed, at most
once per ``context_s`` (while the agent is behind, :data:`BEHIND_WAIT` times that), a slice of users per pump turn;
the consent only when it differs from the one last sent."""

from __future__ import annotations

import contextlib
import heapq
import math
import time

from agent.core.context import split_health
from agent.core.engine import AgentCore
from agent.storage import AgentStore
from broker.bus import Bus, Outgoing
from schemas import codec
from schemas.actions import ConsentState, ContextSnapshot
from schemas.clock import Clock
from schemas.envelope import make
from schemas.errors import BusConnectionError, PublishError
from schemas.topics import consent_topic, context_topic, health_topic

#: Retained contexts republished in one pump turn at most (~0.1-0.3 ms each); the others due go in the next turns.
CONTEXT_SLICE = 20
#: While the agent is behind, a context it has published before waits until this many ``every_s`` have passed since:
#: it is state derived from the events, and catching up on them comes first (draining the bench's backlog of 1,000
#: users, 107,000 events: 2,159 republishes and 10 % of the turns' time before, 1,380 and 6 % with this). A user's
#: first context is not held back.
BEHIND_WAIT = 10


class Contexts:
    """The users whose context changed, each due ``every_s`` after their last republish."""

    __slots__ = ("_due", "_every_s", "_last", "_sent_consent", "dirty")

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self.dirty: set[str] = set()  # context changed, not republished yet
        self._due: list[tuple[float, str]] = []  # heap: (monotonic time due, user), one per dirty user
        self._last: dict[str, float] = {}
        self._sent_consent: dict[str, ConsentState] = {}  # the retained consent the broker holds, as we sent it

    def note(self, changed: set[str]) -> None:
        """Users whose context changed: due for a republish ``every_s`` after their last one."""
        dirty = self.dirty
        every = self._every_s
        for user in changed:
            if user not in dirty:
                dirty.add(user)
                last = self._last.get(user)  # never published: due at once
                heapq.heappush(self._due, (-math.inf if last is None else last + every, user))

    def due(self, mono: float) -> bool:
        """Whether a user's republish is due at ``mono``."""
        return bool(self._due) and self._due[0][0] <= mono

    async def publish(
        self,
        bus: Bus,
        store: AgentStore,
        core: AgentCore,
        clock: Clock,
        *,
        behind: bool = False,
        mono: float | None = None,
    ) -> int:
        """Republish the retained context of the users due (changed, and not republished for ``every_s``; when the
        agent is ``behind``, for :data:`BEHIND_WAIT` times that) at ``mono`` (default: ``time.monotonic()``)."""
        due_heap = self._due
        if not due_heap or not bus.connected:
            return 0
        if mono is None:
            mono = time.monotonic()
        until = mono - (BEHIND_WAIT - 1) * self._every_s if behind else mono
        if due_heap[0][0] > until:  # nobody is due yet: no scan of every changed user on each pump turn
            return 0
        due: list[str] = []
        while due_heap and due_heap[0][0] <= until and len(due) < CONTEXT_SLICE:  # the others in the next turns
            due.append(heapq.heappop(due_heap)[1])
        now = clock.now_ms()
        saved: list[tuple[str, str, int]] = []
        for user in due:
            self.dirty.discard(user)
            self._last[user] = mono
            snapshot: ContextSnapshot = core.snapshot(user)
            public, health = split_health(snapshot)  # health values only where the ACL lets the user's app read
            with contextlib.suppress(BusConnectionError, PublishError):
                await bus.publish_raw(Outgoing(context_topic(user), codec.encode(make(public, ts=now)), 1, True))
                await bus.publish_raw(Outgoing(health_topic(user), codec.encode(make(health, ts=now)), 1, True))
                consent = core.consent(user)
                if self._sent_consent.get(user) != consent:  # it changes far less often than the context
                    await bus.publish_raw(Outgoing(consent_topic(user), codec.encode(make(consent, ts=now)), 1, True))
                    self._sent_consent[user] = consent
            saved.append((user, snapshot.model_dump_json(), now))  # pydantic's own JSON: a third of json.dumps
        await store.save_contexts(saved)
        return len(saved)
