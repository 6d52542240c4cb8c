"""A private Mosquitto process for tests: its own config, port, data directory and PID.

Privileges: mosquitto started as root switches to the ``mosquitto`` user, and mosquitto 2.0 reads the
password file and the ACL and writes persistence only after that switch. Rather than run the broker as
root (``user root``), which would hide exactly that pitfall, the kit makes its temporary directory and
everything in it owned by ``mosquitto`` when it runs as root and that user exists, so tests see the same
file-permission behaviour as a deployment. Only when running as root on a machine without a ``mosquitto``
user does it add ``user root`` (mosquitto would otherwise fall back to ``nobody``, who can write nothing).
Run as an ordinary user, mosquitto keeps that user and nothing needs changing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil

from broker.embedded import free_port
from broker.mosquitto import (
    MOSQUITTO_SYSTEM_USER,
    Credentials,
    Limits,
    MosquittoSettings,
    TlsListener,
    write_config,
)
from schemas.errors import BusError

_SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")


def mosquitto_binary() -> str | None:
    """The path of the ``mosquitto`` broker binary, or None (Debian installs it in /usr/sbin)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for directory in _SEARCH_DIRS:
        candidate = Path(directory) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def mosquitto_available() -> bool:
    """Whether a ``mosquitto`` binary can be found."""
    return mosquitto_binary() is not None


class MosquittoProcess:
    """Start, kill and restart a private ``mosquitto -c <conf>`` on a free loopback port.

    Without ``credentials`` the broker is open (anonymous, no ACL) with wearbus's persistence and
    latency settings; with them it runs the generated secure config (password file, pattern ACL).

    Args:
        credentials: logins for the generated secure config; None for an open broker.
        extra_lines: appended to mosquitto.conf.
        limits: broker limits for the secure config.
        tls: a TLS listener for the secure config (its port is the caller's to choose). Its files are
            copied into the kit's directory: mosquitto 2.0 reads certificates and keys after it drops
            root privileges, so they must be readable by the mosquitto user.
        startup_timeout: seconds to wait for the port to accept connections.
        stop_timeout: seconds to wait after SIGTERM before SIGKILL.
        autosave_on_changes: save the persistence file after every change (wearbus's deployed setting: a
            :meth:`kill9` loses nothing acknowledged), else once a second. Each save rewrites the whole file, so a
            test that queues thousands of big messages for an offline client and never kills the broker runs
            far faster without it (1,050 queued 20 KB messages: 22 ms a publish instead of 0.6).
    """

    def __init__(
        self,
        *,
        credentials: Credentials | None = None,
        extra_lines: Sequence[str] = (),
        limits: Limits | None = None,
        tls: TlsListener | None = None,
        startup_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        autosave_on_changes: bool = True,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise BusError(
                "the mosquitto broker binary was not found (install it: apt-get install mosquitto); "
                "skip such tests with testkit.mosquitto.mosquitto_available()"
            )
        self._binary = binary
        self._credentials = credentials
        self._extra_lines = tuple(extra_lines)
        self._limits = limits
        self._tls = tls
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._autosave_on_changes = autosave_on_changes
        self._tmp: Path | None = None
        self._port: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._log_handle: int | None = None

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        """The plain-MQTT port on 127.0.0.1."""
        if self._port is None:
            raise BusError("the mosquitto process has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>``."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The PID of the running broker."""
        if self._process is None or self._process.returncode is not None:
            raise BusError("the mosquitto process is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.returncode is None

    @property
    def directory(self) -> Path:
        """The temporary directory holding the config, the log and the data."""
        if self._tmp is None:
            raise BusError("the mosquitto process has not been started")
        return self._tmp

    @property
    def data_dir(self) -> Path:
        """The persistence directory (``mosquitto.db`` appears here)."""
        return self.directory / "data"

    @property
    def conf_path(self) -> Path:
        """The mosquitto.conf in use."""
        return self.directory / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        """Where the broker's stdout and stderr go."""
        return self.directory / "mosquitto.log"

    def log_text(self) -> str:
        """The broker's log so far (for assertions and failure messages)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._tmp is not None:
            raise BusError("a MosquittoProcess cannot be entered twice")
        self._tmp = Path(tempfile.mkdtemp(prefix="wearbus-mosquitto-"))
        try:
            for attempt in range(3):
                self._port = free_port()
                self._write_files()
                try:
                    await self._start()
                    break
                except BusError:
                    # The free port was taken meanwhile (tests on other workers or checkouts pick ports too).
                    if attempt == 2 or "Address already in use" not in self.log_text():
                        raise
        except BaseException:
            await self.stop()
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    async def stop(self) -> None:
        """SIGTERM the broker (it saves its database on the way out), SIGKILL it if it lingers."""
        process = self._process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(self._stop_timeout):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        self._close_log()

    async def kill9(self) -> None:
        """SIGKILL the broker, as a crash: nothing is saved beyond what autosave already wrote."""
        process = self._process
        if process is None or process.returncode is not None:
            raise BusError("the mosquitto process is not running")
        process.kill()
        await process.wait()
        self._close_log()

    async def restart(self) -> None:
        """Stop the broker if it runs (gracefully), then start it again on the same port and data dir."""
        await self.stop()
        await self._start()

    # ------------------------------------------------------------------ internals

    def _write_files(self) -> None:
        tmp = self.directory
        owner = _owner()
        if self._credentials is not None:
            settings = MosquittoSettings.in_dir(
                tmp,
                port=self.port,
                tls=self._copy_tls(owner),
                limits=self._limits,
                extra_lines=self._extra_lines,
                autosave_on_changes=self._autosave_on_changes,
            )
            # A test broker logs everything to stderr, captured in mosquitto.log.
            write_config(tmp, self._credentials, settings, write_secrets=False, chown=owner is not None)
        else:
            self.data_dir.mkdir(mode=0o700, exist_ok=True)  # exists when a taken port is retried
            lines = [
                f"listener {self.port} 127.0.0.1",
                "allow_anonymous true",
                "set_tcp_nodelay true",
                "persistence true",
                f"persistence_location {self.data_dir}/",
                f"autosave_on_changes {'true' if self._autosave_on_changes else 'false'}",
                "autosave_interval 1",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "log_type notice",
                *self._extra_lines,
            ]
            self.conf_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            if owner is not None:
                os.chown(self.data_dir, *owner)
        if os.geteuid() == 0 and owner is None:
            # Root without a mosquitto user: mosquitto would fall back to "nobody", who owns nothing here.
            with self.conf_path.open("a", encoding="utf-8") as fh:
                fh.write("user root\n")
        if owner is not None:
            # mkdtemp makes the directory 0700 and root's: the mosquitto user must be able to enter it.
            os.chown(tmp, *owner)

    def _copy_tls(self, owner: tuple[int, int] | None) -> TlsListener | None:
        """The TLS listener with its files copied into ``certs/`` of the kit's directory."""
        if self._tls is None:
            return None
        certs = self.directory / "certs"
        certs.mkdir(mode=0o700)
        copies = []
        for source in (self._tls.cafile, self._tls.certfile, self._tls.keyfile):
            target = certs / Path(source).name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            copies.append(str(target))
        if owner is not None:
            for path in (certs, *map(Path, copies)):
                os.chown(path, *owner)
        return dataclasses.replace(self._tls, cafile=copies[0], certfile=copies[1], keyfile=copies[2])

    async def _start(self) -> None:
        if self.running:
            raise BusError("the mosquitto process is already running")
        self._close_log()
        self._log_handle = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._process = await asyncio.create_subprocess_exec(
            self._binary,
            "-c",
            str(self.conf_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=self._log_handle,
        )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        """Poll until the port accepts a TCP connection, the process dies, or the deadline passes."""
        deadline = time.monotonic() + self._startup_timeout
        process = self._process
        if process is None:
            raise BusError("the mosquitto process has not been started")
        while True:
            if process.returncode is not None:
                raise BusError(f"mosquitto exited with code {process.returncode} at start; log:\n{self.log_text()}")
            try:
                async with asyncio.timeout(1.0):
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    await self.stop()
                    raise BusError(
                        f"mosquitto did not accept connections on port {self.port} within "
                        f"{self._startup_timeout} s; log:\n{self.log_text()}"
                    ) from None
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            if _listens(process.pid, self.port):
                return
            # Something else answered on the port (it was taken after we picked it): ours will exit, or listen.
            await asyncio.sleep(0.02)

    def _close_log(self) -> None:
        if self._log_handle is not None:
            os.close(self._log_handle)
            self._log_handle = None


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` listens on TCP ``port`` (and not another process that took the port)."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections)


def _owner() -> tuple[int, int] | None:
    """(uid, gid) of the mosquitto user if we run as root and it exists, else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(MOSQUITTO_SYSTEM_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid
