"""On a fault test's failure: what every worker process was doing, from a SIGUSR1 stack dump.

``inferq worker`` processes (the supervisor and its children) log ``worker.stacks`` on SIGUSR1 (every
asyncio task's await chain, every thread's stack; inferq/workers/stacks.py) and write a faulthandler
thread dump to stderr at once, even when their event loop is blocked. ``worker_stacks`` signals the
worker groups this test process started, waits for their dumps and returns them as readable text,
for a report section or an assertion message.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .harness import children_of

STACKS_EVENT = "worker.stacks"


def worker_groups(parent: int | None = None) -> list[int]:
    """Pids of the ``inferq worker`` supervisors started by ``parent`` (this process): each leads its group."""
    return [pid for pid in children_of(parent or os.getpid()) if _is_worker(_argv(pid))]


def worker_stacks(groups: Sequence[int] | None = None, *, timeout_s: float = 5.0) -> str:
    """SIGUSR1 to every started process of each worker group (``worker_groups()`` by default); the
    ``worker.stacks`` events and faulthandler dumps they wrote, as text.

    Blocks up to ``timeout_s`` (call it through ``asyncio.to_thread`` from a coroutine). A process
    whose event loop is blocked answers with the faulthandler dump only, and is named as such.
    """
    groups = worker_groups() if groups is None else list(groups)
    if not groups:
        return "worker stacks: no inferq worker process is running"
    return "\n\n".join(_dump_group(leader, timeout_s=timeout_s) for leader in groups)


def _dump_group(leader: int, *, timeout_s: float) -> str:
    log = _log_of(leader)
    if log is None:
        return f"worker group {leader}: gone, or its log is not a file"
    # NOTE: only processes that have installed the handler: SIGUSR1 still kills one that is starting up.
    ready = _ready(leader, _events(log.read_text(errors="replace")))
    parts = [f"===== worker group {leader} (log {log}): {len(ready)} processes"]
    for pid in ready:  # one at a time: the group shares one log, and faulthandler's dump names no pid
        parts.append(_dump_process(pid, log, timeout_s=timeout_s))
    return "\n".join(parts)


def _dump_process(pid: int, log: Path, *, timeout_s: float) -> str:
    offset = log.stat().st_size
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return f"--- pid {pid}: gone"
    deadline = time.monotonic() + timeout_s
    while True:
        text = _read_from(log, offset)
        dumped = [e for e in _events(text) if e.get("event") == STACKS_EVENT and e.get("pid") == pid]
        if dumped or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    parts = (
        [_format(dumped[0])]
        if dumped
        else [f"--- pid {pid}: no {STACKS_EVENT} within {timeout_s}s: its loop is blocked"]
    )
    raw = [line for line in text.splitlines() if not line.startswith("{")]
    if raw:  # faulthandler's thread dump (written at once, from the signal handler), and any other output
        parts.append(f"--- pid {pid}, faulthandler:\n" + "\n".join(raw))
    return "\n".join(parts)


def _ready(leader: int, events: list[dict[str, Any]]) -> list[int]:
    """The group's processes with a stack-dump handler: a supervisor that started children, pools that started."""
    started = {e.get("pid") for e in events if e.get("event") == "pool.started"}
    ready = [leader] if any(e.get("event") == "worker.started" for e in events) else []
    return ready + [pid for pid in children_of(leader) if pid in started]


def _format(event: dict[str, Any]) -> str:
    lines = [f"--- pid {event['pid']}: {len(event['tasks'])} tasks, {len(event['threads'])} threads"]
    for task in event["tasks"]:
        cancelling = f" (cancelling {task['cancelling']})" if task["cancelling"] else ""
        lines.append(f"task {task['name']}{cancelling}")
        lines += [f"    {frame}" for frame in task["stack"]]
        lines.append(f"    awaiting: {task['awaiting']}")
    for thread in event["threads"]:
        lines.append(f"thread {thread['name']} ({thread['ident']})")
        lines += [f"    {frame}" for frame in thread["stack"]]
    return "\n".join(lines)


def _events(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
    return found


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read().decode(errors="replace")


def _log_of(pid: int) -> Path | None:
    """The file the process writes its stderr to (the harness's per-process log)."""
    try:
        target = Path(os.readlink(f"/proc/{pid}/fd/2"))
    except OSError:
        return None
    return target if target.is_file() else None


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_worker(argv: list[str]) -> bool:
    """``python -m inferq worker …`` (the harness's ``Stack.worker``)."""
    return any(a == "inferq" and argv[i + 1 : i + 2] == ["worker"] for i, a in enumerate(argv))
