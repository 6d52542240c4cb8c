"""Who owns which bucket of users: the bucket hash, rendezvous ownership, partition filters, NATS mappings."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable
from typing import Literal

from schemas import topics

PARTITION_ROOT = "wbp"
DEFAULT_BUCKETS = 64
#: On NATS, how long a bucket's runtime waits for a device's event missing from its ``seq`` order: NATS 2.9 redelivers
#: what a lost connection had not acknowledged after newer messages, and after a leader loss under load that was seen
#: 10-28 s after the publish (docs/scale-out.md). A QoS 0 event lost for good holds its device back this long.
NATS_ORDER_WAIT_S = 45.0
Partitions = Literal["nats", "filters"]
CLUSTER_NAME = re.compile(r"^[a-z0-9]{1,16}$")
MEMBER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_FNV_OFFSET, _FNV_PRIME = 0x811C9DC5, 0x01000193


def bucket_of(user: str, buckets: int) -> int:
    """The bucket of a user: FNV-1a (32 bit) of the user id modulo ``buckets``.

    It is the hash of NATS's ``{{partition(buckets, 1)}}`` over the user token, so the broker-side mapping and the
    agents put a user in the same bucket.
    """
    h = _FNV_OFFSET
    for byte in user.encode():
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h % buckets


def _weight(bucket: int, member: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{bucket}:{member}".encode(), digest_size=8).digest(), "big")


def rendezvous_owner(bucket: int, members: Iterable[str]) -> str | None:
    """The member with the highest weight for ``bucket`` (highest-random-weight hashing), or None with no members.

    Adding a member moves only the buckets it now wins; removing one moves only the buckets it held.
    """
    best: tuple[int, str] | None = None
    for member in members:
        key = (_weight(bucket, member), member)
        if best is None or key > best:
            best = key
    return best[1] if best else None


def assignment(buckets: int, members: Collection[str]) -> dict[int, str]:
    """Owner of every bucket over these members (empty when there are none)."""
    out: dict[int, str] = {}
    for b in range(buckets):
        owner = rendezvous_owner(b, members)
        if owner is not None:
            out[b] = owner
    return out


def partition_filter(bucket: int) -> str:
    """The filter of bucket ``bucket`` on a NATS cluster with :func:`nats_mappings`: ``wbp/{b}/#``."""
    return f"{PARTITION_ROOT}/{bucket}/#"


def user_filters(users: Iterable[str]) -> tuple[str, ...]:
    """Per-user filters (events, acks, device states) for a broker without partition mapping."""
    out: list[str] = []
    for user in sorted(users):
        out += topics.user_filters(user)
    return tuple(out)


def nats_mappings(buckets: int) -> dict[str, str]:
    """The NATS account mappings that put device events, acks and states into ``wbp.{bucket}.wb.v1...``.

    Topics keep every level after the prefix, so stripping ``wbp/{b}/`` gives back the device's topic; commands,
    contexts and agent states are not mapped.
    """
    p = f"{{{{partition({buckets},1)}}}}"
    w = [f"{{{{wildcard({i})}}}}" for i in range(1, 6)]
    head = f"{PARTITION_ROOT}.{p}.wb.v1.{w[0]}.{w[1]}.{w[2]}"
    return {
        "wb.v1.*.*.*.evt.*.*": f"{head}.evt.{w[3]}.{w[4]}",
        "wb.v1.*.*.*.ack": f"{head}.ack",
        "wb.v1.*.*.*.state": f"{head}.state",
    }


def nats_mappings_block(buckets: int) -> str:
    """:func:`nats_mappings` as a ``mappings = {...}`` block for nats-server.conf."""
    lines = [f'  "{src}": "{dst}"' for src, dst in nats_mappings(buckets).items()]
    return "mappings = {\n" + "\n".join(lines) + "\n}\n"


def escape_dots(topic: str) -> str:
    """``cmd/display.card`` as ``cmd/display_card`` (see :class:`PartitionBus` ``escape_dots``)."""
    return topic.replace(".", "_")


def original_topic(topic: str) -> str:
    """``wbp/{b}/wb/v1/...`` back to ``wb/v1/...`` (other topics unchanged)."""
    if topic.startswith(PARTITION_ROOT + "/"):
        parts = topic.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return topic
