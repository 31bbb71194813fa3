"""``ModelCache``: an LRU of loaded runners keyed by sha256, loading each model lazily, once."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from inferq.engine.runner import Runner
from inferq.errors import InferqError, ModelLoadFailed
from inferq.settings import EngineSettings


class _Loading:
    """A per-key lock and how many threads hold or wait for it (removed when none do)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class ModelCache:
    """At most ``settings.cache_size`` runners, least recently used evicted (and closed) first.

    Thread-safe. Concurrent first calls for one key load it once; other keys are not blocked
    meanwhile. Failed loads are not cached: the next call tries again.
    """

    def __init__(self, *, settings: EngineSettings) -> None:
        self._settings = settings
        self._capacity = max(1, settings.cache_size)
        self._runners: OrderedDict[str, Runner] = OrderedDict()
        self._loading: dict[str, _Loading] = {}
        self._lock = threading.Lock()

    def get(self, sha256: str, load_bytes: Callable[[], bytes]) -> Runner:
        """The runner for ``sha256``, calling ``load_bytes`` and loading the model on a miss.

        The bytes must hash to ``sha256``, else ``ModelLoadFailed`` and nothing is cached.
        """
        key = sha256.lower()
        with self._lock:
            runner = self._hit(key)
            if runner is not None:
                return runner
            loading = self._loading.setdefault(key, _Loading())
            loading.users += 1
        try:
            with loading.lock:
                with self._lock:
                    runner = self._hit(key)
                if runner is not None:
                    return runner  # another thread loaded it while this one waited
                runner = self._load(key, load_bytes)
                with self._lock:
                    self._runners[key] = runner
                    evicted = self._trim()
        finally:
            with self._lock:
                loading.users -= 1
                if loading.users == 0:
                    del self._loading[key]
        for old in evicted:
            old.close()
        return runner

    def evict(self, sha256: str) -> bool:
        """Drop and close one runner; whether it was cached."""
        with self._lock:
            runner = self._runners.pop(sha256.lower(), None)
        if runner is None:
            return False
        runner.close()
        return True

    def clear(self) -> None:
        """Drop and close every runner (at shutdown)."""
        with self._lock:
            runners = list(self._runners.values())
            self._runners.clear()
        for runner in runners:
            runner.close()

    def __contains__(self, sha256: object) -> bool:
        return isinstance(sha256, str) and sha256.lower() in self._runners

    def __len__(self) -> int:
        return len(self._runners)

    def _hit(self, key: str) -> Runner | None:
        runner = self._runners.get(key)
        if runner is not None:
            self._runners.move_to_end(key)
        return runner

    def _trim(self) -> list[Runner]:
        evicted: list[Runner] = []
        while len(self._runners) > self._capacity:
            _, runner = self._runners.popitem(last=False)
            evicted.append(runner)
        return evicted

    def _load(self, key: str, load_bytes: Callable[[], bytes]) -> Runner:
        try:
            model = load_bytes()
        except InferqError:
            raise
        except Exception as exc:
            raise ModelLoadFailed(f"could not read model {key[:12]}: {exc}", sha256=key) from exc
        actual = hashlib.sha256(model).hexdigest()
        if actual != key:
            raise ModelLoadFailed(
                f"model bytes do not match their sha256: expected {key[:12]}…, got {actual[:12]}…",
                sha256=key,
                actual=actual,
            )
        return Runner.load(model, settings=self._settings)
