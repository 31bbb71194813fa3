"""Submitted rows → job chunks: valid rows encoded as tensors, invalid ones as already-failed rows.

Rows arrive one at a time (an upload is parsed as it streams), are grouped up to ``chunk_rows``,
checked against the model's signature together, and leave as :class:`NewChunk`: a runnable chunk
(tensors, one stream message later) and, for rows that cannot run, a reject chunk whose outcomes
are the per-row errors. Records and rows may be mixed in one upload: a chunk holds one form.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

from inferq.contracts.errors import ErrorInfo
from inferq.contracts.jobs import NewChunk, RowOutcome
from inferq.contracts.messages import message_encoder
from inferq.contracts.models import ModelSignature
from inferq.errors import InvalidInput, PayloadTooLarge
from inferq.inputs import encode_tensors, to_feeds
from inferq.inputs.uploads import UploadRow, check_rows


@dataclass(slots=True)
class _Pending:
    indexed: list[tuple[int, UploadRow]] = field(default_factory=list)

    def form(self) -> type | None:
        return type(self.indexed[0][1].inputs) if self.indexed else None


class Chunker:
    """Turns a stream of rows into chunks; ``totals`` are known once the stream is exhausted."""

    def __init__(self, signature: ModelSignature, *, chunk_rows: int, max_rows: int, max_elements: int) -> None:
        self._signature = signature
        self._chunk_rows = chunk_rows
        self._max_rows = max_rows
        self._max_elements = max_elements
        self._seq = 0
        self.rows = 0
        self.rejected = 0

    async def chunks(self, rows: AsyncIterable[UploadRow]) -> AsyncIterator[NewChunk]:
        """Chunks for ``rows``, in order; ``InvalidInput`` when there are no rows at all."""
        good, bad = _Pending(), _Pending()
        async for row in rows:
            if self.rows >= self._max_rows:
                raise PayloadTooLarge(f"a job holds at most {self._max_rows} rows", max_rows=self._max_rows)
            index, self.rows = self.rows, self.rows + 1
            pending = bad if row.error is not None else good
            if pending is good and good.indexed and type(row.inputs) is not good.form():
                for chunk in self._flush(good, bad):  # records and rows do not share a chunk
                    yield chunk
            pending.indexed.append((index, row))
            if len(good.indexed) >= self._chunk_rows or len(bad.indexed) >= self._chunk_rows:
                for chunk in self._flush(good, bad):
                    yield chunk
        for chunk in self._flush(good, bad, final=True):
            yield chunk
        if self.rows == 0:
            raise InvalidInput("the job has no rows", field="inputs")

    def _flush(self, good: _Pending, bad: _Pending, *, final: bool = False) -> list[NewChunk]:
        out: list[NewChunk] = []
        if good.indexed:
            checked = check_rows([r for _, r in good.indexed], self._signature, max_elements=self._max_elements)
            fine = [(i, r) for (i, _), r in zip(good.indexed, checked, strict=True) if r.error is None]
            bad.indexed.extend((i, r) for (i, _), r in zip(good.indexed, checked, strict=True) if r.error is not None)
            good.indexed.clear()
            if fine:
                out.append(self._runnable(fine))
        if bad.indexed and (final or len(bad.indexed) >= self._chunk_rows):
            while bad.indexed:
                part, bad.indexed[:] = bad.indexed[: self._chunk_rows], bad.indexed[self._chunk_rows :]
                out.append(self._rejects(part))
        return out

    def _runnable(self, rows: list[tuple[int, UploadRow]]) -> NewChunk:
        feeds = to_feeds([r.inputs for _, r in rows], self._signature, max_elements=self._max_elements * len(rows))
        return self._chunk(rows, inputs=message_encoder.encode(encode_tensors(feeds)))

    def _rejects(self, rows: list[tuple[int, UploadRow]]) -> NewChunk:
        self.rejected += len(rows)
        outcomes = tuple(
            RowOutcome(error=ErrorInfo(code=InvalidInput.code, message=r.error or "invalid row")) for _, r in rows
        )
        return self._chunk(rows, outcomes=outcomes)

    def _chunk(
        self,
        rows: list[tuple[int, UploadRow]],
        *,
        inputs: bytes | None = None,
        outcomes: tuple[RowOutcome, ...] | None = None,
    ) -> NewChunk:
        seq, self._seq = self._seq, self._seq + 1
        lines = tuple(r.line for _, r in rows)
        return NewChunk(
            seq=seq,
            rows=len(rows),
            indexes=tuple(i for i, _ in rows),
            custom_ids=tuple(r.custom_id for _, r in rows),
            lines=lines if all(line > 0 for line in lines) else None,
            inputs=inputs,
            outcomes=outcomes,
        )
