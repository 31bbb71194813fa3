"""Job chunks onto their partition's bulk lane: one ``infer.v1`` message per chunk, pipelined.

Chunks bypass admission: a job is durable from its 202 on, so its chunks are never refused; the
bulk lane is read after the interactive one, so they cannot crowd out sync traffic. The chunk's
deadline (the job's completion window) travels as a TTL relative to the entry's enqueue time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

from inferq.contracts.jobs import QueuedChunk
from inferq.contracts.messages import InferRequest, JobChunkRef, message_encoder
from inferq.contracts.names import Names
from inferq.contracts.predictions import Tensor
from inferq.streams.partition import Partition

_tensors = msgspec.msgpack.Decoder(tuple[Tensor, ...])


def chunk_message(chunk: QueuedChunk, *, now: dt.datetime) -> bytes:
    """The stream message for ``chunk`` (its request id is ``{job_id}:{seq}``: stable across re-enqueues)."""
    ttl_ms = max(1, int((chunk.deadline_at - now).total_seconds() * 1000))
    request = InferRequest(
        id=f"{chunk.job_id}:{chunk.seq}",
        tenant=chunk.tenant,
        model=chunk.model,
        version=chunk.version,
        inputs=_tensors.decode(chunk.inputs),
        rows=chunk.rows,
        ttl_ms=ttl_ms,
        correlation_id=chunk.correlation_id,
        job=JobChunkRef(job_id=chunk.job_id, seq=chunk.seq),
    )
    return message_encoder.encode(request)


async def enqueue_chunks(
    redis: aioredis.Redis, names: Names, chunks: Sequence[QueuedChunk], *, now: dt.datetime
) -> list[tuple[str, int, str]]:
    """XADD every chunk to its bulk lane in one round trip; ``[(job_id, seq, entry_id), …]``."""
    if not chunks:
        return []
    pipe = redis.pipeline(transaction=False)
    for chunk in chunks:
        part = Partition.of(names, model=chunk.model, version=chunk.version)
        pipe.xadd(part.bulk, {"m": chunk_message(chunk, now=now)})
    entry_ids = await pipe.execute()
    return [(c.job_id, c.seq, _text(e)) for c, e in zip(chunks, entry_ids, strict=True)]


async def entries_present(redis: aioredis.Redis, names: Names, chunks: Sequence[QueuedChunk]) -> list[bool]:
    """Whether each chunk's recorded entry is still on its bulk lane (a wiped Redis loses them)."""
    pipe = redis.pipeline(transaction=False)
    for chunk in chunks:
        part = Partition.of(names, model=chunk.model, version=chunk.version)
        entry = chunk.entry_id or "0-0"
        pipe.xrange(part.bulk, min=entry, max=entry, count=1)
    found = await pipe.execute()
    return [bool(chunk.entry_id) and bool(rows) for chunk, rows in zip(chunks, found, strict=True)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
