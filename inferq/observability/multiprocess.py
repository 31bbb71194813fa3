"""prometheus-client's multiprocess mode for a supervisor's children: their directory, and reading it.

Each child writes its counters and histograms to ``{kind}_{pid}.db`` files in ``PROMETHEUS_MULTIPROC_DIR``,
which must be in the child's environment before it imports prometheus-client (so it is passed in the
children's environment, never set after the fact). The supervisor sums every file per scrape. A dead
child's counters stay (a sum must not go down when a process is restarted); only its live gauges go.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID = re.compile(r"_(\d+)\.db$")
_PREFIX = "inferq-metrics-worker-"  # + the owner's pid + "-": what ``metrics_directory`` makes


@contextlib.contextmanager
def metrics_directory(configured: str | None = None) -> Iterator[Path]:
    """``configured`` (created, its old ``*.db`` removed: those processes are gone), else a new temporary
    directory, removed on exit (and those of owners killed before they could remove theirs)."""
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        yield directory
        return
    _remove_orphans(Path(tempfile.gettempdir()))
    directory = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def forget_dead(directory: Path, *, alive: Collection[int]) -> list[int]:
    """``mark_process_dead`` for every process with files in ``directory`` that is not in ``alive``
    (its live gauges go; its counters stay). The pids forgotten."""
    seen = {int(m[1]) for path in directory.glob("*.db") if (m := _PID.search(path.name))}
    dead = sorted(seen - set(alive))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path=str(directory))  # type: ignore[no-untyped-call]
    return dead


def summed(directory: Path | str) -> CollectorRegistry:
    """A registry whose collection sums every process's files in ``directory``."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry


def _remove_orphans(parent: Path) -> None:
    """Directories this module made for processes that are gone (killed with -9: no exit ran)."""
    for directory in parent.glob(f"{_PREFIX}*-*"):
        owner = directory.name[len(_PREFIX) :].partition("-")[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(directory, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def child_environment(directory: Path | None) -> dict[str, str]:
    """The variable that puts a child in multiprocess mode (none when metrics are off)."""
    return {} if directory is None else {ENV: os.fspath(directory)}
