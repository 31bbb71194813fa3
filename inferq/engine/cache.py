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
    """One in-flight load: threads asking for the same key meanwhile wait for its outcome."""

    __slots__ = ("done", "error", "runner")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.runner: Runner | None = None
        self.error: BaseException | None = None


class ModelCache:
    """At most ``settings.cache_size`` runners, least recently used dropped first.

    Thread-safe. Concurrent first calls for one key load it once and share the outcome, a failure
    included; other keys are not blocked meanwhile. Failed loads are not cached: a later call tries
    again. The cache never closes a runner: another thread may still be running it, so a dropped
    runner's session is freed when its last user lets go of it.
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
            loading = self._loading.get(key)
            first = loading is None
            if loading is None:
                loading = self._loading[key] = _Loading()
        if first:
            return self._load_for_all(key, load_bytes, loading)
        return _outcome(loading, key=key)

    def evict(self, sha256: str) -> bool:
        """Drop one runner (threads holding it may finish); whether it was cached."""
        with self._lock:
            return self._runners.pop(sha256.lower(), None) is not None

    def clear(self) -> None:
        """Drop every runner."""
        with self._lock:
            self._runners.clear()

    def __contains__(self, sha256: object) -> bool:
        return isinstance(sha256, str) and sha256.lower() in self._runners

    def __len__(self) -> int:
        return len(self._runners)

    def _hit(self, key: str) -> Runner | None:
        runner = self._runners.get(key)
        if runner is not None:
            self._runners.move_to_end(key)
        return runner

    def _load_for_all(self, key: str, load_bytes: Callable[[], bytes], loading: _Loading) -> Runner:
        """Load ``key`` in this thread and publish the runner or the error to ``loading``'s waiters."""
        try:
            runner = loading.runner = self._load(key, load_bytes)
        except BaseException as exc:
            loading.error = exc
            raise
        finally:
            with self._lock:
                del self._loading[key]  # the next call after a failure starts a new attempt
                if loading.runner is not None:
                    self._runners[key] = loading.runner
                    while len(self._runners) > self._capacity:
                        self._runners.popitem(last=False)
            loading.done.set()
        return runner

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


def _outcome(loading: _Loading, *, key: str) -> Runner:
    """Wait for another thread's load of ``key``: its runner, or a fresh copy of its error."""
    loading.done.wait()
    if loading.runner is not None:
        return loading.runner
    error = loading.error
    # NOTE: a copy per waiter: one exception object raised in many threads shares one traceback.
    if isinstance(error, InferqError):
        raise type(error)(error.message, **error.details) from error
    raise ModelLoadFailed(f"loading model {key[:12]} failed: {error!r}", sha256=key) from error
