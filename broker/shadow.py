"""Reading and writing device shadows over the bus (the rules are pure, in :mod:`schemas.shadow`).

The documents are retained, so reading is: subscribe, take what the broker hands over, and stop once it has been quiet
for ``settle_s``. Writing is: read the device's desired document and birth, merge (refusing a stale version or a
setting the birth does not list), and publish the next version retained, waiting for the broker's acknowledgement.
"""

from __future__ import annotations

import asyncio
from typing import Any

from broker.client import Bus, Outgoing
from schemas import codec
from schemas.envelope import make, now_ms
from schemas.shadow import DeviceShadow, ShadowBook, ShadowDesired, merge
from schemas.topics import Channel, DeviceId, desired_topic, device_channel, device_prefix, shadow_filter, state_topic

SETTLE_S = 0.4


def filters(user: str, dev: DeviceId | None = None) -> list[str]:
    """The subscriptions that show a user's (or one device's) shadows and births."""
    if dev is not None:
        return [shadow_filter(dev.user, dev.kind.value, dev.device), state_topic(dev)]
    return [shadow_filter(user), device_channel(device_prefix(user), Channel.STATE)]


async def read(
    bus: Bus, user: str, dev: DeviceId | None = None, *, settle_s: float = SETTLE_S, timeout_s: float = 10.0
) -> ShadowBook:
    """The retained shadows and births of a user (or one device), from a bus used for nothing else meanwhile."""
    book = ShadowBook()
    for topic_filter in filters(user, dev):
        await bus.subscribe(topic_filter, 1)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        batch = await bus.next_batch(timeout=settle_s)
        if not batch:
            break  # quiet for settle_s: the broker has handed over what it retains
        for message in batch:
            book.update(message)
    for topic_filter in filters(user, dev):
        await bus.unsubscribe(topic_filter)
    return book


async def publish_desired(bus: Bus, dev: DeviceId, desired: ShadowDesired) -> None:
    """Publish a desired document, retained, and wait for the broker's acknowledgement."""
    raw = codec.encode(make(desired, ts=now_ms()))
    await bus.publish_raw(Outgoing(desired_topic(dev), raw, 1, True), wait=True)


def next_desired(
    dev: DeviceId, shadow: DeviceShadow, patch: dict[str, Any], *, by: str, expected_version: int | None = None
) -> ShadowDesired:
    """The next desired document of ``dev`` (see :func:`schemas.shadow.merge` for what it refuses)."""
    return merge(
        dev.kind,
        shadow.desired,
        patch,
        by=by,
        expected_version=expected_version,
        supported=shadow.supported,
        device=str(dev),
    )


async def write(
    bus: Bus,
    dev: DeviceId,
    patch: dict[str, Any],
    *,
    by: str,
    expected_version: int | None = None,
    settle_s: float = SETTLE_S,
) -> ShadowDesired:
    """Read, merge and publish the next desired document of one device (it may be offline).

    Raises:
        StaleVersion: ``expected_version`` is not the current version.
        SettingNotSupported: the device's birth does not list a key.
        ValidationFailed: a value out of range.
    """
    book = await read(bus, dev.user, dev, settle_s=settle_s)
    desired = next_desired(dev, book.get(dev), patch, by=by, expected_version=expected_version)
    await publish_desired(bus, dev, desired)
    return desired


async def wait_applied(bus: Bus, dev: DeviceId, version: int, *, timeout_s: float) -> DeviceShadow:
    """Wait until the device reports ``version`` (or later); returns what is known then.

    Raises:
        TimeoutError: it did not within ``timeout_s``.
    """
    book = ShadowBook()
    for topic_filter in filters(dev.user, dev):
        await bus.subscribe(topic_filter, 1)
    async with asyncio.timeout(timeout_s):
        while True:
            for message in await bus.next_batch(timeout=1.0):
                book.update(message)
            reported = book.get(dev).reported
            if reported is not None and reported.version >= version:
                return book.get(dev)
