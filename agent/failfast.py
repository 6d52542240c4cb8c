"""Fail fast and visibly on a store that cannot recover (issue 18, item 3).

A disk that is full, read-only or corrupt does not heal by retrying: the agent once printed "database or disk is
full" and stayed alive, with no connection and no answers, so ``Restart=on-failure`` never fired. Now the pump stops
(nothing more is acknowledged: every acknowledgement follows a commit), the agent says why in one line and ends
with :data:`EXIT_STORE`, and a supervisor (systemd, ``wearbus up``) restarts it; what the broker holds for its
persistent session is delivered again then.

The decision is made on SQLite's result codes (``sqlite3.Error.sqlite_errorcode``) and ``OSError.errno``, never on
message text.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator

from schemas.errors import StoreError

#: The agent's exit status when its store failed for good (sysexits' EX_IOERR). 1 is any other error.
EXIT_STORE = 74

# Primary result codes (the low byte of an extended code) that no retry cures.
_FATAL_SQLITE = {
    3: "SQLITE_PERM",
    8: "SQLITE_READONLY",
    10: "SQLITE_IOERR",
    11: "SQLITE_CORRUPT",
    13: "SQLITE_FULL",
    14: "SQLITE_CANTOPEN",
    26: "SQLITE_NOTADB",
}
_FATAL_ERRNO = {errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT, errno.EACCES, errno.EPERM}


# Primary result codes of a store that is busy or short of memory now: no message's fault.
_TRANSIENT_SQLITE = {5, 6, 7, 9}  # BUSY, LOCKED, NOMEM, INTERRUPT


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def unrecoverable(exc: BaseException) -> str | None:
    """The name of the condition when ``exc`` (or what caused it) is a store failure no retry cures, else None."""
    for cur in _causes(exc):
        if isinstance(cur, sqlite3.Error):
            code = getattr(cur, "sqlite_errorcode", None)
            if isinstance(code, int) and code & 0xFF in _FATAL_SQLITE:
                name = getattr(cur, "sqlite_errorname", None)
                return str(name) if name else _FATAL_SQLITE[code & 0xFF]
        elif isinstance(cur, OSError) and cur.errno in _FATAL_ERRNO:
            return errno.errorcode.get(cur.errno or 0, "OSError")
    return None


def blames_the_messages(exc: BaseException) -> bool:
    """Whether a failure while handling a batch may be its messages' fault (they then count an attempt toward
    being parked): not when the store failed for good, nor when it was only busy, locked or short of memory."""
    if unrecoverable(exc) is not None:
        return False
    for cur in _causes(exc):
        code = getattr(cur, "sqlite_errorcode", None) if isinstance(cur, sqlite3.Error) else None
        if isinstance(code, int) and code & 0xFF in _TRANSIENT_SQLITE:
            return False
    return True


class StoreFailed(StoreError):
    """The store failed for good (disk full, read-only, corrupt): the agent ends with :data:`EXIT_STORE`.

    Attributes:
        condition: SQLite's result code name (``SQLITE_FULL`` ...) or the errno name.
    """

    def __init__(self, condition: str, detail: str) -> None:
        self.condition = condition
        super().__init__(
            f"the agent's store failed ({condition}): {detail}. Nothing unstored was acknowledged; free disk space, "
            f"fix the file's permissions or restore the database, then restart (exit status {EXIT_STORE})"
        )
