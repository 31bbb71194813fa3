"""The prediction log's buffer: which results are sampled, what a record keeps, and the bound on memory.

Sampling spares two kinds of request: a shadow (``shadow_of``) and a primary marked ``logged`` (one that
was mirrored) are always kept, so that both sides of a pair reach the log and can be compared.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from inferq.contracts.digests import input_digest
from inferq.contracts.messages import InferRequest, InferResult
from inferq.store.prediction_log import LogRecord

if TYPE_CHECKING:
    from inferq.workers.publisher import Outcome

_SPAN = 1 << 64


class Sampler:
    """Keeps a ``rate`` share of request ids, the same ones every time (blake2b of the id): a request
    that is settled again, or by another worker, is kept or left out alike."""

    def __init__(self, rate: float) -> None:
        self._threshold = round(min(max(rate, 0.0), 1.0) * _SPAN)

    def keeps(self, request_id: str) -> bool:
        if self._threshold >= _SPAN:
            return True
        digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") < self._threshold


def record_of(result: InferResult, *, rows: int, at: float, request: InferRequest | None = None) -> LogRecord:
    """What the log keeps of one result: no inputs (their digest only), no outputs but the predicted classes."""
    timings, error = result.timings, result.error
    labels = [str(p.label) if p.class_name is None else p.class_name for p in result.predictions if p.label is not None]
    return LogRecord(
        at=at,
        tenant=result.tenant,
        model=result.model,
        version=result.version,
        status=result.status,
        error_code=error.code if error is not None else None,
        queue_ms=timings.queue_ms if timings is not None else None,
        inference_ms=timings.inference_ms if timings is not None else None,
        rows=rows or len(result.predictions),
        predicted=labels[0] if len(labels) == 1 else None,
        predicted_counts=dict(Counter(labels)) if len(labels) > 1 else None,
        request_id=result.id,
        **_pairing(request),
    )


def _pairing(request: InferRequest | None) -> dict[str, Any]:
    """What pairs a record with others: the request it mirrored, its inputs' digest, a fallback's origin.

    NOTE: the digest is computed here, for the kept records only (a few µs per KB of inputs).
    """
    if request is None:
        return {}
    return {
        "shadow_of": request.shadow_of or None,
        "input_digest": input_digest(request.inputs, output=request.output, output_names=request.output_names),
        "fallback_from": request.fallback_from or None,
    }


class LogBuffer:
    """The records waiting to be written, at most ``capacity``; ``dropped`` counts those turned away."""

    def __init__(self, *, capacity: int, sampler: Sampler, clock: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self._sampler = sampler
        self._clock = clock
        self._records: list[LogRecord] = []
        self.dropped = 0  # turned away because the buffer was full, since the start

    def __len__(self) -> int:
        return len(self._records)

    def add(self, outcomes: Sequence[Outcome]) -> None:
        """Buffer the sampled (or always logged), settled, non-job results among ``outcomes``."""
        at = self._clock()
        for outcome in outcomes:
            result, request = outcome.result, outcome.request
            if result is None or outcome.job is not None or outcome.retry:
                continue
            kept = request is not None and (request.logged or request.shadow_of)
            if not kept and not self._sampler.keeps(result.id):
                continue
            if len(self._records) >= self.capacity:
                self.dropped += 1
                continue
            self._records.append(record_of(result, rows=outcome.rows, at=at, request=request))

    def take(self, limit: int | None = None) -> list[LogRecord]:
        """Up to ``limit`` (all) of the oldest records, removed from the buffer."""
        if limit is None or limit >= len(self._records):
            taken, self._records = self._records, []
            return taken
        taken, self._records = self._records[:limit], self._records[limit:]
        return taken
