"""Embedded Redis and Postgres for a machine that has neither (``make dev``, ``make test``)."""

from inferq.embedded.postgres_server import EmbeddedPostgres
from inferq.embedded.redis_server import EmbeddedRedis, find_redis_binary
from inferq.embedded.services import started_services

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "find_redis_binary", "started_services"]
