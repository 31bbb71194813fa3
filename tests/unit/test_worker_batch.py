"""``workers.batch.execute`` (pure), version selection and per-version overrides, without Redis."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence

import numpy as np
import pytest

from inferq.contracts.messages import InferRequest
from inferq.contracts.models import Alias, ModelInfo, ModelSignature, ModelVersion, TensorSpec
from inferq.engine import Runner
from inferq.errors import ModelLoadFailed
from inferq.inputs import decode_tensors, encode_tensors
from inferq.settings import EngineSettings, Settings
from inferq.workers.batch import Work, execute
from inferq.workers.config import for_version
from inferq.workers.selection import Selection

NOW = 1_000_000.0
IDS = itertools.count()


def work(feeds: dict[str, np.ndarray], *, ttl_ms: int = 60_000, enqueued_ms: int = 999_000, **fields: object) -> Work:
    rows = int(next(iter(feeds.values())).shape[0])
    fields.setdefault("output", "tensors")
    request = InferRequest(
        id=f"r{next(IDS)}", tenant="t", model="m", version=1, inputs=encode_tensors(feeds),
        rows=rows, ttl_ms=ttl_ms, **fields,  # type: ignore[arg-type]
    )  # fmt: skip
    return Work(request=request, enqueued_ms=enqueued_ms, dequeued_ms=NOW)


class Runs:
    """An ``on_run`` hook that remembers every ORT run."""

    def __init__(self) -> None:
        self.runs: list[list[str]] = []

    def __call__(self, works: Sequence[Work]) -> None:
        self.runs.append([w.request.id for w in works])


@pytest.fixture
def two_inputs(two_input_model: bytes, engine_settings: EngineSettings) -> Runner:
    return Runner.load(two_input_model, settings=engine_settings)


def feeds(rows: int, start: float = 0.0) -> dict[str, np.ndarray]:
    a = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2) + start
    return {"a": a, "b": a * 10, "ids": np.arange(rows, dtype=np.int64) + int(start)}


def test_one_run_for_the_batch_and_rows_split_back(two_inputs: Runner) -> None:
    runs = Runs()
    works = [work(feeds(1)), work(feeds(2, 5)), work(feeds(3, 9))]
    results = execute(works, two_inputs, now_ms=lambda: NOW, on_run=runs)
    assert [r.status for r in results] == ["succeeded"] * 3
    assert len(runs.runs) == 1
    for w, result in zip(works, results, strict=True):
        sent = decode_tensors(w.request.inputs)
        got = decode_tensors(result.tensors)
        assert np.array_equal(got["s"], sent["a"] + sent["b"])
        assert np.array_equal(got["n"], sent["ids"] * 2)
        assert result.timings is not None
        assert result.timings.batch_rows == 6
        assert result.timings.queue_ms == NOW - 999_000


def test_expired_work_is_never_run(two_inputs: Runner) -> None:
    runs = Runs()
    late, alive = work(feeds(1), ttl_ms=500), work(feeds(1, 3), ttl_ms=5_000)
    results = execute([late, alive], two_inputs, now_ms=lambda: NOW, on_run=runs)
    assert [r.status for r in results] == ["expired", "succeeded"]
    assert runs.runs == [[alive.request.id]]


def test_output_names_and_their_errors(two_inputs: Runner) -> None:
    only_n = work(feeds(2), output="tensors", output_names=("n",))
    unknown = work(feeds(1, 1), output="tensors", output_names=("nope",))
    results = execute([only_n, unknown], two_inputs, now_ms=lambda: NOW)
    assert [t.name for t in results[0].tensors] == ["n"]
    assert results[1].status == "failed"
    assert results[1].error is not None
    assert results[1].error.code == "invalid_input"


def test_a_closed_runner_answers_nothing(two_inputs: Runner) -> None:
    two_inputs.close()
    with pytest.raises(ModelLoadFailed):
        execute([work(feeds(1))], two_inputs, now_ms=lambda: NOW)


def version(name: str, number: int, status: str = "active") -> ModelVersion:
    signature = ModelSignature(inputs=(TensorSpec(name="x", dtype="float32", shape=(None, 1)),), outputs=())
    return ModelVersion(
        model=name, version=number, status=status, signature=signature, sha256="0" * 64, size_bytes=1,  # type: ignore[arg-type]
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )  # fmt: skip


def test_selection_picks_versions_by_number_alias_or_all() -> None:
    wine = ModelInfo(
        name="wine", created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        versions=(version("wine", 1, "archived"), version("wine", 2), version("wine", 3, "deprecated")),
        aliases=(Alias(model="wine", name="default", weights={2: 90, 3: 10}),
                 Alias(model="wine", name="old", weights={1: 100})),
    )  # fmt: skip
    iris = ModelInfo(name="iris", created_at=wine.created_at, versions=(version("iris", 1),), aliases=())
    pick = lambda *models: Selection.parse(all_models=False, models=list(models)).pick([wine, iris])  # noqa: E731
    assert sorted(Selection(all=True).pick([wine, iris])[0]) == ["iris@1", "wine@2", "wine@3"]
    assert sorted(pick("wine")[0]) == ["wine@2", "wine@3"]  # the default alias's routed versions
    assert sorted(pick("wine@1")[0]) == ["wine@1"]  # a named version is served whatever its status
    assert pick("wine@old") == ({}, ["wine@old"])  # an alias routes only to served versions
    assert pick("iris@7", "nosuch") == ({}, ["iris@7", "nosuch"])
    with pytest.raises(Exception, match="choose --all or --models"):
        Selection.parse(all_models=True, models=["wine"])


def test_overrides_apply_typed_and_bounded() -> None:
    settings = Settings()
    tuned = for_version(settings, {"max_batch": 32.0, "max_batch_delay_ms": 2, "intra_op_threads": 0, "other": 5})
    assert tuned.queue.max_batch == 32
    assert isinstance(tuned.queue.max_batch, int)
    assert tuned.queue.max_batch_delay_ms == 2.0
    assert tuned.engine.intra_op_threads == 1  # at least one thread
    assert tuned.queue.admission_limit == settings.queue.admission_limit
    assert for_version(settings, {}) is settings
