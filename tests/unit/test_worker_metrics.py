"""The workers' metrics observer (``workers/metrics.py``) fed settled batches, read back from its registry;
the batched histogram write against prometheus-client's own; the supervisor's sum over its children's
files (real processes in multiprocess mode, no sockets)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inferq.contracts.messages import InferResult, JobChunkRef, State, Timings
from inferq.contracts.names import Names
from inferq.observability import multiprocess
from inferq.settings import Settings
from inferq.streams.consumer import Entry
from inferq.streams.partition import Partition
from inferq.workers.metrics import QUEUE_BUCKETS, WorkerMetrics, observe_many, reason_class
from inferq.workers.observers import Observers, observers_for
from inferq.workers.publisher import Outcome
from inferq.workers.supervisor_metrics import SupervisorMetrics

PART = Partition.of(Names("t"), model="wine", version=2)
IDS = itertools.count()
MAX_DELIVERIES = "delivered 4 times (max 3): worker crashed or timed out"


def entry(lane: str = "interactive") -> Entry:
    return Entry(lane=lane, id=f"{next(IDS)}-0", message=b"")  # type: ignore[arg-type]


def result(status: State, *, queue_ms: float, inference_ms: float = 0.0, batch_rows: int = 0) -> InferResult:
    timings = Timings(queue_ms=queue_ms, inference_ms=inference_ms, batch_rows=batch_rows)
    return InferResult(id=f"r{next(IDS)}", tenant="t", model="wine", version=2, status=status, timings=timings)


def ok(queue_ms: float, *, run_ms: float, run_rows: int, rows: int = 1) -> Outcome:
    return Outcome(entry(), result("succeeded", queue_ms=queue_ms, inference_ms=run_ms, batch_rows=run_rows), rows=rows)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def mixed_batch() -> list[Outcome]:
    """One settle's worth of every kind of outcome (what the consumer, reclaimer and job sink hand over)."""
    chunk = JobChunkRef(job_id="job_1", seq=0)
    return [
        ok(2.0, run_ms=3.0, run_rows=5, rows=2),  # one run of 5 rows: three requests of 2 + 2 + 1 rows
        ok(4.0, run_ms=3.0, run_rows=5, rows=2),
        ok(6.0, run_ms=3.0, run_rows=5, rows=1),
        ok(8.0, run_ms=1.0, run_rows=1),  # another run (another shape): 1 row
        Outcome(entry(), result("expired", queue_ms=70_000.0)),  # never run
        Outcome(entry(), result("failed", queue_ms=10.0)),  # invalid input, never run
        Outcome(entry(), result("dead_lettered", queue_ms=40_000.0), dead_reason=MAX_DELIVERIES),
        Outcome(entry(), None, dead_reason="undecodable message: MessagePack data is malformed"),
        Outcome(entry(), result("succeeded", queue_ms=1.0), retry=True),  # left pending: not settled yet
        Outcome(entry("bulk"), None, job=chunk, rows=256),  # its result went to Postgres first
        Outcome(entry("bulk"), None, job=JobChunkRef(job_id="job_2", seq=3), rows=7),  # skipped: its job ended
    ]


def test_a_settled_batch_is_counted_exactly() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    metrics.observe(PART, mixed_batch())
    r, version = metrics.registry, {"model": "wine", "version": "2"}

    outcomes = {s: value(r, "inferq_worker_results_total", **version, lane="interactive", outcome=s) for s in
                ("succeeded", "expired", "failed", "dead_lettered", "canceled")}  # fmt: skip
    assert outcomes == {"succeeded": 4, "expired": 1, "failed": 1, "dead_lettered": 2, "canceled": 0}
    assert value(r, "inferq_worker_results_total", **version, lane="bulk", outcome="succeeded") == 0
    # every request with timings waited; the undecodable entry has none, the retried one is not settled
    wait = {"lane": "interactive", **version}
    assert value(r, "inferq_worker_queue_wait_seconds_count", **wait) == 7
    assert value(r, "inferq_worker_queue_wait_seconds_sum", **wait) == pytest.approx(110.03)
    assert value(r, "inferq_worker_queue_wait_seconds_bucket", **wait, le="0.005") == 2  # 2 and 4 ms
    assert value(r, "inferq_worker_queue_wait_seconds_bucket", **wait, le="0.01") == 5  # and 6, 8, 10 ms
    assert value(r, "inferq_worker_queue_wait_seconds_bucket", **wait, le="60.0") == 6  # all but the 70 s one
    # two ORT runs, each counted once however many requests it served
    assert value(r, "inferq_worker_batch_rows_count", **version) == 2
    assert value(r, "inferq_worker_batch_rows_sum", **version) == 6
    assert value(r, "inferq_worker_batch_rows_bucket", **version, le="1.0") == 1
    assert value(r, "inferq_worker_inference_seconds_count", **version) == 2
    assert value(r, "inferq_worker_inference_seconds_sum", **version) == pytest.approx(0.004)
    assert value(r, "inferq_worker_job_chunk_rows_count", **version) == 2
    assert value(r, "inferq_worker_job_chunk_rows_sum", **version) == 263
    dead = {s: value(r, "inferq_worker_dead_letters_total", partition="wine@2", reason=s) for s in
            ("max_deliveries", "undecodable", "other")}  # fmt: skip
    assert dead == {"max_deliveries": 1, "undecodable": 1, "other": 0}


def test_counts_add_up_over_batches_and_partitions_stay_apart() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    other = Partition.of(Names("t"), model="wine", version=3)
    for _ in range(3):
        metrics.observe(PART, [ok(1.0, run_ms=1.0, run_rows=1)])
    metrics.observe(other, [ok(1.0, run_ms=1.0, run_rows=1)])
    metrics.observe(PART, [])  # an empty settle (only acks) counts nothing
    r = metrics.registry
    succeeded = {"lane": "interactive", "outcome": "succeeded"}
    assert value(r, "inferq_worker_results_total", model="wine", version="2", **succeeded) == 3
    assert value(r, "inferq_worker_results_total", model="wine", version="3", **succeeded) == 1
    assert value(r, "inferq_worker_batch_rows_count", model="wine", version="2") == 3


def test_a_job_chunk_with_its_result_counts_like_a_request() -> None:
    """If the observer ever sees a chunk's result (before the job sink stores it), it is counted on its lane."""
    metrics = WorkerMetrics(CollectorRegistry())
    done = result("succeeded", queue_ms=500.0, inference_ms=20.0, batch_rows=256)
    metrics.observe(PART, [Outcome(entry("bulk"), done, job=JobChunkRef(job_id="j", seq=0), rows=256)])
    r = metrics.registry
    assert value(r, "inferq_worker_results_total", model="wine", version="2", lane="bulk", outcome="succeeded") == 1
    assert value(r, "inferq_worker_queue_wait_seconds_sum", model="wine", version="2", lane="bulk") == 0.5
    assert value(r, "inferq_worker_batch_rows_bucket", model="wine", version="2", le="256.0") == 1
    assert value(r, "inferq_worker_job_chunk_rows_sum", model="wine", version="2") == 256


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("undecodable message: Expected `object`, got `int`", "undecodable"),
        (MAX_DELIVERIES, "max_deliveries"),
        ("", "other"),
        ("operator moved it", "other"),
        ("Undecodable", "other"),  # the classes are the exact prefixes the workers write
    ],
)
def test_dead_letter_reasons_become_a_few_label_values(reason: str, expected: str) -> None:
    assert reason_class(reason) == expected


@pytest.mark.parametrize(
    "amounts",
    [[], [0.0], [0.001], [0.0010001, 0.0025, 0.0025, 599.0, 600.0, 601.0, 1e9], [0.003] * 50, [-1.0]],
    ids=["none", "zero", "on-a-bound", "bounds-and-beyond", "many-in-one-bucket", "negative"],
)
def test_observe_many_writes_what_observe_would(amounts: list[float]) -> None:
    def histogram() -> tuple[CollectorRegistry, Histogram]:
        registry = CollectorRegistry()
        return registry, Histogram("h", "h", ["x"], buckets=QUEUE_BUCKETS, registry=registry)

    one_by_one, batched = histogram(), histogram()
    child = one_by_one[1].labels("a")
    for amount in amounts:
        child.observe(amount)
    observe_many(batched[1].labels("a"), amounts)
    assert _samples(batched[0]) == _samples(one_by_one[0])


def test_observe_many_falls_back_when_the_internals_are_not_there() -> None:
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, amount: float) -> None:
            self.seen.append(amount)

    plain = Plain()
    observe_many(plain, [1.0, 2.0])  # type: ignore[arg-type]
    assert plain.seen == [1.0, 2.0]


def test_the_observer_is_installed_unless_metrics_are_off() -> None:
    with_metrics = observers_for(Settings(), sessions=None)  # type: ignore[arg-type]
    without = observers_for(Settings(worker_metrics_port=0), sessions=None)  # type: ignore[arg-type]
    assert [getattr(o, "__qualname__", "") for o in with_metrics._observers].count("WorkerMetrics.observe") == 1
    assert [getattr(o, "__qualname__", "") for o in without._observers].count("WorkerMetrics.observe") == 0


def test_a_failing_observer_never_stops_the_metrics_one() -> None:
    metrics = WorkerMetrics(CollectorRegistry())

    def broken(part: Partition, outcomes: object) -> None:
        raise RuntimeError("bug")

    Observers([broken, metrics.observe])(PART, [ok(1.0, run_ms=1.0, run_rows=1)])
    assert value(metrics.registry, "inferq_worker_batch_rows_count", model="wine", version="2") == 1


# --- multiprocess: what the supervisor renders ---------------------------------------------------------------

CHILD = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from inferq.contracts.messages import InferResult, Timings
from inferq.contracts.names import Names
from inferq.streams.consumer import Entry
from inferq.streams.partition import Partition
from inferq.workers.metrics import WorkerMetrics
from inferq.workers.publisher import Outcome

part = Partition.of(Names("t"), model="wine", version=2)
metrics = WorkerMetrics()
for n in range(int(sys.argv[2])):
    timings = Timings(queue_ms=1.0, inference_ms=1.0 + n, batch_rows=1)
    done = InferResult(id=str(n), tenant="t", model="wine", version=2, status="succeeded", timings=timings)
    metrics.observe(part, [Outcome(Entry(lane="interactive", id=f"{n}-0", message=b""), done)])
print(os.getpid())
"""


class Gone:
    """A supervisor whose children have all exited, after ``restarts`` restarts."""

    def __init__(self, *, pids: list[int], restarts: int) -> None:
        self.pids = pids
        self.restarts = restarts


def test_the_supervisor_sums_its_children_dead_or_alive(tmp_path: Path) -> None:
    pids = [
        int(subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(n)], capture_output=True, text=True,
                           check=True).stdout)
        for n in (2, 3)
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.glob("*.db")) == sorted(
        f"{kind}_{pid}.db" for pid in pids for kind in ("counter", "histogram")
    )
    text = SupervisorMetrics(Gone(pids=[], restarts=4), tmp_path).render().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text)
               for s in f.samples}  # fmt: skip
    succeeded = (("lane", "interactive"), ("model", "wine"), ("outcome", "succeeded"), ("version", "2"))
    assert samples[("inferq_worker_results_total", succeeded)] == 5  # 2 + 3: both children, both exited
    assert samples[("inferq_worker_batch_rows_count", (("model", "wine"), ("version", "2")))] == 5
    assert samples[("inferq_worker_processes", ())] == 0
    assert samples[("inferq_worker_restarts_total", ())] == 4
    assert text.count("# TYPE inferq_worker_results_total counter") == 1


def test_a_dead_child_loses_its_live_gauges_and_keeps_its_counts(tmp_path: Path) -> None:
    for name in ("gauge_livesum_101.db", "gauge_liveall_101.db", "counter_101.db", "gauge_livesum_202.db"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a metrics file")
    assert multiprocess.forget_dead(tmp_path, alive=[202]) == [101]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_101.db", "gauge_livesum_202.db", "notes.txt"]
    assert multiprocess.forget_dead(tmp_path, alive=[101, 202]) == []


def test_a_configured_directory_is_emptied_and_kept_a_made_one_removed(tmp_path: Path) -> None:
    configured = tmp_path / "metrics"
    configured.mkdir()
    (configured / "counter_7.db").write_bytes(b"old")
    (configured / "keep.txt").write_text("not ours")
    with multiprocess.metrics_directory(str(configured)) as directory:
        assert directory == configured
        assert [p.name for p in directory.iterdir()] == ["keep.txt"]
    assert configured.exists()
    with multiprocess.metrics_directory(None) as made:
        assert made.name.startswith(f"inferq-metrics-worker-{os.getpid()}-")
        assert multiprocess.child_environment(made) == {"PROMETHEUS_MULTIPROC_DIR": str(made)}
    assert not made.exists()
    assert multiprocess.child_environment(None) == {}


def _samples(registry: CollectorRegistry) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    text = generate_latest(registry).decode()
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if not s.name.endswith("_created")
    )


def test_a_killed_supervisor_s_directory_is_removed_by_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)  # fmt: skip
    orphan = tmp_path / f"inferq-metrics-worker-{int(dead.stdout)}-abc"
    alive = tmp_path / f"inferq-metrics-worker-{os.getppid()}-def"  # another supervisor, still running
    other = tmp_path / "inferq-metrics-xyz"  # `inferq serve`'s: not ours to judge
    for directory in (orphan, alive, other):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"")
    with multiprocess.metrics_directory(None) as made:
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name, made.name])
