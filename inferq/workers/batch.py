"""One micro-batch, pure (no Redis): decoded requests and a runner in, one result per request out.

Expired requests are never run; requests whose inputs do not fit the signature fail at once with
``invalid_input``; the others are stacked into one ONNX Runtime run (one per distinct non-batch
shape), split back exactly, and postprocessed. When a run raises, each of its requests is run alone,
so one bad request cannot fail its batch-mates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from inferq.contracts.errors import ErrorInfo
from inferq.contracts.messages import InferRequest, InferResult, State, Timings
from inferq.contracts.models import ModelSignature
from inferq.contracts.predictions import Prediction, Tensor
from inferq.engine import Runner, split, stack, to_predictions
from inferq.errors import DeadlineExceeded, InferenceFailed, InferqError, InvalidInput, ModelLoadFailed
from inferq.inputs import MAX_ELEMENTS, batch_size, check_feeds, decode_tensors, encode_tensors


@dataclass(frozen=True, slots=True)
class Work:
    """One decoded request: when it was enqueued and dequeued (Redis's clock, ms), which delivery."""

    request: InferRequest
    enqueued_ms: int
    dequeued_ms: float
    delivery: int = 1

    @property
    def queue_ms(self) -> float:
        return max(0.0, self.dequeued_ms - self.enqueued_ms)


RunHook = Callable[[Sequence[Work]], None]  # called right before each ORT run (the run ledger)


@dataclass(frozen=True, slots=True)
class _Ready:
    index: int
    work: Work
    feeds: dict[str, np.ndarray]


def execute(
    works: Sequence[Work],
    runner: Runner,
    *,
    now_ms: Callable[[], float],
    max_elements: int = MAX_ELEMENTS,
    on_run: RunHook | None = None,
) -> list[InferResult]:
    """Results for ``works``, in order. ``now_ms`` (Redis's clock) is read once, just before running.

    Raises ``ModelLoadFailed`` only when the runner was closed under us (evicted from the cache):
    nothing was answered, the caller gets a fresh runner and tries again.
    """
    results: list[InferResult | None] = [None] * len(works)
    ready: list[_Ready] = []
    now = now_ms()
    for index, work in enumerate(works):
        if now > work.enqueued_ms + work.request.ttl_ms:
            error = DeadlineExceeded("the deadline passed before the request was run", ttl_ms=work.request.ttl_ms)
            results[index] = finish(work, "expired", error=error)
            continue
        try:
            ready.append(_Ready(index, work, _feeds(work.request, runner.signature, max_elements=max_elements)))
        except InvalidInput as exc:
            results[index] = finish(work, "failed", error=exc)
    for group in _by_shape(ready):
        for index, result in _run_isolating(group, runner, on_run):
            results[index] = result
    return [r for r in results if r is not None]


def finish(
    work: Work,
    status: State,
    *,
    error: InferqError | None = None,
    inference_ms: float = 0.0,
    batch_rows: int = 0,
    predictions: tuple[Prediction, ...] = (),
    tensors: tuple[Tensor, ...] = (),
) -> InferResult:
    """The terminal result of ``work``."""
    request = work.request
    return InferResult(
        id=request.id,
        tenant=request.tenant,
        model=request.model,
        version=request.version,
        status=status,
        error=ErrorInfo.from_exception(error) if error is not None else None,
        timings=Timings(queue_ms=work.queue_ms, inference_ms=inference_ms, batch_rows=batch_rows),
        correlation_id=request.correlation_id,
        key_id=request.key_id,
        predictions=predictions,
        tensors=tensors,
    )


def _feeds(request: InferRequest, signature: ModelSignature, *, max_elements: int) -> dict[str, np.ndarray]:
    feeds = check_feeds(decode_tensors(request.inputs), signature, max_elements=max_elements)
    rows = batch_size(feeds)
    if rows != request.rows:
        raise InvalidInput(f"the message says {request.rows} rows but its inputs have {rows}", field="rows")
    if request.output == "tensors" and request.output_names:
        known = {spec.name for spec in signature.outputs}
        for name in request.output_names:
            if name not in known:
                raise InvalidInput(f"unknown output {name!r}; outputs: {', '.join(sorted(known))}", field="outputs")
    return feeds


def _by_shape(ready: list[_Ready]) -> list[list[_Ready]]:
    """Requests that can be stacked together (same non-batch dimensions): usually one group."""
    groups: dict[tuple[tuple[int, ...], ...], list[_Ready]] = {}
    for item in ready:
        key = tuple(array.shape[1:] for array in item.feeds.values())
        groups.setdefault(key, []).append(item)
    return list(groups.values())


def _run_isolating(group: list[_Ready], runner: Runner, on_run: RunHook | None) -> list[tuple[int, InferResult]]:
    try:
        return _run(group, runner, on_run)
    except ModelLoadFailed:
        raise
    except Exception as exc:
        if len(group) == 1:
            return [(group[0].index, finish(group[0].work, "failed", error=_as_error(exc)))]
    answered: list[tuple[int, InferResult]] = []
    for item in group:  # find the bad one(s): every other request still succeeds
        try:
            answered.extend(_run([item], runner, on_run))
        except ModelLoadFailed:
            raise
        except Exception as exc:
            answered.append((item.index, finish(item.work, "failed", error=_as_error(exc))))
    return answered


def _run(group: list[_Ready], runner: Runner, on_run: RunHook | None) -> list[tuple[int, InferResult]]:
    stacked, offsets = stack([item.feeds for item in group])
    if on_run is not None:
        on_run([item.work for item in group])
    started = time.perf_counter()
    outputs = runner.run(stacked)
    inference_ms = (time.perf_counter() - started) * 1000
    rows = offsets[-1]
    parts = [outputs] if len(group) == 1 else split(outputs, offsets)
    predictions = None
    if any(item.work.request.output == "predictions" for item in group):
        predictions = to_predictions(runner.signature, outputs)
    answered: list[tuple[int, InferResult]] = []
    for item, part, (start, stop) in zip(group, parts, pairwise(offsets), strict=True):
        request = item.work.request
        predicted: tuple[Prediction, ...] = ()
        tensors: tuple[Tensor, ...] = ()
        if request.output == "tensors":
            tensors = encode_tensors({name: part[name] for name in request.output_names or tuple(part)})
        elif predictions is not None and len(predictions) == rows:
            predicted = tuple(predictions[start:stop])
        else:  # outputs that are not one row per input row: postprocess this request's part alone
            predicted = tuple(to_predictions(runner.signature, part))
        done = finish(
            item.work, "succeeded", inference_ms=inference_ms, batch_rows=rows, predictions=predicted, tensors=tensors
        )
        answered.append((item.index, done))
    return answered


def _as_error(exc: Exception) -> InferqError:
    if isinstance(exc, InferqError):
        return exc
    return InferenceFailed(f"the run failed: {type(exc).__name__}: {exc}")


def rows_of(works: Sequence[Work]) -> int:
    """Rows in ``works`` as their messages declare them (what ``max_batch`` counts)."""
    return sum(max(1, w.request.rows) for w in works)
