"""One device as its own OS process, for the kill -9 test.

``python -m tests.faults.device_proc URL USER KIND DEVICE PASSWORD KEEPALIVE_S HEARTBEAT_S`` connects, publishes its
birth (the SDK leaves a Will that sets it offline), prints ``ready`` and runs until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

from devices.sdk import DeviceConfig
from schemas.topics import Kind
from tests.faults.harness import DEVICE_CLASSES


async def main(argv: list[str]) -> None:
    """Run the device until cancelled or killed."""
    url, user, kind, device, password, keepalive_s, heartbeat_s = argv
    config = DeviceConfig(
        url=url, password=password, keepalive_s=int(keepalive_s), heartbeat_s=float(heartbeat_s),
        hold_while_agent_away=False,
    )  # fmt: skip
    async with DEVICE_CLASSES[Kind(kind)](user, device, config) as dev:
        await dev.wait_connected(15)
        print("ready", flush=True)
        await dev.run_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
