"""The one naming module: every Redis key, stream, group and channel under ``INFERQ_KEY_PREFIX``.

Partition keys carry a hash tag (``{wine@2}``) so a partition's streams live in one Redis Cluster
slot and multi-key scripts over them stay legal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Names:
    """Key names for one deployment (one prefix)."""

    prefix: str = "inferq"

    def partition(self, model: str, version: int) -> str:
        return f"{model}@{version}"

    def work_stream(self, partition: str) -> str:
        """Interactive lane of a partition."""
        return f"{self.prefix}:{{{partition}}}:work"

    def bulk_stream(self, partition: str) -> str:
        """Bulk lane (job chunks) of a partition."""
        return f"{self.prefix}:{{{partition}}}:bulk"

    def dead_letters(self, partition: str) -> str:
        return f"{self.prefix}:{{{partition}}}:dlq"

    def group(self, partition: str) -> str:
        """The one consumer group of a partition (both lanes)."""
        return "workers"

    def rate(self, partition: str) -> str:
        """Drain rate (rows/s) last measured by the partition's workers; read by admission."""
        return f"{self.prefix}:{{{partition}}}:rate"

    def alive(self, partition: str) -> str:
        """Present (with a short TTL) while some worker consumes the partition: model readiness."""
        return f"{self.prefix}:{{{partition}}}:alive"

    def broken(self, partition: str) -> str:
        """Present (with a short TTL) after a worker failed to load the partition's model: fallback skips it."""
        return f"{self.prefix}:{{{partition}}}:broken"

    def result(self, request_id: str) -> str:
        return f"{self.prefix}:result:{request_id}"

    def reply_channel(self, instance: str) -> str:
        """Pub/sub channel of one API instance."""
        return f"{self.prefix}:reply:{instance}"

    def result_cache(self, partition: str, tenant: str, digest: str) -> str:
        """A cached answer of a deterministic version to one tenant's input digest (the result cache; TTL'd).

        NOTE: per tenant: a hit says "someone sent these inputs lately", which must not cross tenants.
        """
        return f"{self.prefix}:cache:{partition}:{tenant}:{digest}"

    def catalog_revision(self) -> str:
        """Bumped by every registry change (streams/catalog_revisions.py): catalogs reload when it moves."""
        return f"{self.prefix}:catalog:rev"

    def catalog_channel(self) -> str:
        """Pub/sub channel announcing a registry change at once (the revision covers missed messages)."""
        return f"{self.prefix}:catalog:changed"

    def quota(self, key_id: str) -> str:
        """An API key's rate-limit state (GCRA: its theoretical arrival time)."""
        return f"{self.prefix}:quota:{key_id}"

    def in_flight(self, key_id: str) -> str:
        """An API key's predictions in flight (sorted set: request id → deadline)."""
        return f"{self.prefix}:inflight:{key_id}"

    def ingress_stream(self, producer: str) -> str:
        return f"{self.prefix}:ingress:{producer}"

    def producer_replies(self, producer: str) -> str:
        return f"{self.prefix}:reply:{producer}"

    def all_keys(self) -> str:
        """A SCAN pattern matching every key of this prefix."""
        return f"{self.prefix}:*"
