"""Processes for the cluster tests: a 3-node NATS cluster (MQTT + JetStream), a private Redis, agent members.

Every process is started here, on free loopback ports with its own directory, and stopped by its PID only; the
system's nats-server (4222), Redis (6379) and Mosquitto (1883) are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from broker.net import free_port, wait_port

NATS_SEARCH = ("/usr/sbin/nats-server", "/usr/local/bin/nats-server", "/usr/bin/nats-server")
REDIS_SEARCH = ("/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server")


def find_binary(name: str, search: tuple[str, ...]) -> str | None:
    """A binary on PATH or in the usual Debian places."""
    found = shutil.which(name)
    if found:
        return found
    return next((p for p in search if os.access(p, os.X_OK)), None)


def _require(name: str, search: tuple[str, ...], package: str) -> str:
    binary = find_binary(name, search)
    if binary is not None:
        return binary
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {name} is missing: .ci/run must install it (apt-get install {package})")
    pytest.skip(f"{name} is not installed (apt-get install {package}); the cluster failover test is skipped")


def require_nats_server() -> str:
    """The nats-server binary; skip without it (a laptop), fail under CI=true."""
    return _require("nats-server", NATS_SEARCH, "nats-server")


def require_redis_server() -> str:
    """The redis-server binary; skip without it, fail under CI=true."""
    return _require("redis-server", REDIS_SEARCH, "redis-server")


def require_redis_client() -> None:
    """The redis Python package (the cluster's shared store client)."""
    try:
        import redis  # noqa: F401, PLC0415
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but the redis Python package is missing: add redis>=5 to the dev dependencies")
        pytest.skip("the redis Python package is not installed (pip install redis)")


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback monitoring port)
        data: dict[str, Any] = json.loads(response.read())
        return data


async def _terminate(process: asyncio.subprocess.Process, within: float = 10.0) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), within)
    except TimeoutError:
        process.kill()
        await process.wait()


class NatsCluster:
    """Three nats-server nodes routed into one cluster, each with JetStream and an MQTT listener.

    Args:
        binary: the nats-server binary.
        buckets: the partition count of the subject mapping (:func:`agent.cluster.nats_mappings_block`).
    """

    def __init__(self, binary: str, buckets: int, base: Path | None = None) -> None:
        self.binary = binary
        self.buckets = buckets
        self.dir = Path(tempfile.mkdtemp(prefix="wearbus-nats-", dir=base))
        self.client = [free_port() for _ in range(3)]
        self.http = [free_port() for _ in range(3)]
        self.route = [free_port() for _ in range(3)]
        self.mqtt = [free_port() for _ in range(3)]
        self.processes: list[asyncio.subprocess.Process | None] = [None, None, None]

    @property
    def urls(self) -> list[str]:
        """MQTT URLs of the three nodes."""
        return [f"mqtt://127.0.0.1:{p}" for p in self.mqtt]

    def config(self, i: int) -> str:
        """The config of node ``i`` (0-based)."""
        from agent.cluster import nats_mappings_block  # noqa: PLC0415 (agent.cluster needs redis: skip cleanly)

        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.route)
        store = self.dir / f"n{i + 1}" / "js"
        return (
            f"server_name: n{i + 1}\n"
            f"listen: 127.0.0.1:{self.client[i]}\n"
            f"http: 127.0.0.1:{self.http[i]}\n"
            f'jetstream {{ store_dir: "{store}", max_memory_store: 256MB, max_file_store: 1GB }}\n'
            f"cluster {{ name: wbtest, listen: 127.0.0.1:{self.route[i]}, routes: [ {routes} ] }}\n"
            'mqtt { listen: 127.0.0.1:%d, ack_wait: "5s", max_ack_pending: 1000 }\n'
            % self.mqtt[i]
            + nats_mappings_block(self.buckets)
        )

    async def __aenter__(self) -> Self:
        try:
            for i in range(3):
                conf = self.dir / f"n{i + 1}.conf"
                conf.write_text(self.config(i), encoding="utf-8")
                log = self.dir / f"n{i + 1}.log"
                self.processes[i] = await asyncio.create_subprocess_exec(
                    self.binary, "-c", str(conf), "-l", str(log),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
            for port in self.mqtt:
                await wait_port(port, 20)
            await self.wait_meta_leader(30)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for process in self.processes:
            if process is not None:
                await _terminate(process)
        # keep the node logs (under the test's tmp_path when given), drop the JetStream data
        for i in range(3):
            shutil.rmtree(self.dir / f"n{i + 1}", ignore_errors=True)

    def jsz(self, i: int) -> dict[str, Any]:
        """The JetStream monitoring page of node ``i``."""
        return _get_json(f"http://127.0.0.1:{self.http[i]}/jsz")

    def alive(self) -> list[int]:
        """Indexes of the nodes still running."""
        return [i for i, p in enumerate(self.processes) if p is not None and p.returncode is None]

    def meta_leader(self) -> int | None:
        """Index of the JetStream meta leader, as a live node sees it."""
        for i in self.alive():
            with contextlib.suppress(OSError, ValueError):
                leader = self.jsz(i).get("meta_cluster", {}).get("leader")
                if leader:
                    return int(str(leader)[1:]) - 1
        return None

    async def wait_meta_leader(self, within: float) -> int:
        """Wait until the cluster has elected a JetStream meta leader."""
        deadline = time.monotonic() + within
        while True:
            leader = await asyncio.to_thread(self.meta_leader)
            if leader is not None:
                return leader
            if time.monotonic() > deadline:
                raise TimeoutError("the NATS cluster elected no JetStream meta leader")
            await asyncio.sleep(0.2)

    async def kill9(self, i: int) -> None:
        """SIGKILL node ``i`` (a crash)."""
        process = self.processes[i]
        assert process is not None
        process.kill()
        await process.wait()


class RedisServer:
    """A private redis-server (no persistence) on a free port."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """redis://127.0.0.1:<port>/0"""
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> Self:
        self.process = await asyncio.create_subprocess_exec(
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await wait_port(self.port, 10)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None:
            await _terminate(self.process)


class Member:
    """``wearbus agent --cluster`` as a child process."""

    def __init__(
        self, cluster: str, member: str, nodes: list[str], state_url: str, buckets: int, log: Path, *extra: str
    ) -> None:
        self.name = member
        self.instance = f"{cluster}-{member}"
        self.args = [
            sys.executable, "-m", "cli.main", "agent", "--cluster", cluster, "--member", member,
            "--buckets", str(buckets), "--nodes", ",".join(nodes), "--state", state_url, "--log-level", "info", *extra,
        ]  # fmt: skip
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the process (its log goes to ``self.log``)."""
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self.args, stdout=out, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL
            )

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.process is not None
        return self.process.pid

    async def kill9(self) -> None:
        """SIGKILL, as a crash."""
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM (graceful), SIGKILL if it lingers."""
        if self.process is not None:
            await _terminate(self.process, 15)


def nats_version(binary: str) -> tuple[int, int]:
    """``nats-server --version`` as (major, minor)."""
    import subprocess  # noqa: PLC0415

    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    numbers = out.strip().rsplit("v", 1)[-1].split(".")
    return int(numbers[0]), int(numbers[1])


def port_open(port: int) -> bool:
    """Whether 127.0.0.1:port accepts a connection now."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
