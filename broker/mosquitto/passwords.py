"""Passwords in Mosquitto's password-file format (PBKDF2-SHA512, as mosquitto_passwd writes them)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable

from schemas.errors import ConfigError

_PBKDF2_ID = 7
_PBKDF2_ITERATIONS = 101
_SALT_LEN = 12
_DIGEST_LEN = 64


def new_salt() -> bytes:
    """A fresh random 12-byte salt, the length mosquitto_passwd uses."""
    return secrets.token_bytes(_SALT_LEN)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = _PBKDF2_ITERATIONS) -> str:
    """Hash a password the way ``mosquitto_passwd`` 2.0 does: ``$7$101$<salt b64>$<digest b64>``.

    Args:
        password: the plain-text password (UTF-8 encoded before hashing).
        salt: 12 random bytes; a fresh one from ``secrets`` when omitted.
        iterations: PBKDF2 rounds; mosquitto_passwd uses 101.
    """
    salt = new_salt() if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _DIGEST_LEN)
    salt64 = base64.b64encode(salt).decode()
    digest64 = base64.b64encode(digest).decode()
    return f"${_PBKDF2_ID}${iterations}${salt64}${digest64}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (ours or mosquitto_passwd's)."""
    parts = encoded.split("$")
    # "$7$101$salt$digest".split("$") == ["", "7", "101", "salt", "digest"]
    if len(parts) != 5 or parts[0] or parts[1] != str(_PBKDF2_ID) or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    actual = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]), len(expected))
    return hmac.compare_digest(actual, expected)


def render_password_file(logins: Iterable[tuple[str, str]], *, salt: Callable[[], bytes] = new_salt) -> str:
    """A mosquitto password file: one ``username:$7$...`` line per login.

    Args:
        logins: ``(username, plain password)`` pairs.
        salt: makes each salt (injectable so tests are deterministic).

    Raises:
        ConfigError: a username contains ``:`` or a line break.
    """
    lines = []
    for username, password in logins:
        if ":" in username or "\n" in username:
            raise ConfigError(f"username {username!r} may not contain ':' or a line break")
        lines.append(f"{username}:{hash_password(password, salt=salt())}\n")
    return "".join(lines)
