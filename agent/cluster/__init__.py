"""The agent as N instances: fixed buckets of users, rendezvous ownership, one persistent session per bucket.

How it fits together (docs/scale-out.md has the why and the measurements):

- :mod:`agent.cluster.assignment`: a user belongs to bucket ``fnv1a32(user) % B`` (:func:`bucket_of`), the same hash
  NATS's ``partition(B, 1)`` subject mapping uses, so the broker and the agents agree on it without talking; each
  member computes the owner of every bucket by rendezvous hashing over the members it sees alive.
- :mod:`agent.cluster.bus`: the bucket's bus (:class:`PartitionBus`), which reads a NATS partition ``wbp/{b}/#`` or
  one filter set per known user, and restores the original topics.
- :mod:`agent.cluster.store`: the bucket's state in Redis (:class:`RedisBucketStore`, an
  :class:`~agent.storage.AgentStore` as the SQLite store is), written in one fenced transaction per batch; taking a
  bucket increments its epoch, so a deposed owner can neither commit nor acknowledge.
- :mod:`agent.cluster.member`: a member (:class:`ClusterMember`) announces itself on the retained
  ``wb/v1/_agent/{cluster}-{member}/state``, runs one :class:`~agent.runtime.AgentRuntime` per owned bucket, and
  hands buckets over when members join or leave (a move is the runtime's restart path on another machine).
"""

from agent.cluster.assignment import (
    CLUSTER_NAME,
    DEFAULT_BUCKETS,
    MEMBER_NAME,
    NATS_ORDER_WAIT_S,
    PARTITION_ROOT,
    Partitions,
    assignment,
    bucket_of,
    escape_dots,
    nats_mappings,
    nats_mappings_block,
    original_topic,
    partition_filter,
    rendezvous_owner,
    user_filters,
)
from agent.cluster.bus import PartitionBus, per_device_order
from agent.cluster.member import ClusterMember, ClusterSettings, MemberStats, run_member
from agent.cluster.store import FencedError, RedisBucketStore, bucket_prefix, read_log

__all__ = [
    "CLUSTER_NAME",
    "DEFAULT_BUCKETS",
    "MEMBER_NAME",
    "NATS_ORDER_WAIT_S",
    "PARTITION_ROOT",
    "ClusterMember",
    "ClusterSettings",
    "FencedError",
    "MemberStats",
    "PartitionBus",
    "Partitions",
    "RedisBucketStore",
    "assignment",
    "bucket_of",
    "bucket_prefix",
    "escape_dots",
    "nats_mappings",
    "nats_mappings_block",
    "original_topic",
    "partition_filter",
    "per_device_order",
    "read_log",
    "rendezvous_owner",
    "run_member",
    "user_filters",
]
