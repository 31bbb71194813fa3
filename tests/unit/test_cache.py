"""``ModelCache``: lazy, sha-checked, loads once under concurrency, LRU-bounded."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from inferq.engine import ModelCache, Runner
from inferq.errors import InvalidModel, ModelLoadFailed, ModelNotFound
from inferq.settings import EngineSettings


@pytest.fixture(scope="module")
def models(onnx_model: Any) -> list[bytes]:
    """Four distinct identity models (different metadata, so different sha256)."""
    return [
        onnx_model(
            [("x", TensorProto.FLOAT, [None, 2])],
            [("y", TensorProto.FLOAT, [None, 2])],
            [helper.make_node("Identity", ["x"], ["y"])],
            props={"inferq.feature_names": json.dumps([f"a{i}", f"b{i}"])},
        )
        for i in range(4)
    ]


def sha(model: bytes) -> str:
    return hashlib.sha256(model).hexdigest()


class Counting:
    """A ``load_bytes`` that counts its calls and can be slowed down or held."""

    def __init__(self, model: bytes, *, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.model, self.delay, self.gate = model, delay, gate
        self.calls = 0
        self.started = threading.Event()
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            self.calls += 1
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        time.sleep(self.delay)
        return self.model


def test_loads_lazily_and_hits_afterwards(models: list[bytes]) -> None:
    cache = ModelCache(settings=EngineSettings(cache_size=2))
    assert len(cache) == 0
    load = Counting(models[0])
    first = cache.get(sha(models[0]), load)
    assert isinstance(first, Runner)
    assert cache.get(sha(models[0]), load) is first
    assert cache.get(sha(models[0]).upper(), load) is first
    assert load.calls == 1
    assert len(cache) == 1


def test_twenty_concurrent_first_calls_load_once(models: list[bytes]) -> None:
    cache = ModelCache(settings=EngineSettings(cache_size=2))
    load = Counting(models[0], delay=0.05)
    barrier = threading.Barrier(20)
    results: list[Runner] = []
    errors: list[BaseException] = []

    def call() -> None:
        barrier.wait()
        try:
            results.append(cache.get(sha(models[0]), load))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert load.calls == 1
    assert len(results) == 20
    assert len({id(runner) for runner in results}) == 1
    assert cache._loading == {}  # per-key locks are cleaned up


def test_a_slow_load_does_not_block_other_keys(models: list[bytes]) -> None:
    cache = ModelCache(settings=EngineSettings(cache_size=4))
    gate = threading.Event()
    slow = Counting(models[0], gate=gate)
    worker = threading.Thread(target=cache.get, args=(sha(models[0]), slow))
    worker.start()
    assert slow.started.wait(5)
    started = time.perf_counter()
    cache.get(sha(models[1]), Counting(models[1]))  # must not wait for the held load
    assert time.perf_counter() - started < 2
    assert sha(models[0]) not in cache
    gate.set()
    worker.join(5)
    assert sha(models[0]) in cache
    assert len(cache) == 2


def test_least_recently_used_is_evicted(models: list[bytes]) -> None:
    cache = ModelCache(settings=EngineSettings(cache_size=2))
    a, b, c = (sha(m) for m in models[:3])
    runner_a = cache.get(a, lambda: models[0])
    cache.get(b, lambda: models[1])
    assert cache.get(a, lambda: models[0]) is runner_a  # a is now the most recent
    cache.get(c, lambda: models[2])
    assert len(cache) == 2
    assert (a in cache, b in cache, c in cache) == (True, False, True)
    cache.get(sha(models[3]), lambda: models[3])
    assert (a in cache, c in cache) == (False, True)  # a was least recent after c was added


def test_a_runner_held_across_its_eviction_still_runs(models: list[bytes]) -> None:
    """A worker may get a runner, stack a batch, and run it after other loads evicted it."""
    cache = ModelCache(settings=EngineSettings(cache_size=1))
    held = cache.get(sha(models[0]), lambda: models[0])
    cache.get(sha(models[1]), lambda: models[1])
    assert sha(models[0]) not in cache
    assert held.run({"x": np.ones((2, 2), np.float32)})["y"].tolist() == [[1, 1], [1, 1]]


def test_sha_mismatch_raises_and_caches_nothing(models: list[bytes]) -> None:
    cache = ModelCache(settings=EngineSettings(cache_size=2))
    with pytest.raises(ModelLoadFailed, match="model bytes do not match their sha256") as caught:
        cache.get(sha(models[0]), lambda: models[1])
    assert caught.value.details["actual"] == sha(models[1])
    assert len(cache) == 0
    load = Counting(models[0])
    cache.get(sha(models[0]), load)
    assert load.calls == 1


def test_failed_loads_are_not_cached(models: list[bytes]) -> None:
    cache = ModelCache(settings=EngineSettings(cache_size=2))
    attempts: list[int] = []

    def flaky() -> bytes:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk on fire")
        return models[0]

    with pytest.raises(ModelLoadFailed, match=r"could not read model \w+: disk on fire"):
        cache.get(sha(models[0]), flaky)
    assert len(cache) == 0
    cache.get(sha(models[0]), flaky)
    assert len(attempts) == 2
    assert len(cache) == 1


def test_domain_errors_from_load_bytes_pass_through(models: list[bytes]) -> None:
    cache = ModelCache(settings=EngineSettings(cache_size=2))

    def missing() -> bytes:
        raise ModelNotFound("no such model")

    with pytest.raises(ModelNotFound, match="no such model"):
        cache.get(sha(models[0]), missing)
    assert len(cache) == 0


def test_evict_and_clear_drop_runners_without_closing_them(models: list[bytes]) -> None:
    cache = ModelCache(settings=EngineSettings(cache_size=4))
    first = cache.get(sha(models[0]), lambda: models[0])
    second = cache.get(sha(models[1]), lambda: models[1])
    assert cache.evict(sha(models[0])) is True
    assert cache.evict(sha(models[0])) is False
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0
    for runner in (first, second):
        assert runner.run({"x": np.zeros((1, 2), np.float32)})["y"].tolist() == [[0, 0]]
    load = Counting(models[0])
    assert cache.get(sha(models[0]), load) is not first  # loaded afresh
    assert load.calls == 1


@pytest.mark.parametrize(
    ("fail", "error", "message"),
    [
        ("raise", ModelLoadFailed, r"^could not read model \w+: disk on fire$"),
        ("junk", InvalidModel, "^not a valid ONNX model: "),
    ],
)
def test_a_failed_load_is_reported_to_every_waiter_then_retried(
    fail: str, error: type[Exception], message: str, models: list[bytes]
) -> None:
    junk = b"not onnx at all"
    key = sha(junk) if fail == "junk" else sha(models[0])

    class Failing(Counting):
        def __call__(self) -> bytes:
            super().__call__()
            if fail == "raise":
                raise OSError("disk on fire")
            return junk

    cache = ModelCache(settings=EngineSettings(cache_size=2))
    load = Failing(models[0], delay=0.1)
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def call() -> None:
        barrier.wait()
        try:
            cache.get(key, load)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert load.calls == 1  # one attempt, shared by all 20 callers
    assert len(errors) == 20
    assert all(type(exc) is error for exc in errors)
    assert all(re.search(message, str(exc)) for exc in errors)
    assert len({id(exc) for exc in errors}) == 20  # each thread raises its own copy
    assert cache._loading == {}
    assert len(cache) == 0
    with pytest.raises(error):
        cache.get(key, load)
    assert load.calls == 2  # a call after the failure tries again
