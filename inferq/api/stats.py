"""``GET /v1/models/{model}/stats`` without HTTP: whose traffic the caller may see, then the log's figures.

A key sees its own tenant's traffic; an ``admin`` key sees every tenant's, or one tenant's with
``tenant``. The model must exist (the catalog says so, as for every model route); ``wine@2`` narrows
the figures to version 2.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from inferq.api.catalog import ModelCatalog
from inferq.contracts.auth import Principal
from inferq.contracts.models import ModelRef
from inferq.contracts.stats import ModelStats
from inferq.errors import Forbidden, InvalidInput, ModelNotFound, VersionNotFound
from inferq.store.prediction_stats import PredictionStats

MAX_HOURS = 31 * 24


class StatsService:
    """Per-model stats for one caller, read from the prediction log."""

    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        store: PredictionStats,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._clock = clock

    async def model_stats(
        self, principal: Principal, model: str, *, hours: int = 24, tenant: str | None = None
    ) -> ModelStats:
        """The last ``hours`` hours of ``model`` (``name`` or ``name@N``) that ``principal`` may see."""
        if not 1 <= hours <= MAX_HOURS:
            raise InvalidInput(f"hours must be 1 to {MAX_HOURS}, got {hours}", field="hours")
        try:
            ref = ModelRef.parse(model)
        except InvalidInput:
            raise ModelNotFound(f"model {model!r} not found", model=model) from None
        if ref.version is None and model.strip().partition("@")[1]:
            raise InvalidInput(f"stats are per model or per version ({ref.name} or {ref.name}@2), not per alias")
        info = await self._catalog.model(ref.name)
        if ref.version is not None and all(v.version != ref.version for v in info.versions):
            raise VersionNotFound(
                f"model {info.name!r} has no version {ref.version}", model=info.name, version=ref.version
            )
        return await self._store.model_stats(
            info.name, hours=hours, now=self._clock(), version=ref.version, tenant=_visible(principal, tenant)
        )


def _visible(principal: Principal, tenant: str | None) -> str | None:
    """The tenant whose rows the caller reads (``None``: every tenant's, for an admin key only)."""
    if principal.allows("admin"):
        return tenant
    if tenant is not None and tenant != principal.tenant:
        raise Forbidden("another tenant's stats need the 'admin' scope", needs=["admin"], has=sorted(principal.scopes))
    return principal.tenant
