"""The bus of one bucket: a NATS partition or per-user filters, with the original topics restored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agent.cluster.assignment import PARTITION_ROOT, escape_dots, original_topic
from broker.client import Bus, BusOptions
from broker.url import BrokerUrl
from schemas.envelope import Message
from schemas.errors import BusConnectionError


class PartitionBus(Bus):
    """A :class:`Bus` for cluster members and bucket sessions.

    Args:
        options: as for :class:`Bus` (its ``url`` is the first node).
        urls: broker nodes tried in turn on every (re)connect, so losing one node moves the session to another.
        strip_partition: give the runtime ``wb/v1/...`` topics for messages that arrive as ``wbp/{b}/wb/v1/...``.
        hold_s: after a reconnect to an existing session, hold deliveries this long and then release them in
            per-device order. NATS 2.9 redelivers what the previous connection had not acknowledged only after its
            ``ack_wait``, *after* newer messages (measured: docs/scale-out.md); holding ``ack_wait`` + 1 s puts
            them back in order. 0 (mosquitto, which resends in-flight messages first) turns it off.
        guard: asked before every connect; false means this client must not connect (a bucket session whose
            member was deposed would otherwise take the session back from the new owner, and so on for ever).
        escape_dots: publish ``.`` in topics as ``_``. nats-server before 2.10 (Debian 12 ships 2.9.10) rejects
            ``.`` in MQTT topics and drops the publisher's connection, and every command topic has one
            (``cmd/display.card``). Escaped commands reach no device: this is for exercising the event path and
            failover on such a server (the cluster test does), not for production, which needs nats-server 2.10+
            (``.`` travels as ``//``) or EMQX.
    """

    def __init__(
        self,
        options: BusOptions,
        *,
        urls: Sequence[str] = (),
        strip_partition: bool = False,
        hold_s: float = 0.0,
        guard: Callable[[], Awaitable[bool]] | None = None,
        escape_dots: bool = False,
    ) -> None:
        super().__init__(options)
        self._guard = guard
        self._escape_dots = escape_dots
        self._urls = tuple(urls) or (options.url,)
        self._next_url = 0
        self._strip = strip_partition
        self._hold_s = hold_s
        self._hold_link = 0
        self._hold_until = 0.0
        self._wanted: dict[str, int] = {}
        self.holds = 0

    async def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """As :meth:`Bus.subscribe`; the filter is also one :meth:`confirm_subscriptions` insists on."""
        code = await super().subscribe(topic_filter, qos)
        self._wanted[topic_filter] = qos
        return code

    async def before_connect(self) -> None:
        if self._guard is not None and not await self._guard():
            raise BusConnectionError("not connecting: this session now belongs to another member")
        raw = self._urls[self._next_url % len(self._urls)]
        self._next_url += 1
        self.url = BrokerUrl.parse(raw).with_credentials(self.options.username, self.options.password)

    def deliver(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, content_type: str | None) -> None:
        if self._strip and topic.startswith(PARTITION_ROOT + "/"):
            topic = original_topic(topic)
        if self._hold_s > 0 and self.link != self._hold_link:
            # The first message of a new connection: anything the old one left unacknowledged may still come.
            self._hold_link = self.link
            if self.session_present:
                self._hold_until = time.monotonic() + self._hold_s
                self.holds += 1
        super().deliver(topic, payload, qos, retain, mid, content_type)

    def outgoing_topic(self, topic: str) -> str:
        # Every publish path of the Bus (publish, publish_raw, publish_future, the DLQ) goes through here.
        if self._escape_dots and "." in topic:
            topic = escape_dots(topic)
        return topic

    async def confirm_subscriptions(self) -> bool:
        """Subscribe every filter again and check what the broker granted (false if it refused any).

        The :class:`Bus` does not look at SUBACK codes. Under load nats-server answered a new session's subscription
        too late (the SUBACK timed out) and the session stayed deaf for the whole run; a broker may also answer
        0x80. Subscribing again is harmless on a persistent session: NATS keeps the pending messages (measured).
        """
        if not self.connected:
            return False
        # The Bus stops renewing a filter refused on several reconnects in a row (right for an ACL denial), but a
        # bucket without its partition is deaf while it looks served: NATS refuses with 0x80 only while busy.
        filters = {**self._wanted, **self.subscriptions}
        try:
            granted = await self.subscribe_now(list(filters.items()))
        except BusConnectionError as exc:
            self.log.warning("subscription_failed", error=str(exc))
            return False
        if any(code >= 0x80 for code in granted):
            self.log.warning("subscription_refused", filters=list(filters), granted=granted)
            return False
        for topic_filter, qos in filters.items():
            if topic_filter not in self.subscriptions:  # dropped by the Bus: renewed on reconnects again
                await self.subscribe(topic_filter, qos)
        return True

    @property
    def holding(self) -> bool:
        """Whether deliveries are being held after a reconnect."""
        return self._hold_until > 0

    async def next_batch(
        self,
        max_n: int = 500,
        timeout: float | None = None,
        *,
        linger: float = 0.0,
        urgent: Callable[[Message], bool] | None = None,
        enough: int | None = None,
    ) -> list[Message]:
        """As :meth:`Bus.next_batch`, but nothing comes out while a reconnect hold lasts."""
        if self._hold_until:
            remaining = self._hold_until - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining if timeout is None else min(remaining, timeout))
                if time.monotonic() < self._hold_until:
                    return []
            self._hold_until = 0.0
            per_device_order(self.inbox)
        return await super().next_batch(max_n, timeout, linger=linger, urgent=urgent, enough=enough)


def per_device_order(inbox: Any) -> None:
    """Sort a deque of messages by device (first appearance) and, within a device, by publish time and seq."""
    first: dict[tuple[str | None, str | None, str | None], int] = {}
    keyed = []
    for i, m in enumerate(inbox):
        w = m.where
        dev = (w.user, w.kind.value if w.kind else None, w.device)
        first.setdefault(dev, i)
        keyed.append(((first[dev], m.envelope.ts, m.envelope.seq, i), m))
    keyed.sort(key=lambda x: x[0])
    inbox.clear()
    inbox.extend(m for _, m in keyed)
