"""Per-version serving overrides applied over the process's settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from inferq.settings import Settings

# Keys of ``ModelVersion.overrides`` that workers honour; others (``admission_limit``) are the API's.
QUEUE_OVERRIDES = frozenset({"max_batch", "max_batch_delay_ms", "reclaim_min_idle_ms", "max_deliveries"})
ENGINE_OVERRIDES = frozenset({"intra_op_threads"})
_AT_LEAST_ONE = frozenset({"max_batch", "intra_op_threads"})

S = TypeVar("S", bound=msgspec.Struct)


def for_version(settings: Settings, overrides: Mapping[str, int | float]) -> Settings:
    """``settings`` with the version's overrides in ``queue`` and ``engine``, typed like the field."""
    queue = {k: v for k, v in overrides.items() if k in QUEUE_OVERRIDES}
    engine = {k: v for k, v in overrides.items() if k in ENGINE_OVERRIDES}
    if not queue and not engine:
        return settings
    queue_settings, engine_settings = _merged(settings.queue, queue), _merged(settings.engine, engine)
    return msgspec.structs.replace(settings, queue=queue_settings, engine=engine_settings)


def _merged(current: S, changes: Mapping[str, int | float]) -> S:
    typed: dict[str, Any] = {}
    for name, value in changes.items():
        value = max(1 if name in _AT_LEAST_ONE else 0, value)
        typed[name] = int(value) if isinstance(getattr(current, name), int) else float(value)
    return msgspec.structs.replace(current, **typed) if typed else current
