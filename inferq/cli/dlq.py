"""``inferq dlq list|inspect|replay|purge MODEL@VERSION [IDS…]``: a partition's dead letters, as JSON."""

from __future__ import annotations

from inferq.cli.output import emit
from inferq.contracts.models import ModelRef
from inferq.contracts.names import Names
from inferq.embedded import started_services
from inferq.errors import InvalidInput
from inferq.settings import Settings
from inferq.streams import dead_letters
from inferq.streams.connection import connect, unavailable_as_domain_error
from inferq.streams.partition import Partition

VERBS = ("list", "inspect", "replay", "purge")


async def run_dlq(settings: Settings, *, verb: str, partition: str, ids: list[str]) -> int:
    """List (no tensors), inspect (whole messages), replay onto the lane, or purge; ``ids`` empty = all."""
    if verb not in VERBS:
        raise InvalidInput(f"unknown dlq command {verb!r}: one of {', '.join(VERBS)}")
    ref = ModelRef.parse(partition)
    if ref.version is None:
        raise InvalidInput(f"name a version, e.g. {ref.name}@1: dead letters belong to one version", field="partition")
    names = Names(settings.services.key_prefix)
    part = Partition.of(names, model=ref.name, version=ref.version)
    with started_services(settings.services, redis=True, postgres=False) as services:
        redis = connect(services)
        try:
            with unavailable_as_domain_error():
                if verb == "list":
                    emit(await dead_letters.list_dead_letters(redis, part))
                elif verb == "inspect":
                    emit(await dead_letters.inspect(redis, part, ids))
                elif verb == "replay":
                    emit(await dead_letters.replay(redis, part, names=names, ids=ids))
                else:
                    emit({"partition": part.key, "purged": await dead_letters.purge(redis, part, ids=ids)})
        finally:
            await redis.aclose()
    return 0
