"""``wearbus consent``, ``wearbus forget`` and ``wearbus health-key``: a user's consent per purpose, and erasing a user.

``consent`` publishes a :class:`~schemas.actions.ConsentRequest` on ``wb/v1/{user}/agent/consent/set``; the agent
stores it (in the user's context, saved in its database) and publishes the state retained on
``wb/v1/{user}/agent/consent``, which the command waits for.

``forget`` erases a user from the agent's store (:mod:`agent.privacy`) and clears the user's retained messages on the
broker (an empty retained publish on each retained topic under ``wb/v1/{user}/``). Run it with the agent stopped, or
the agent would write back what it holds in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agent.privacy import forget_in_redis, forget_user
from agent.sealing import new_key_file
from broker.client import Bus, Outgoing
from broker.settings import Settings, client_options
from schemas import codec
from schemas.actions import PURPOSES, ConsentRequest, ConsentState
from schemas.envelope import make
from schemas.errors import ConfigError, WearbusError
from schemas.tasks import cancel_and_wait
from schemas.topics import check_name, consent_set_topic, consent_topic, matches, user_filter
from testkit.raw import RawBus, RawMessage

out = Console(width=None if sys.stdout.isatty() else 160)


err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``consent`` and ``forget`` to the ``wearbus`` CLI."""
    app.command("consent")(consent_command)
    app.command("forget")(forget_command)
    app.command("health-key")(health_key_command)


def health_key_command(
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Where to write the key (mode 0600).")],
) -> None:
    """Make a random AES-256-GCM key for `wearbus agent --health-key` and `wearbus report --health-key`.

    Keep it apart from the database: whoever holds both reads the health values; without it, nobody can.
    """
    try:
        new_key_file(out_file)
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    out.print(f"wrote a health key to {out_file}")


def consent_command(
    state: Annotated[str, typer.Argument(help="on or off.")],
    user: Annotated[str, typer.Option("--user", help="The user.")],
    purpose: Annotated[str, typer.Option(help=f"One of: {', '.join(PURPOSES)}.")] = "proactive-health",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the agent to confirm (0: do not wait).")] = 15.0,
    broker: Annotated[
        str | None, typer.Option("--broker", "-b", help="Broker URL (mqtt://, mqtts://, ws://); env WB_BROKER.")
    ] = None,
) -> None:
    """Give or withdraw a user's consent to a purpose; the agent stores it and publishes it retained.

    proactive-health: the agent runs its health rules on the user's vitals and keeps raw health samples for the
    retention time. Without it, no health rule runs for the user and no vital is kept beyond the current turn.
    """
    if state not in {"on", "off"}:
        err.print(f"[bold red]error:[/] the state is on or off, not {state!r}")
        raise typer.Exit(2)
    if purpose not in PURPOSES:
        err.print(f"[bold red]error:[/] unknown purpose {purpose!r}; known: {', '.join(PURPOSES)}")
        raise typer.Exit(2)
    try:
        check_name(user, "user")
        confirmed = asyncio.run(set_consent(broker or Settings().broker, user, purpose, state == "on", wait))
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    if wait and not confirmed:
        err.print(f"[yellow]sent; the agent did not confirm within {wait:g} s (is it running?)[/]")
        raise typer.Exit(1)
    out.print(f"consent of {user} to {purpose}: {state}" + (" (stored by the agent)" if confirmed else " (sent)"))


async def set_consent(url: str, user: str, purpose: str, granted: bool, wait: float) -> bool:
    """Publish a consent change; with ``wait``, return whether the agent's retained state shows it in time."""
    seen = asyncio.Event()
    async with Bus(client_options(url, "consent")) as bus:
        if wait:
            await bus.subscribe(consent_topic(user), 1)
        request = ConsentRequest.model_validate({"purpose": purpose, "granted": granted})
        await bus.publish_raw(Outgoing(consent_set_topic(user), codec.encode(make(request)), 1, False), wait=True)
        if not wait:
            return False

        async def watch() -> None:
            async for message in bus.messages():
                body = message.data
                if isinstance(body, ConsentState) and body.purposes.get(purpose) is granted:
                    seen.set()
                    return

        watcher = asyncio.create_task(watch())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await seen.wait()
        await cancel_and_wait(watcher)
    return seen.is_set()


def forget_command(
    user: Annotated[str, typer.Option("--user", help="The user to erase.")],
    db: Annotated[Path, typer.Option(help="The agent's SQLite database.")] = Path(".wearbus/agent.db"),
    broker: Annotated[
        str | None,
        typer.Option("--broker", "-b", help="Also clear the user's retained messages on this broker; env WB_BROKER."),
    ] = None,
    keep_retained: Annotated[bool, typer.Option(help="Leave the broker alone (the store only).")] = False,
    redis_url: Annotated[
        str | None,
        typer.Option("--redis", help="Erase the user from this agent cluster's Redis bucket store (instead of --db)."),
    ] = None,
    cluster: Annotated[str | None, typer.Option(help="With --redis: the name of the cluster.")] = None,
    buckets: Annotated[int, typer.Option(help="With --redis: the number of buckets of the cluster.")] = 64,
) -> None:
    """Erase a user: every row of theirs in the agent's store, and their retained messages on the broker.

    Stop the agent first (it would write back what it holds in memory). Other users are untouched.
    """
    try:
        check_name(user, "user")
        if redis_url is not None:
            if cluster is None:
                raise ConfigError("--redis needs --cluster (the name the members run with)")
            removed = asyncio.run(_forget_redis(redis_url, cluster, buckets, user))
        elif not db.exists():
            raise ConfigError(f"no database at {db} (pass --db, or --redis for a cluster)")
        else:
            removed = forget_user(db, user)
        cleared: list[str] = []
        if not keep_retained:
            cleared = asyncio.run(clear_retained(broker or Settings().broker, user))
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    rows = ", ".join(f"{table} {n}" for table, n in removed.items() if n) or "none"
    out.print(f"forgot {user}: rows deleted from {redis_url or db}: {rows}")
    if not keep_retained:
        out.print(f"retained messages cleared on the broker: {len(cleared)}")


async def clear_retained(url: str, user: str, *, quiet_s: float = 0.5, within_s: float = 10.0) -> list[str]:
    """Clear every retained message under ``wb/v1/{user}/`` (an empty retained publish on each topic).

    The broker sends the retained messages right after the subscription; once none came for ``quiet_s`` they are
    all in.
    """
    retained: dict[str, None] = {}
    arrived = asyncio.Event()
    topic_filter = user_filter(check_name(user, "user"))

    def on_raw(raw: RawMessage) -> None:
        # Checked here too: amqtt 0.12 was seen sending other users' retained messages to this filter.
        if raw.retain and raw.payload and matches(topic_filter, raw.topic):
            retained[raw.topic] = None
            arrived.set()

    async with RawBus(client_options(url, "forget"), [on_raw]) as bus, asyncio.timeout(within_s):
        await bus.subscribe(topic_filter, 1)
        with contextlib.suppress(TimeoutError):
            while True:  # until none came for quiet_s
                arrived.clear()
                async with asyncio.timeout(quiet_s):
                    await arrived.wait()
        for topic in retained:
            await bus.publish_raw(Outgoing(topic, b"", 1, True), wait=True)
    return list(retained)


async def _forget_redis(url: str, cluster: str, buckets: int, user: str) -> dict[str, int]:
    import redis.asyncio as aioredis  # noqa: PLC0415
    from redis.exceptions import RedisError  # noqa: PLC0415

    client = aioredis.Redis.from_url(url)
    try:
        return await forget_in_redis(client, cluster, buckets, user)
    except RedisError as exc:
        raise ConfigError(f"cannot erase {user} from {url}: {exc}") from exc
    finally:
        await client.aclose()
