"""The prediction log's writer without Postgres: sampling, what a record keeps, the bounded buffer, flushing."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence

import msgspec
import pytest
from structlog.testing import capture_logs

from inferq.contracts.errors import ErrorInfo
from inferq.contracts.messages import InferResult, JobChunkRef, State, Timings
from inferq.contracts.predictions import Prediction
from inferq.settings import PredictionLogSettings, Settings
from inferq.store.prediction_log import LogRecord
from inferq.streams.consumer import Entry
from inferq.streams.partition import Partition
from inferq.workers.log_buffer import LogBuffer, Sampler, record_of
from inferq.workers.prediction_log import FLUSH_ROWS, PredictionLogWriter
from inferq.workers.publisher import Outcome

PART = Partition(model="m", version=1, work="w", bulk="b", dlq="d", group="g", rate_key="r", alive_key="a")
IRIS = ("setosa", "versicolor", "virginica")


def result(
    request_id: str = "r", *, status: State = "succeeded", labels: Sequence[int] = (0,), **fields: object
) -> InferResult:
    predictions = tuple(Prediction(label=label, class_name=IRIS[label]) for label in labels)
    timings = Timings(queue_ms=1.5, inference_ms=0.25, batch_rows=8)
    return InferResult(id=request_id, tenant="acme", model="m", version=1, status=status,  # type: ignore[arg-type]
                       predictions=predictions, timings=timings, **fields)  # fmt: skip


def outcome(res: InferResult | None, **fields: object) -> Outcome:
    rows = len(res.predictions) if res is not None else 1
    return Outcome(Entry("interactive", "1-0", b""), res, **{"rows": rows, **fields})  # type: ignore[arg-type]


def outcomes(n: int, stem: str = "r") -> list[Outcome]:
    return [outcome(result(f"{stem}{i}")) for i in range(n)]


def buffer(*, capacity: int = 100, rate: float = 1.0) -> LogBuffer:
    return LogBuffer(capacity=capacity, sampler=Sampler(rate), clock=lambda: 1_700_000_000.0)


# Sampling


def test_sampling_keeps_the_same_ids_every_time_and_about_the_rate() -> None:
    ids = [f"req-{i}" for i in range(10_000)]
    kept = {i for i in ids if Sampler(0.25).keeps(i)}
    assert kept == {i for i in ids if Sampler(0.25).keeps(i)}  # a rerun: the same ids
    # another process, another machine: the same ids too (a hash of the id's bytes, not Python's salted hash())
    assert len(kept) == 2_554  # about a quarter
    assert sorted(i for i in kept if int(i[4:]) < 40) == sorted(["req-1", "req-2", "req-6", "req-12", "req-19",
                                                                 "req-21", "req-26", "req-31", "req-35"])  # fmt: skip
    assert kept < {i for i in ids if Sampler(0.5).keeps(i)}  # a higher rate keeps a superset


@pytest.mark.parametrize(("rate", "count"), [(1.0, 1000), (0.0, 0), (2.0, 1000), (-1.0, 0)])
def test_sampling_at_the_bounds_is_all_or_nothing(rate: float, count: int) -> None:
    assert sum(Sampler(rate).keeps(f"x{i}") for i in range(1000)) == count


def test_a_sampled_out_result_is_never_buffered() -> None:
    buf = buffer(rate=0.5, capacity=1000)
    batch = outcomes(200)
    buf.add(batch)
    buf.add(batch)  # settled again (a failed settle pipeline): the same ones
    kept = [o.result.id for o in batch if o.result is not None and Sampler(0.5).keeps(o.result.id)]
    assert [r.tenant for r in buf.take()] == ["acme"] * (2 * len(kept))
    assert 0 < len(kept) < 200


# What a record keeps


def test_a_one_row_classifier_result_keeps_its_class() -> None:
    record = record_of(result(labels=(2,)), rows=1, at=5.0)
    assert record == LogRecord(at=5.0, tenant="acme", model="m", version=1, status="succeeded", queue_ms=1.5,
                               inference_ms=0.25, rows=1, predicted="virginica", request_id="r")  # fmt: skip


def test_a_multi_row_result_keeps_counts_per_class() -> None:
    record = record_of(result(labels=(0, 2, 0, 0)), rows=4, at=5.0)
    assert (record.predicted, record.predicted_counts, record.rows) == (None, {"setosa": 3, "virginica": 1}, 4)


def test_labels_without_class_names_and_regressors() -> None:
    unnamed = msgspec.structs.replace(result(labels=()), predictions=(Prediction(label=7), Prediction(label=7)))
    assert record_of(unnamed, rows=2, at=0).predicted_counts == {"7": 2}
    regression = msgspec.structs.replace(result(labels=()), predictions=(Prediction(value=1.5),))
    record = record_of(regression, rows=1, at=0)
    assert (record.predicted, record.predicted_counts) == (None, None)


def test_a_failed_result_keeps_its_error_code_and_rows() -> None:
    failed = result(status="failed", labels=(), error=ErrorInfo(code="inference_failed", message="boom"))
    record = record_of(failed, rows=3, at=0)
    assert (record.status, record.error_code, record.rows, record.predicted) == ("failed", "inference_failed", 3, None)


# The buffer


def test_the_buffer_holds_at_most_its_capacity_and_counts_the_rest() -> None:
    buf = buffer(capacity=3)
    buf.add(outcomes(5))
    assert (len(buf), buf.dropped) == (3, 2)
    buf.add(outcomes(1, stem="late"))
    assert buf.dropped == 3
    assert len(buf.take(2)) == 2  # the oldest first
    buf.add(outcomes(4, stem="next"))  # room for two
    assert (len(buf), buf.dropped) == (3, 5)


def test_the_buffer_takes_the_oldest_first() -> None:
    buf = buffer()
    buf.add(outcomes(3))
    first = buf.take(2)
    assert (len(first), len(buf)) == (2, 1)
    assert (len(buf.take()), len(buf)) == (1, 0)


def test_job_chunks_unsettled_and_resultless_outcomes_are_not_logged() -> None:
    buf = buffer()
    buf.add(
        [
            outcome(result("chunk"), job=JobChunkRef(job_id="j", seq=0)),
            outcome(None, dead_reason="undecodable message"),
            outcome(result("again"), retry=True),  # left pending: observed again when it is settled
            outcome(result("kept")),
        ]
    )
    assert (len(buf), buf.dropped) == (1, 0)


# The writer


class Sink:
    """A stand-in for the store: records what it was given; fails or hangs on demand."""

    def __init__(self) -> None:
        self.batches: list[list[LogRecord]] = []
        self.failing = False
        self.hang: asyncio.Event | None = None
        self.calls = 0

    async def insert(self, records: Sequence[LogRecord]) -> None:
        self.calls += 1
        if self.hang is not None:
            await self.hang.wait()
        if self.failing:
            raise ConnectionRefusedError("postgres is down")
        self.batches.append(list(records))

    @property
    def written(self) -> int:
        return sum(len(b) for b in self.batches)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def writer(sink: Sink, *, capacity: int = 100_000, flush_s: float = 3600.0) -> PredictionLogWriter:
    """Flushing every hour: in these tests only a full batch or ``aclose`` writes."""
    return PredictionLogWriter(sink, buffer(capacity=capacity), flush_s=flush_s, close_timeout_s=0.2)


async def test_close_writes_everything_observed() -> None:
    sink = Sink()
    log = writer(sink)
    log.observe(PART, outcomes(10))
    log.observe(PART, outcomes(5, stem="s"))
    assert sink.written == 0  # observing never writes
    await log.aclose()
    assert (sink.written, log.written, len(log.buffer)) == (15, 15, 0)
    log.observe(PART, outcomes(3, stem="late"))  # after close: ignored, no new task
    assert len(log.buffer) == 0


async def test_a_full_batch_is_written_without_waiting_for_the_interval() -> None:
    sink = Sink()
    log = writer(sink)
    log.observe(PART, outcomes(FLUSH_ROWS + 1))
    await until(lambda: sink.written == FLUSH_ROWS + 1)
    assert [len(b) for b in sink.batches] == [FLUSH_ROWS, 1]  # one COPY per FLUSH_ROWS, the rest right after
    await log.aclose()


async def test_postgres_down_drops_the_batch_counts_it_and_the_next_ones_are_written() -> None:
    sink = Sink()
    sink.failing = True
    log = writer(sink, flush_s=0.01)
    log.observe(PART, outcomes(7))  # returns at once although every write fails
    await until(lambda: log.failed > 0)
    assert (log.failed, log.written, sink.written) == (7, 0, 0)
    sink.failing = False
    log.observe(PART, outcomes(4, stem="after"))
    await log.aclose()
    assert (log.failed, log.written, sink.written) == (7, 4, 4)


def dropped(logs: list[dict[str, object]]) -> dict[str, int]:
    """Rows reported as ``prediction_log.dropped``, by reason."""
    by_reason: Counter[str] = Counter()
    for event in logs:
        if event["event"] == "prediction_log.dropped":
            by_reason[str(event["reason"])] += int(event["rows"])  # type: ignore[call-overload]
    return dict(by_reason)


async def test_a_hung_postgres_never_blocks_observe_and_close_gives_up() -> None:
    sink = Sink()
    sink.hang = asyncio.Event()  # never set: every write hangs
    log = writer(sink, capacity=10)
    with capture_logs() as logs:
        log.observe(PART, outcomes(FLUSH_ROWS))  # 10 buffered, the rest dropped; half full: written at once, hangs
        await until(lambda: sink.calls == 1)
        log.observe(PART, outcomes(25, stem="while-hung"))
        assert (len(log.buffer), log.buffer.dropped) == (10, FLUSH_ROWS - 10 + 15)
        await log.aclose()  # close_timeout_s: the hung write is cancelled, the process can exit
    assert (sink.written, sink.calls) == (0, 1)
    # every record observed is accounted for: turned away by the full buffer, or lost with the hung write
    assert dropped(logs) == {"buffer full": FLUSH_ROWS - 10 + 15, "closed before written": 10 + 10}


async def test_closing_while_postgres_is_down_reports_what_it_could_not_write() -> None:
    sink = Sink()
    sink.failing = True
    log = writer(sink)
    with capture_logs() as logs:
        log.observe(PART, outcomes(FLUSH_ROWS + 30))
        await log.aclose()  # the first COPY fails; the rest is never attempted
    assert dropped(logs) == {"write failed": FLUSH_ROWS, "closed before written": 30}
    assert (log.failed, log.written, len(log.buffer)) == (FLUSH_ROWS, 0, 0)


async def test_the_settings_make_the_writer() -> None:
    settings = PredictionLogSettings(prediction_log_sample=0.5, prediction_log_buffer=7, prediction_log_flush_s=2.0)
    log = PredictionLogWriter.of(settings, Sink())
    assert log.buffer.capacity == 7
    log.observe(PART, outcomes(100))
    sampled = sum(Sampler(0.5).keeps(f"r{i}") for i in range(100))
    assert (len(log.buffer), log.buffer.dropped) == (7, sampled - 7)
    await log.aclose()


def test_the_log_is_configured_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "INFERQ_PREDICTION_LOG_SAMPLE": "0.1",
            "INFERQ_PREDICTION_LOG_RETENTION_S": "86400",
            "INFERQ_PREDICTION_LOG_BUFFER": "500",
            "INFERQ_PREDICTION_LOG_FLUSH_S": "0.5",
        }
    )
    assert settings.prediction_log == PredictionLogSettings(
        prediction_log_sample=0.1, prediction_log_retention_s=86_400, prediction_log_buffer=500,
        prediction_log_flush_s=0.5,
    )  # fmt: skip
    assert Settings.from_env({}).prediction_log.prediction_log_sample == 1.0


@pytest.mark.parametrize(
    ("name", "value"),
    [("INFERQ_PREDICTION_LOG_SAMPLE", "1.5"), ("INFERQ_PREDICTION_LOG_SAMPLE", "-0.1"),
     ("INFERQ_PREDICTION_LOG_RETENTION_S", "0"), ("INFERQ_PREDICTION_LOG_BUFFER", "0"),
     ("INFERQ_PREDICTION_LOG_FLUSH_S", "soon")],
)  # fmt: skip
def test_a_bad_log_setting_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"invalid {name}:"):
        Settings.from_env({name: value})
