"""``GET /v1/models/{model}/compare`` without HTTP: which versions, over which window, then the log's figures."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from inferq.api.catalog import ModelCatalog
from inferq.contracts.durations import duration_s
from inferq.contracts.http import ModelComparison
from inferq.errors import InvalidInput, VersionNotFound
from inferq.store.comparisons import Comparisons

MIN_VERSIONS, MAX_VERSIONS = 2, 8
MAX_WINDOW_S = 31 * 86_400  # the prediction log's default retention is shorter
DEFAULT_WINDOW = "24h"


class ComparisonService:
    """Versions of a model side by side, read from the prediction log (every tenant's traffic: admin only)."""

    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        store: Comparisons,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._clock = clock

    async def compare(self, model: str, *, versions: str, since: str = DEFAULT_WINDOW) -> ModelComparison:
        """``versions`` (``"2,3"``) of ``model`` over the last ``since`` (``"1h"``, ``"7d"``, seconds)."""
        chosen = parse_versions(versions)
        window = dt.timedelta(seconds=duration_s(since, field="since", max_s=MAX_WINDOW_S))
        info = await self._catalog.model(model)
        known = {v.version for v in info.versions}
        missing = [v for v in chosen if v not in known]
        if missing:
            raise VersionNotFound(
                f"model {info.name!r} has no version {', '.join(map(str, missing))}; "
                f"versions: {', '.join(map(str, sorted(known))) or 'none'}",
                model=info.name,
                version=missing[0],
                versions=sorted(known),
            )
        until = self._clock()
        return await self._store.compare(info.name, versions=chosen, since=until - window, until=until)


def parse_versions(text: str) -> list[int]:
    """``"2,3"`` → ``[2, 3]``: 2 to 8 distinct version numbers, in the order given."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdecimal() and part.isascii() and len(part) <= 9 and int(part) >= 1 for part in parts):
        raise InvalidInput(
            f"invalid versions {text[:100]!r}: version numbers separated by commas, e.g. '2,3'", field="versions"
        )
    chosen = [int(part) for part in parts]
    if len(set(chosen)) != len(chosen):
        raise InvalidInput(f"versions {text[:100]!r} name a version twice", field="versions")
    if not MIN_VERSIONS <= len(chosen) <= MAX_VERSIONS:
        raise InvalidInput(
            f"compare {MIN_VERSIONS} to {MAX_VERSIONS} versions, got {len(chosen)}",
            field="versions",
            count=len(chosen),
        )
    return chosen
