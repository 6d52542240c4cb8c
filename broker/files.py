"""Files that keep secrets: databases, recordings, logs and credentials are created 0600, their directories 0700.

Health data and passwords end up in these files, and a umask of 022 would leave them readable by every local user.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path | str) -> Path:
    """Create ``path`` and its missing parents, each 0700. A directory that exists is left as it is (it may be the
    working directory or /tmp)."""
    p = Path(path)
    missing = [d for d in (p, *p.parents) if not d.exists()]
    for d in reversed(missing):
        d.mkdir(mode=DIR_MODE, exist_ok=True)
        d.chmod(DIR_MODE)  # mkdir's mode is masked by the umask
    return p


def private_file(path: Path | str) -> Path:
    """Make sure ``path`` exists with mode 0600 (created empty if missing, tightened if not), before anyone writes
    to it (SQLite, a logger), so it is never readable by others, even for an instant."""
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return p


def open_private(path: Path | str, mode: str = "w", **kwargs: Any) -> IO[Any]:
    """``open()`` whose file, if it creates one, is 0600 (and an existing file is made 0600)."""
    flags = os.O_CREAT | (os.O_RDWR if "+" in mode else os.O_WRONLY if mode[0] in "wa" else os.O_RDONLY)
    if mode[0] == "w":
        flags |= os.O_TRUNC
    if mode[0] == "a":
        flags |= os.O_APPEND
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise
