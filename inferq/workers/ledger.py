"""The run ledger (``INFERQ_RUN_LEDGER``): one JSON line per run attempt, for fault tests and diagnostics."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence

import msgspec

from inferq.workers.batch import Work, rows_of

_encoder = msgspec.json.Encoder()


class RunLedger:
    """Appends ``{"id", "pid", "delivery", "status": "running", "batch", "rows"}`` per request, written
    (and flushed) just before ONNX Runtime runs it, so a run that crashes the process is still counted.

    ``batch`` names the ORT run (``pid-n``): lines sharing it were one run of ``rows`` rows.
    Expired and invalid requests are never run, so they never appear. Each line is one ``write`` on
    an ``O_APPEND`` file: lines from several processes never interleave.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pid = os.getpid()
        self._runs = itertools.count(1)
        self._lock = threading.Lock()

    def record(self, works: Sequence[Work]) -> None:
        """Called (from any thread) right before one ORT run of ``works``."""
        rows = rows_of(works)
        with self._lock:
            batch = f"{self._pid}-{next(self._runs)}"
        lines = b"".join(
            _encoder.encode(
                {
                    "id": w.request.id,
                    "pid": self._pid,
                    "delivery": w.delivery,
                    "status": "running",
                    "batch": batch,
                    "rows": rows,
                }
            )
            + b"\n"
            for w in works
        )
        os.write(self._fd, lines)

    def close(self) -> None:
        os.close(self._fd)
