"""Health data at rest under a key the operator holds: AES-256-GCM (``cryptography``), ``--health-key FILE``.

A sealed value is ``PREFIX + nonce (12 bytes) + ciphertext and tag``; text columns hold it as ``TEXT_PREFIX`` and
base64. The associated data binds a sealed value to where it belongs (an event's id, a user's name), so a value
moved to another row does not open. A value without the prefix was stored before a key was given and is read as it
is, so a database can start being sealed at any time.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.files import open_private
from schemas.errors import ConfigError, StoreError

PREFIX = b"\x00wbenc1"
TEXT_PREFIX = "wbenc1:"
KEY_BYTES = 32
_NONCE = 12


class HealthCipher:
    """Seals and opens health values with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"a health key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: Path) -> HealthCipher:
        """Read a key file: 32 raw bytes, or their hex or base64 on one line. It must not be readable by others.

        Raises:
            ConfigError: missing, unreadable, open to group/others, or not a 32-byte key.
        """
        try:
            mode = path.stat().st_mode
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the health key {path}: {exc}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"the health key {path} is readable by others: chmod 600 {path}")
        return cls(_key_bytes(raw, path))

    def seal(self, data: bytes, aad: bytes) -> bytes:
        """Encrypt ``data``, bound to ``aad``."""
        nonce = os.urandom(_NONCE)
        return PREFIX + nonce + self._aead.encrypt(nonce, data, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt what :meth:`seal` made (a value without the prefix is returned as it is).

        Raises:
            StoreError: the key is not the one it was sealed with, or the value was altered or moved.
        """
        if not blob.startswith(PREFIX):
            return blob
        body = blob[len(PREFIX) :]
        try:
            return self._aead.decrypt(body[:_NONCE], body[_NONCE:], aad)
        except InvalidTag as exc:
            raise StoreError("a sealed health value does not open: another key, or altered") from exc

    def seal_text(self, text: str, aad: bytes) -> str:
        """:meth:`seal` for a text column."""
        return TEXT_PREFIX + base64.b64encode(self.seal(text.encode(), aad)).decode()

    def open_text(self, text: str, aad: bytes) -> str:
        """:meth:`open` for a text column."""
        if not text.startswith(TEXT_PREFIX):
            return text
        return self.open(base64.b64decode(text[len(TEXT_PREFIX) :]), aad).decode()


def is_sealed(value: bytes | str) -> bool:
    """Whether a stored value is sealed."""
    return value.startswith(PREFIX) if isinstance(value, bytes) else value.startswith(TEXT_PREFIX)


def new_key_file(path: Path) -> Path:
    """Write a fresh random key (hex, mode 0600) to ``path``; refuses to overwrite one.

    Raises:
        ConfigError: the file exists.
    """
    if path.exists():
        raise ConfigError(f"{path} exists; a new key would leave what was sealed with the old one unreadable")
    with open_private(path, "w") as fh:
        fh.write(os.urandom(KEY_BYTES).hex() + "\n")
    return path


def _key_bytes(raw: bytes, path: Path) -> bytes:
    if len(raw) == KEY_BYTES:
        return raw
    text = raw.strip()
    for decode in (binascii.unhexlify, base64.b64decode):
        try:
            key = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise ConfigError(f"{path} holds no {KEY_BYTES}-byte key (raw, hex or base64); make one: wearbus health-key")
