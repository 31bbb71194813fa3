"""``inferq`` with API keys and quotas bypassed, for bench/security.py's baseline only (never shipped).

Every caller is one fixed principal without a database lookup, and predictions take the plain
admission script (no GCRA, no in-flight set): what the server cost before keys existed. The patches
apply to this interpreter and to the ``serve --workers N`` children it spawns (they import this module
first, as ``__mp_main__``).
"""

from __future__ import annotations

import sys
from typing import Any

from inferq.api import auth, service
from inferq.contracts.auth import SCOPES, Limits, Principal
from inferq.streams import quotas

_CALLER = Principal(
    key_id="0" * 16,
    tenant="bench",
    scopes=frozenset(SCOPES),
    limits=Limits(rate_per_s=1e9, burst=10**9, concurrency=10**9, max_rows=10**6, max_elements=10**9),
)


async def _anyone(self: Any, headers: Any, address: str) -> Principal:
    return _CALLER


async def _unmetered(self: Any, principal: Principal) -> None:
    return None


auth.Authenticator.authenticate = _anyone  # type: ignore[method-assign]
service.Quota.of = classmethod(lambda cls, principal, names: None)  # type: ignore[assignment, method-assign]
quotas.Quotas.hit = _unmetered  # type: ignore[method-assign]

if __name__ == "__main__":
    from inferq.cli.main import main

    sys.exit(main())
