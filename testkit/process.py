"""Real ``wearbus`` processes for tests: started by argv, output to a file, stopped by PID at the end.

Each process runs in its own session (its own process group), so stopping it also stops whatever it started
(``wearbus up`` starts several); only that group is signalled, never anything found by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from schemas.errors import ConfigError

#: How ``wearbus`` is started: with this interpreter, so the test's virtualenv and editable install are used.
WEARBUS = (sys.executable, "-m", "cli.main")


class WearbusProcess:
    """One started process.

    Attributes:
        argv: the full command line.
        name: a short name for reports.
        log_path: where its stdout and stderr go.
    """

    def __init__(self, proc: asyncio.subprocess.Process, argv: list[str], name: str, log_path: Path) -> None:
        self._proc = proc
        self.argv = argv
        self.name = name
        self.log_path = log_path

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it has ended (negative: killed by that signal), else ``None``."""
        return self._proc.returncode

    def output(self, tail: int | None = None) -> str:
        """What it has written so far (the last ``tail`` characters if given)."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        if tail is not None and len(data) > tail:
            data = b"..." + data[-tail:]
        return data.decode("utf-8", errors="replace")

    async def wait_output(self, pattern: str, within: float = 10.0) -> re.Match[str]:
        """Wait until its output matches the regular expression ``pattern``.

        Raises:
            AssertionError: not within ``within`` seconds, or the process ended first; with the output.
        """
        regex = re.compile(pattern)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while True:
                    found = regex.search(self.output())
                    if found is not None:
                        return found
                    if self.returncode is not None:
                        break
                    # A file has no change notification we can await portably; poll it briefly.
                    await asyncio.sleep(0.05)
        found = regex.search(self.output())
        if found is not None:
            return found
        state = f"it exited with {self.returncode}" if self.returncode is not None else "it is still running"
        raise AssertionError(
            f"{self.name} (pid {self.pid}) did not print /{pattern}/ within {within:g} s; {state}. Output:\n"
            + self.output(tail=4000)
        )

    async def wait(self, within: float = 10.0) -> int:
        """Wait for it to exit by itself.

        Raises:
            AssertionError: still running after ``within`` seconds.
        """
        try:
            async with asyncio.timeout(within):
                return await self._proc.wait()
        except TimeoutError:
            raise AssertionError(f"{self.name} (pid {self.pid}) still running after {within:g} s") from None

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)  # its own group: it and its children, nothing else
        except ProcessLookupError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    async def kill9(self, within: float = 10.0) -> int:
        """SIGKILL it (no clean-up, no goodbye: its Will fires) and reap it; returns the exit code."""
        if self.returncode is None:
            self._signal(signal.SIGKILL)
        return await self.wait(within)

    async def stop(self, grace: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited after ``grace`` seconds; returns the exit code."""
        if self.returncode is not None:
            return self.returncode
        self._signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                return await self._proc.wait()
        except TimeoutError:
            return await self.kill9()

    def __repr__(self) -> str:
        return f"WearbusProcess({self.name!r}, pid={self.pid}, returncode={self.returncode})"


class ProcessFactory:
    """Starts ``wearbus`` commands as real processes and stops them all at the end.

    ``await factory("tap", "--broker", url)`` runs ``wearbus tap --broker URL``.

    Args:
        directory: where the output files go.
        env: extra environment for every process (e.g. ``WB_BROKER``).
        command: how ``wearbus`` is started (this interpreter running ``cli.main`` by default).
        grace: seconds between SIGTERM and SIGKILL when stopping.
    """

    def __init__(
        self,
        directory: Path,
        env: Mapping[str, str] | None = None,
        *,
        command: Sequence[str] = WEARBUS,
        grace: float = 5.0,
    ) -> None:
        self.directory = directory
        self.env = dict(env or {})
        self.command = list(command)
        self.grace = grace
        self.processes: list[WearbusProcess] = []

    async def __call__(
        self, *argv: str, name: str | None = None, env: Mapping[str, str] | None = None
    ) -> WearbusProcess:
        """Start ``wearbus *argv``.

        Args:
            argv: the arguments after ``wearbus``.
            name: a name for reports and the output file (by default the command words, e.g. ``device-ring``).
            env: extra environment for this process.

        Raises:
            ConfigError: no arguments were given.
        """
        if not argv:
            raise ConfigError("wb_process needs a wearbus command, e.g. wb_process('tap', '--broker', url)")
        label = name or "-".join(a for a in argv[:2] if re.fullmatch(r"[a-z][a-z0-9-]*", a))
        n = len(self.processes) + 1
        self.directory.mkdir(parents=True, exist_ok=True)
        log_path = self.directory / f"{n:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400", **self.env, **(env or {})}
        full_argv = [*self.command, *argv]
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *full_argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        process = WearbusProcess(proc, full_argv, f"wearbus {label}", log_path)
        self.processes.append(process)
        return process

    async def stop_all(self) -> None:
        """Stop every process still running (SIGTERM, then SIGKILL after the grace period), newest first."""
        await asyncio.gather(*(p.stop(self.grace) for p in reversed(self.processes)))

    def reports(self, tail: int = 20_000) -> list[tuple[str, str]]:
        """``(title, output)`` per process, for a failure report."""
        out = []
        for p in self.processes:
            state = "running" if p.returncode is None else f"exit {p.returncode}"
            title = f"{p.name} (pid {p.pid}, {state}) {p.log_path}"
            out.append((title, p.output(tail=tail) or "(no output)"))
        return out
