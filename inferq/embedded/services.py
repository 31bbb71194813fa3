"""Start whichever of Redis and Postgres the settings leave unset, for the length of a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import msgspec

from inferq.embedded.postgres_server import EmbeddedPostgres
from inferq.embedded.redis_server import EmbeddedRedis
from inferq.settings import ServiceSettings


@contextlib.contextmanager
def started_services(
    services: ServiceSettings, *, redis: bool = True, postgres: bool = True, persist: bool = True
) -> Iterator[ServiceSettings]:
    """Yield ``services`` with every unset URL filled in by an embedded server under ``state_dir``.

    Configured URLs are used as they are. Servers started here are stopped on exit.
    """
    with contextlib.ExitStack() as stack:
        redis_url, database_url = services.redis_url, services.database_url
        if redis and redis_url is None:
            server = EmbeddedRedis(services.state_dir / "redis", persist=persist)
            redis_url = stack.enter_context(server).url
        if postgres and database_url is None:
            pg = EmbeddedPostgres(services.state_dir / "postgres", persist=persist)
            database_url = stack.enter_context(pg).url
        yield msgspec.structs.replace(services, redis_url=redis_url, database_url=database_url)
