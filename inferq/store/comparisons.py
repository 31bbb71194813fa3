"""Versions of one model compared over the prediction log: per-version figures, and agreement per pair.

Three scans of one snapshot, each on the ``(model, created_at)`` index: the per-version counts and latency
percentiles (``prediction_stats``' pattern, grouped by version), statuses and predicted classes, and the
agreement of every pair of versions on the same inputs:

- shadow: a mirror's row (``shadow_of``) joined with its primary's (``request_id``, indexed);
- canary: rows outside shadowing with the same ``input_digest``, one answer per version and input (the most
  frequent class of that version's results for it), so an input sent a thousand times counts once.

A prediction is ``predicted`` (one row) or ``predicted_counts`` (``{class: rows}``): two results agree when
those are equal. For a request of several rows, equal counts per class is the test (the log keeps no row
order); a regressor's results have no class and are paired but never compared.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from inferq.contracts.http import Agreement, ModelComparison, PairComparison, VersionComparison
from inferq.contracts.stats import Latency, Percentiles
from inferq.store.prediction_stats import QUERY_TIMEOUT_MS
from inferq.store.sessions import transaction


def _window(alias: str) -> str:
    """Rows of the model's ``versions`` settled from ``since`` to ``until``."""
    return (
        f"{alias}.model = :model AND {alias}.version = ANY(:versions) "
        f"AND {alias}.created_at >= :since AND {alias}.created_at < :until"
    )


def _answer(alias: str) -> str:
    """A row's prediction as one comparable text (jsonb's text form is canonical: its keys are sorted)."""
    return f"coalesce({alias}.predicted, {alias}.predicted_counts::text)"


_PERCENTILES = "percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY {}) FILTER (WHERE succeeded)"
_VERSIONS = f"""
SELECT version, count(*) AS requests, count(*) FILTER (WHERE shadow) AS shadow_requests,
       coalesce(sum(row_count), 0) AS rows, count(*) FILTER (WHERE NOT succeeded) AS errors,
       {_PERCENTILES.format("queue_ms")} AS queue_ms,
       {_PERCENTILES.format("inference_ms")} AS inference_ms,
       {_PERCENTILES.format("queue_ms::float8 + inference_ms")} AS total_ms
FROM (
    SELECT p.version, p.row_count, p.queue_ms, p.inference_ms, p.status = 'succeeded' AS succeeded,
           p.shadow_of IS NOT NULL AS shadow
    FROM prediction_log p WHERE {_window("p")}
) s
GROUP BY version
"""
_COUNTS = f"""
SELECT p.version, c.kind, c.key, sum(c.n)::bigint AS n
FROM prediction_log p CROSS JOIN LATERAL (
    VALUES ('status', p.status, 1), ('class', p.predicted, 1)
    UNION ALL SELECT 'class', e.key, e.value::int FROM jsonb_each_text(p.predicted_counts) AS e
) AS c (kind, key, n)
WHERE {_window("p")} AND c.key IS NOT NULL
GROUP BY p.version, c.kind, c.key
"""
# A mirror's row in the window (``s``) with its primary's (``m``), whenever that was logged (just before, usually).
_SHADOW = f"""
SELECT least(s_version, m_version) AS a, greatest(s_version, m_version) AS b, count(*) AS pairs,
       count(*) FILTER (WHERE answered) AS compared,
       count(*) FILTER (WHERE answered AND s_answer = m_answer) AS agreed
FROM (
    SELECT s.version AS s_version, m.version AS m_version, {_answer("s")} AS s_answer, {_answer("m")} AS m_answer,
           s.status = 'succeeded' AND m.status = 'succeeded'
           AND {_answer("s")} IS NOT NULL AND {_answer("m")} IS NOT NULL AS answered
    FROM prediction_log s JOIN prediction_log m ON m.model = s.model AND m.request_id = s.shadow_of
    WHERE {_window("s")} AND s.shadow_of IS NOT NULL AND m.version = ANY(:versions) AND m.version <> s.version
) x
GROUP BY 1, 2
"""
# Per version and input outside shadowing: its most frequent answer (ties: the first in text order).
_CANARY = f"""
WITH answers AS (
    SELECT p.version, p.input_digest,
           mode() WITHIN GROUP (ORDER BY {_answer("p")})
               FILTER (WHERE p.status = 'succeeded' AND {_answer("p")} IS NOT NULL) AS answer
    FROM prediction_log p
    WHERE {_window("p")} AND p.shadow_of IS NULL AND p.input_digest IS NOT NULL
    GROUP BY p.version, p.input_digest
)
SELECT x.version AS a, y.version AS b, count(*) AS pairs,
       count(*) FILTER (WHERE x.answer IS NOT NULL AND y.answer IS NOT NULL) AS compared,
       count(*) FILTER (WHERE x.answer = y.answer) AS agreed
FROM answers x JOIN answers y ON y.input_digest = x.input_digest AND x.version < y.version
GROUP BY 1, 2
"""


class Comparisons:
    """Reads ``prediction_log`` for ``GET /v1/models/{model}/compare``."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def compare(
        self, model: str, *, versions: Sequence[int], since: dt.datetime, until: dt.datetime
    ) -> ModelComparison:
        """``versions`` of ``model`` (every tenant's traffic) from ``since`` to ``until``, and each pair of them."""
        chosen = sorted(set(versions))
        params: dict[str, Any] = {"model": model, "versions": chosen, "since": since, "until": until}
        async with transaction(self._sessionmaker) as session:
            # one snapshot for every scan: the figures and the agreements describe the same rows
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            await session.execute(text(f"SET LOCAL statement_timeout = {QUERY_TIMEOUT_MS}"))
            figures = (await session.execute(text(_VERSIONS), params)).all()
            counts = (await session.execute(text(_COUNTS), params)).all()
            shadow = (await session.execute(text(_SHADOW), params)).all()
            canary = (await session.execute(text(_CANARY), params)).all()
        shadows, canaries = _agreements(shadow), _agreements(canary)
        return ModelComparison(
            model=model,
            since=since,
            until=until,
            versions=_versions(chosen, figures, counts),
            pairs=tuple(
                PairComparison(versions=pair, shadow=shadows.get(pair, _NONE), canary=canaries.get(pair, _NONE))
                for pair in itertools.combinations(chosen, 2)
            ),
        )


_NONE = Agreement(pairs=0, compared=0, agreed=0, rate=None)


def _versions(chosen: Sequence[int], figures: Sequence[Any], counts: Sequence[Any]) -> tuple[VersionComparison, ...]:
    """One entry per chosen version, in order (zeros for a version with no logged result)."""
    tallies: defaultdict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    for row in counts:
        tallies[(row.version, row.kind)][row.key] = int(row.n)
    by_version = {row.version: row for row in figures}
    return tuple(
        _version(v, by_version.get(v), statuses=tallies[(v, "status")], classes=tallies[(v, "class")]) for v in chosen
    )


def _version(version: int, row: Any, *, statuses: dict[str, int], classes: dict[str, int]) -> VersionComparison:
    if row is None:
        return VersionComparison(
            version=version, requests=0, shadow_requests=0, rows=0, errors=0, error_rate=0.0,
            statuses={}, latency=Latency(), classes={},
        )  # fmt: skip
    return VersionComparison(
        version=version,
        requests=row.requests,
        shadow_requests=row.shadow_requests,
        rows=int(row.rows),
        errors=row.errors,
        error_rate=row.errors / row.requests,
        statuses=statuses,
        latency=Latency(
            queue_ms=_percentiles(row.queue_ms),
            inference_ms=_percentiles(row.inference_ms),
            total_ms=_percentiles(row.total_ms),
        ),
        classes=classes,
    )


def _agreements(rows: Sequence[Any]) -> dict[tuple[int, int], Agreement]:
    return {
        (row.a, row.b): Agreement(
            pairs=row.pairs,
            compared=row.compared,
            agreed=row.agreed,
            rate=round(row.agreed / row.compared, 6) if row.compared else None,
        )
        for row in rows
    }


def _percentiles(values: Sequence[float] | None) -> Percentiles | None:
    if values is None:  # no timed result: percentile_cont over nothing is NULL
        return None
    p50, p95, p99 = (round(float(v), 3) for v in values)
    return Percentiles(p50=p50, p95=p95, p99=p99)
