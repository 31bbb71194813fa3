"""Shadow traffic: a share of an alias's requests mirrored to another version, run and logged, never answered.

The draw (``share`` percent of the requests resolved through the alias) happens before the primary is
enqueued, so that the primary is marked ``logged`` before its XADD: both sides of a pair reach the
prediction log whatever its sampling. The mirror is enqueued after the primary, by a task of its own that
the caller never waits for. It is a copy of the primary with a new id, ``shadow_of`` = the primary's id,
no reply and no API key (the caller's quota is not spent). At most ``max_in_flight`` mirrors are being
enqueued at once; past that, or when the shadow partition is over its admission limit (or Redis does not
answer), the mirror is dropped and counted: shadow traffic is best effort and never slows the caller.
Encoded inputs are reused as they are: an alias's shadow must take the same inputs as its versions (the
registry checks that when the alias is set).
"""

from __future__ import annotations

import asyncio
import os
import random

import msgspec
import structlog

from inferq.api.catalog import ModelCatalog
from inferq.api.metrics import Metrics
from inferq.contracts.messages import InferRequest, message_encoder
from inferq.contracts.models import ModelRef, ModelVersion
from inferq.contracts.names import Names
from inferq.errors import InferqError
from inferq.settings import QueueSettings
from inferq.streams.connection import UNAVAILABLE
from inferq.streams.partition import Partition
from inferq.streams.producer import Producer, Submission

log = structlog.get_logger(__name__)

MAX_IN_FLIGHT = 256  # mirrors being enqueued at once, per API process


class ShadowMirror:
    """Draws which requests to mirror, and enqueues their copies in the background."""

    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        producer: Producer,
        names: Names,
        queue: QueueSettings,
        metrics: Metrics,
        timeout_s: float,
        max_in_flight: int = MAX_IN_FLIGHT,
        rng: random.Random | None = None,
    ) -> None:
        self._catalog = catalog
        self._producer = producer
        self._names = names
        self._queue = queue
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Mirrors being enqueued now."""
        return len(self._tasks)

    async def target(self, ref: ModelRef, served: ModelVersion) -> ModelVersion | None:
        """The version to mirror this call to, drawn now, or None (no shadow, not drawn, not servable).

        Only a call through an alias is mirrored (``wine`` or ``wine@prod``, never ``wine@2``).
        """
        if ref.alias is None or ref.version is not None:
            return None
        info = await self._catalog.model(ref.name)  # in memory: ``served`` was just resolved from it
        shadow = next((a.shadow for a in info.aliases if a.name == ref.alias), None)
        if shadow is None or shadow.version == served.version or self._rng.random() * 100 >= shadow.share:
            return None
        return next((v for v in info.versions if v.version == shadow.version and v.status != "archived"), None)

    def mirror(self, primary: InferRequest, *, to: ModelVersion) -> None:
        """Enqueue a copy of ``primary`` (already enqueued) for version ``to``, in the background."""
        if len(self._tasks) >= self._max_in_flight:
            self._count(to, "dropped", reason="too many in flight")
            return
        copy = msgspec.structs.replace(
            primary,
            id=os.urandom(16).hex(),
            version=to.version,
            shadow_of=primary.id,
            reply=None,
            key_id="",
            logged=True,
            output="predictions",  # what the log compares; a V2 caller's output names may not exist on the shadow
            output_names=(),
            cache_key="",
            cache_ttl_ms=0,
            fallback_from=0,
        )
        task = asyncio.get_running_loop().create_task(self._send(copy, to), name=f"shadow:{copy.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until the mirrors being enqueued now are (tests, and a process shutting down)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _send(self, message: InferRequest, version: ModelVersion) -> None:
        part = Partition.of(self._names, model=version.model, version=version.version)
        submission = Submission(
            stream=part.work,
            rate_key=part.rate_key,
            limit=int(version.overrides.get("admission_limit", self._queue.admission_limit)),
            message=message_encoder.encode(message),
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._producer.submit(submission)
        except (InferqError, *UNAVAILABLE) as exc:  # overloaded, or Redis away (or slow): best effort
            self._count(version, "dropped", reason=type(exc).__name__)
            return
        except Exception:  # a bug: logged, never raised into a task nobody awaits
            log.exception("shadow.failed", model=version.model, version=version.version)
            self._count(version, "dropped")
            return
        self._count(version, "sent")

    def _count(self, version: ModelVersion, outcome: str, *, reason: str = "") -> None:
        self._metrics.count_shadow(model=version.model, version=version.version, outcome=outcome)
        if reason:
            log.debug("shadow.dropped", model=version.model, version=version.version, reason=reason)
