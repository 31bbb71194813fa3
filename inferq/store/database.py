"""Postgres connections: URL normalisation, the async engine, sessions, and unavailability errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from inferq.errors import InvalidInput, ServiceUnavailable

_POSTGRES_SCHEMES = frozenset({"postgres", "postgresql", "postgresql+asyncpg"})
# libpq's sslmode values that asyncpg's ``ssl`` argument understands under the same names.
_SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


def async_url(url: str) -> str:
    """The SQLAlchemy asyncpg form of a Postgres URL (``postgresql://``, ``postgres://``, unix socket).

    ``postgresql://u@/db?host=/run/pg`` keeps its socket directory; libpq's ``sslmode`` becomes
    asyncpg's ``ssl``. Anything but Postgres is a ``ValueError``: the store needs Postgres.
    """
    parsed = make_url(url)
    if parsed.drivername not in _POSTGRES_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL (postgresql://…): {parsed.drivername}://…")
    query = dict(parsed.query)
    sslmode = query.pop("sslmode", None)
    if isinstance(sslmode, str):
        if sslmode not in _SSL_MODES:
            raise ValueError(f"unsupported sslmode {sslmode!r} in the database URL")
        query.setdefault("ssl", sslmode)
    converted = parsed.set(drivername="postgresql+asyncpg", query=query)
    return converted.render_as_string(hide_password=False)


def create_engine(
    url: str,
    *,
    connect_timeout_s: float = 5.0,
    command_timeout_s: float | None = 60.0,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout_s: float = 10.0,
    pre_ping: bool = True,
    application_name: str = "inferq",
) -> AsyncEngine:
    """An async engine on asyncpg that fails fast (connect, command and pool timeouts) when Postgres is down.

    Wrap calls in :func:`translate_errors` to see those failures as ``ServiceUnavailable``.
    """
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout_s,
        "command_timeout": command_timeout_s,
        "server_settings": {"application_name": application_name},
    }
    return create_async_engine(
        async_url(url),
        pool_pre_ping=pre_ping,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_s,
        connect_args=connect_args,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """The session factory repositories take (``expire_on_commit=False``: results outlive the session)."""
    return async_sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise "Postgres is unreachable or too slow" as ``ServiceUnavailable``; other errors pass.

    The one place that decides which database failures are the service's absence rather than a bug.
    """
    try:
        yield
    except exc.TimeoutError as error:  # no pooled connection became free in time
        raise ServiceUnavailable("database busy: no connection available", reason="pool_timeout") from error
    except exc.DBAPIError as error:
        if error.connection_invalidated or _is_unavailable(error.orig):
            raise ServiceUnavailable(f"database unavailable: {error.orig}", reason="disconnect") from error
        if _sqlstate(error.orig) in _BAD_VALUE:  # a caller's string or number Postgres cannot hold
            raise InvalidInput(
                f"a value the database cannot store: {_BAD_VALUE[_sqlstate(error.orig) or '']}"
            ) from error
        raise
    except (OSError, TimeoutError) as error:  # asyncpg's connect: refused, unresolvable, timed out
        raise ServiceUnavailable(f"database unreachable: {error or type(error).__name__}", reason="connect") from error


# NUL in a string (22021), a character the encoding lacks (22P05), a number out of its column's range (22003).
_BAD_VALUE = {"22021": "a NUL character", "22P05": "an untranslatable character", "22003": "a number out of range"}


def _sqlstate(orig: BaseException | None) -> str | None:
    cause = getattr(orig, "__cause__", None) or orig
    sqlstate = getattr(cause, "sqlstate", None) or getattr(orig, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) else None


def _is_unavailable(orig: BaseException | None) -> bool:
    """Driver errors that mean the server is gone, starting up, shutting down or overloaded."""
    cause = getattr(orig, "__cause__", None) or orig
    if isinstance(cause, (OSError, TimeoutError)):
        return True
    sqlstate = getattr(cause, "sqlstate", None) or getattr(orig, "sqlstate", None)
    # 08: connection exception; 53: insufficient resources; 57P: operator intervention (shutdown);
    # 57014: query_canceled (statement timeout).
    return isinstance(sqlstate, str) and sqlstate.startswith(("08", "53", "57P", "57014"))
