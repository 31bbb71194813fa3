"""Prediction log retention: rows older than ``prediction_log_retention_s`` deleted in bounded batches.

It runs after each reconciler pass, in the same arq job (one pass per time slot, however many task
workers tick); a pass deletes at most ``batch × max_batches`` rows and the next pass goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import structlog

from inferq.errors import ServiceUnavailable
from inferq.store.prediction_log import PredictionLogStore
from inferq.workers.reconciler import ReconcileReport, reconcile

log = structlog.get_logger(__name__)

BATCH = 10_000  # rows per DELETE: a short transaction, a bounded WAL burst
MAX_BATCHES = 50  # per pass: 500k rows per reconcile interval (16k/s at the default 30 s)


class LogRetention:
    """Deletes the prediction log's rows created more than ``retention_s`` ago."""

    def __init__(
        self, store: PredictionLogStore, *, retention_s: float, batch: int = BATCH, max_batches: int = MAX_BATCHES
    ) -> None:
        self._store = store
        self._retention_s = retention_s
        self._batch = batch
        self._max_batches = max_batches

    async def run(self, *, now: dt.datetime | None = None) -> int:
        """One pass at ``now`` (default: the current time); how many rows it deleted."""
        cutoff = (dt.datetime.now(dt.UTC) if now is None else now) - dt.timedelta(seconds=self._retention_s)
        deleted = 0
        for _ in range(self._max_batches):
            count = await self._store.delete_before(cutoff, limit=self._batch)
            deleted += count
            if count < self._batch:
                break
        return deleted


async def reconcile_and_prune(ctx: dict[str, Any], slot: int) -> ReconcileReport:
    """The arq job ``reconcile``: the reconciler's pass, then ``ctx["log_retention"]``'s."""
    report = await reconcile(ctx, slot)
    retention: LogRetention | None = ctx.get("log_retention")
    if retention is None:
        return report
    try:
        deleted = await retention.run()
    except ServiceUnavailable as exc:  # the next pass tries again
        log.warning("prediction_log.retention_failed", error=str(exc))
    except Exception:  # a bug: logged with its traceback; the reconciler's pass is done either way
        log.exception("prediction_log.retention_failed")
    else:
        log.log(logging.INFO if deleted else logging.DEBUG, "prediction_log.pruned", count=deleted)
    return report
