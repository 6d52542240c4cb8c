"""A consumer process for the backlog test: ``python -m tests.conformance.backlog_consumer URL USER OUT ack|hold``.

It behaves as the agent does: a persistent session with manual acknowledgements, and it subscribes (and waits for
the SUBACK) before it starts taking messages. Each message's envelope id is appended to OUT as it is taken; with
``ack`` it is then acknowledged, with ``hold`` never (the process is killed with SIGKILL by the test).
"""

from __future__ import annotations

import asyncio
import sys

from broker.client import Bus, BusOptions


async def main(url: str, user: str, out: str, ack: bool) -> None:
    options = BusOptions(
        url=url, client_id=f"agent-{user}", persistent=True, manual_ack=True, receive_maximum=1000, name="consumer"
    )
    async with Bus(options) as bus:
        await bus.subscribe(f"wb/v1/{user}/+/+/evt/#", 1)  # before the pump, as the agent's runtime does
        with open(out, "a", encoding="utf-8") as fh:  # noqa: ASYNC230  (one file, opened once)
            while True:
                batch = await bus.next_batch(200, timeout=1.0)
                fh.writelines(f"{m.envelope.id}\n" for m in batch)
                fh.flush()
                if ack:
                    for m in batch:
                        bus.ack(m)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "ack"))
