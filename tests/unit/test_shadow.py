"""Shadow traffic without Redis: which calls are mirrored, what a mirror is, the bound, and what the log keeps."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

import msgspec
import numpy as np
import pytest

from inferq.api.metrics import Metrics
from inferq.api.shadow import ShadowMirror
from inferq.contracts.digests import input_digest
from inferq.contracts.messages import InferRequest, InferResult, Reply, Timings, request_decoder
from inferq.contracts.models import Alias, ModelInfo, ModelRef, ModelSignature, ModelVersion, Shadow, TensorSpec
from inferq.contracts.names import Names
from inferq.errors import Overloaded
from inferq.inputs import encode_tensors
from inferq.settings import QueueSettings
from inferq.streams.consumer import Entry
from inferq.streams.producer import Submission
from inferq.workers.log_buffer import LogBuffer, Sampler
from inferq.workers.publisher import Outcome

SIGNATURE = ModelSignature(inputs=(TensorSpec(name="x", dtype="float32", shape=(None, 2)),), outputs=())
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def version(n: int, *, status: str = "active", **overrides: int) -> ModelVersion:
    return ModelVersion(model="m", version=n, status=status, signature=SIGNATURE, sha256="0" * 64,  # type: ignore[arg-type]
                        size_bytes=1, created_at=NOW, overrides=dict(overrides))  # fmt: skip


class Catalog:
    """What ``ShadowMirror`` reads of the catalog: one model."""

    def __init__(self, *versions: ModelVersion, shadow: Shadow | None) -> None:
        aliases = (Alias(model="m", name="default", weights={1: 100}, shadow=shadow), Alias(model="m", name="plain",
                   weights={1: 100}))  # fmt: skip
        self.info = ModelInfo(name="m", created_at=NOW, versions=versions, aliases=aliases)

    async def model(self, name: str) -> ModelInfo:
        assert name == "m"
        return self.info


class Producer:
    """Records submissions; ``gate`` holds them; ``error`` rejects them."""

    def __init__(self, *, error: Exception | None = None) -> None:
        self.submitted: list[Submission] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.error = error

    async def submit(self, submission: Submission) -> str:
        self.submitted.append(submission)
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return "1-0"


def mirror(catalog: Catalog, producer: Producer, **options: Any) -> tuple[ShadowMirror, Metrics]:
    metrics = Metrics()
    shadows = ShadowMirror(catalog=catalog, producer=producer, names=Names("t"), queue=QueueSettings(),  # type: ignore[arg-type]
                           metrics=metrics, timeout_s=5.0, rng=random.Random(7), **options)  # fmt: skip
    return shadows, metrics


def counted(metrics: Metrics, outcome: str, version: int = 2) -> float:
    labels = {"model": "m", "version": str(version), "outcome": outcome}
    return metrics.registry.get_sample_value("inferq_shadow_requests_total", labels) or 0.0


def primary(**fields: Any) -> InferRequest:
    inputs = encode_tensors({"x": np.array([[1.0, 2.0]], dtype=np.float32)})
    reply = Reply(kind="api", name="api-1")
    return InferRequest(id="p" * 32, tenant="acme", model="m", version=1, inputs=inputs, rows=1, ttl_ms=30_000,
                        reply=reply, key_id="key-1", correlation_id="c-1", **fields)  # fmt: skip


async def test_a_share_of_the_alias_calls_is_drawn_and_never_a_pinned_one() -> None:
    shadows, _ = mirror(Catalog(version(1), version(2), shadow=Shadow(version=2, share=10)), Producer())
    drawn = [await shadows.target(ModelRef(name="m", alias="default"), version(1)) for _ in range(10_000)]
    assert sum(d is not None for d in drawn) == 983  # random.Random(7): about 10 %
    assert {d.version for d in drawn if d is not None} == {2}
    assert await shadows.target(ModelRef(name="m", version=1), version(1)) is None  # wine@1: never mirrored
    assert await shadows.target(ModelRef(name="m", alias="plain"), version(1)) is None  # no shadow on that alias


@pytest.mark.parametrize(
    ("versions", "served"),
    [((version(1), version(2, status="archived")), 1), ((version(1), version(2)), 2), ((version(1),), 1)],
    ids=["archived shadow", "served by the shadow version (a fallback)", "shadow version gone"],
)
async def test_no_mirror_to_a_version_that_cannot_take_it(versions: tuple[ModelVersion, ...], served: int) -> None:
    shadows, _ = mirror(Catalog(*versions, shadow=Shadow(version=2, share=100)), Producer())
    assert await shadows.target(ModelRef(name="m", alias="default"), version(served)) is None


async def test_a_mirror_is_a_copy_with_a_new_id_no_reply_no_key_and_always_logged() -> None:
    producer = Producer()
    shadows, metrics = mirror(Catalog(version(1), version(2), shadow=Shadow(version=2, share=100)), producer)
    original = primary(logged=True, cache_key="cache:abc", cache_ttl_ms=60_000, fallback_from=3)
    shadows.mirror(original, to=version(2, admission_limit=7))
    await shadows.wait()
    [submission] = producer.submitted
    copy = request_decoder.decode(submission.message)
    assert copy.id != original.id
    assert len(copy.id) == 32
    assert (copy.version, copy.shadow_of, copy.reply, copy.key_id, copy.logged) == (2, original.id, None, "", True)
    assert (copy.cache_key, copy.cache_ttl_ms, copy.fallback_from) == ("", 0, 0)
    assert (copy.inputs, copy.tenant, copy.correlation_id, copy.ttl_ms) == (original.inputs, "acme", "c-1", 30_000)
    assert submission.quota is None  # not counted against the caller's key
    assert (submission.stream, submission.limit) == (Names("t").work_stream(Names("t").partition("m", 2)), 7)
    assert (counted(metrics, "sent"), counted(metrics, "dropped")) == (1, 0)


async def test_mirrors_past_the_bound_are_dropped_and_counted() -> None:
    producer = Producer()
    producer.gate.clear()  # Redis is slow: the first mirrors stay in flight
    shadows, metrics = mirror(Catalog(version(1), version(2), shadow=None), producer, max_in_flight=2)
    for _ in range(5):
        shadows.mirror(primary(), to=version(2))
    await asyncio.sleep(0)
    assert (shadows.in_flight, len(producer.submitted), counted(metrics, "dropped")) == (2, 2, 3)
    producer.gate.set()
    await shadows.wait()
    assert (shadows.in_flight, counted(metrics, "sent"), counted(metrics, "dropped")) == (0, 2, 3)
    shadows.mirror(primary(), to=version(2))  # room again
    await shadows.wait()
    assert counted(metrics, "sent") == 3


async def test_a_full_shadow_partition_drops_the_mirror() -> None:
    shadows, metrics = mirror(Catalog(version(1), version(2), shadow=None), Producer(error=Overloaded("full")))
    shadows.mirror(primary(), to=version(2))
    await shadows.wait()
    assert (counted(metrics, "sent"), counted(metrics, "dropped")) == (0, 1)


# The worker's side: what the prediction log keeps of a pair


def settled(request: InferRequest) -> Outcome:
    result = InferResult(id=request.id, tenant=request.tenant, model="m", version=request.version, status="succeeded",
                         timings=Timings(queue_ms=1.0, inference_ms=1.0, batch_rows=1))  # fmt: skip
    return Outcome(Entry("interactive", "1-0", b""), result, request.reply, rows=1, request=request)


def test_a_pair_is_logged_whatever_the_sampling_and_shares_a_digest() -> None:
    never = LogBuffer(capacity=10, sampler=Sampler(0.0), clock=lambda: 1.0)
    first = primary(logged=True, fallback_from=3)
    mirrored = msgspec.structs.replace(first, id="s" * 32, version=2, shadow_of=first.id, reply=None,
                                        fallback_from=0)  # fmt: skip
    never.add([settled(first), settled(mirrored), settled(primary()), settled(msgspec.structs.replace(primary(),
              id="q" * 32))])  # fmt: skip
    kept = never.take()
    assert [(r.request_id, r.version, r.shadow_of, r.fallback_from) for r in kept] == [
        (first.id, 1, None, 3), (mirrored.id, 2, first.id, None)
    ]  # fmt: skip
    assert kept[0].input_digest == kept[1].input_digest == input_digest(first.inputs)
    other = encode_tensors({"x": np.array([[1.0, 2.5]], dtype=np.float32)})
    assert input_digest(other) != kept[0].input_digest
