"""The catalog's reloads on announced changes: at once, coalesced, never back to an older snapshot."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

from inferq.api.catalog import ModelCatalog
from inferq.contracts.models import ModelInfo

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _model(name: str) -> ModelInfo:
    return ModelInfo(name=name, created_at=NOW, versions=(), aliases=())


class SlowRegistry:
    """``list_models`` answers ``models`` as they were when called, after ``delay_s`` (or when ``gate`` opens)."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.models: list[ModelInfo] = []
        self.calls = 0
        self.delay_s = delay_s
        self.gates: dict[int, asyncio.Event] = {}

    async def list_models(self) -> list[ModelInfo]:
        self.calls += 1
        answer = list(self.models)
        gate = self.gates.get(self.calls)
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(self.delay_s)
        return answer


class Feed:
    """A change feed the test drives: ``announce()`` calls the catalog's ``on_change``."""

    def __init__(self) -> None:
        self.on_change: Callable[[], None] | None = None
        self.stopped = False

    async def run(self, on_change: Callable[[], None], stop: asyncio.Event) -> None:
        self.on_change = on_change
        await stop.wait()
        self.stopped = True

    def announce(self) -> None:
        assert self.on_change is not None
        self.on_change()


async def _eventually(predicate: Callable[[], bool]) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_an_announcement_reloads_at_once_and_a_burst_makes_one_reload() -> None:
    registry, feed = SlowRegistry(delay_s=0.05), Feed()
    catalog = ModelCatalog(registry, refresh_s=3600.0, changes=feed)  # type: ignore[arg-type]
    await catalog.start()
    try:
        await _eventually(lambda: feed.on_change is not None)
        registry.models = [_model("wine")]
        for _ in range(100):
            feed.announce()
        await _eventually(lambda: [i.name for i in catalog.models()] == ["wine"])
        await asyncio.sleep(0.3)
        calls = registry.calls
    finally:
        await catalog.stop()
    assert calls == 2  # the first load, then one reload for the hundred announcements
    assert feed.stopped


async def test_a_slow_older_reload_never_replaces_a_newer_snapshot() -> None:
    registry = SlowRegistry()
    catalog = ModelCatalog(registry, refresh_s=3600.0)  # type: ignore[arg-type]
    await catalog.start()  # call 1
    try:
        registry.gates[2] = asyncio.Event()
        older = asyncio.create_task(catalog.refresh())  # call 2 reads [] and hangs
        await _eventually(lambda: registry.calls == 2)
        registry.models = [_model("wine")]
        await catalog.refresh()  # call 3: newer, installed first
        registry.gates[2].set()
        await older
        names = [i.name for i in catalog.models()]
    finally:
        await catalog.stop()
    assert names == ["wine"]
