"""Stack dumps on ``SIGUSR1``: every asyncio task's await chain and every thread's stack, as one log event.

For a worker that looks stuck (a fault test timing out, a partition that stopped draining):
``kill -USR1 <pid>`` (or the whole process group) logs ``worker.stacks`` with, per task, the chain
of awaits it is suspended in (down to the future it waits for: a thread hand-off, a socket read, a
lock, another task) and, per thread, its Python stack. The event is logged from the event loop, so a loop that
is itself blocked cannot log it: ``faulthandler`` also writes every thread's stack to stderr at once,
from the signal handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import io
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger(__name__)

DUMP_SIGNAL = signal.SIGUSR1
MAX_DEPTH = 64  # frames kept per task or thread: the innermost ones, where it waits


def task_stacks(loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    """Every unfinished task of ``loop``: name, the await chain it is suspended in, what it waits for."""
    found = []
    for task in sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name()):
        # NOTE: ``_fut_waiter`` (both Task implementations have it) is the future the task is parked on:
        # a thread hand-off shows as ``<Future pending cb=[_chain_future…]>``, another task by its name.
        waiter = getattr(task, "_fut_waiter", None)
        found.append(
            {
                "name": task.get_name(),
                "cancelling": task.cancelling(),
                "stack": await_chain(task.get_coro()),
                "awaiting": None if waiter is None else _describe(waiter),
            }
        )
    return found


def await_chain(coro: object) -> list[str]:
    """The frames of a suspended coroutine and of every coroutine (or generator) it awaits, outermost first.

    NOTE: ``Task.get_stack()`` gives only the outermost coroutine's frame; the interesting part of a
    stall (which ``await`` deep inside redis-py or ``to_thread``) is further down the ``cr_await`` chain.
    """
    frames: list[str] = []
    current: object = coro
    for _ in range(16 * MAX_DEPTH):  # a bound, should an await chain ever loop
        if current is None:
            break
        frame = _frame_of(current)
        if frame is not None:
            frames.append(_where(frame))
        current = _awaited_by(current)
    return frames[-MAX_DEPTH:]


def thread_stacks() -> list[dict[str, Any]]:
    """Every thread's name and Python stack (outermost first)."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    found = []
    for ident, frame in sys._current_frames().items():
        stack: list[str] = []
        current: FrameType | None = frame
        while current is not None and len(stack) < MAX_DEPTH:  # from the innermost out: deep ones lose their base
            stack.append(_where(current))
            current = current.f_back
        found.append({"name": names.get(ident, "?"), "ident": ident, "stack": stack[::-1]})
    return sorted(found, key=lambda t: str(t["name"]))


def log_stacks(loop: asyncio.AbstractEventLoop) -> None:
    """Log one ``worker.stacks`` event with every task's and every thread's stack."""
    log.warning("worker.stacks", pid=os.getpid(), tasks=task_stacks(loop), threads=thread_stacks())


@contextlib.contextmanager
def stack_dumps(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """While inside: ``SIGUSR1`` writes every thread's stack to stderr (faulthandler, at once, even
    when the loop is blocked), then logs ``worker.stacks`` from ``loop``. Call in the main thread."""
    previous = signal.getsignal(DUMP_SIGNAL)
    loop.add_signal_handler(DUMP_SIGNAL, log_stacks, loop)
    # NOTE: after add_signal_handler, which installs the handler faulthandler chains to (the one that
    # wakes the loop); the other way round, add_signal_handler would replace faulthandler's.
    dumping = _stderr_fileno() is not None
    if dumping:
        faulthandler.register(DUMP_SIGNAL, file=sys.stderr, all_threads=True, chain=True)
    try:
        yield
    finally:
        if dumping:
            faulthandler.unregister(DUMP_SIGNAL)
        loop.remove_signal_handler(DUMP_SIGNAL)
        if previous is not None:
            signal.signal(DUMP_SIGNAL, previous)


def _frame_of(awaitable: object) -> FrameType | None:
    for attr in ("cr_frame", "gi_frame", "ag_frame"):
        frame = getattr(awaitable, attr, None)
        if frame is not None:
            return frame  # type: ignore[no-any-return]
    return None


def _awaited_by(awaitable: object) -> object:
    for attr in ("cr_await", "gi_yieldfrom", "ag_await"):
        if hasattr(awaitable, attr):
            return getattr(awaitable, attr)
    return None


def _where(frame: FrameType) -> str:
    code = frame.f_code
    return f"{code.co_filename}:{frame.f_lineno} in {code.co_qualname}"


def _describe(awaitable: object) -> str:
    if isinstance(awaitable, asyncio.Task):
        return f"task {awaitable.get_name()!r}"
    return repr(awaitable)[:500]


def _stderr_fileno() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return None
