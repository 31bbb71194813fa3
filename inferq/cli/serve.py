"""``inferq serve``: the HTTP API on uvicorn (uvloop + httptools), in N processes, draining on SIGTERM.

SIGTERM (or Ctrl-C) in a server process: uvicorn stops accepting connections and, through
:class:`DrainingServer`, the app at once answers every caller still held for a result with a 202
(the request stays queued and pollable) and refuses new predictions; uvicorn's wait for in-flight
requests is then short, and the lifespan unsubscribes the reply listener and closes its clients.
With ``--workers N`` > 1, a supervisor binds the socket, starts N server processes, restarts a
crashed one with backoff, and forwards SIGTERM/SIGINT to all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

import msgspec
import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE

from inferq.api import FastPredict, begin_drain, create_app
from inferq.api.protocol import CorkedHttpToolsProtocol
from inferq.cli.keys import resolve_pepper
from inferq.cli.runtime import prepare_database, require_safe_redis
from inferq.embedded import started_services
from inferq.observability.logs import configure_logging
from inferq.settings import ServiceSettings, Settings

log = structlog.get_logger("inferq.serve")
_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose exit signal also drains the app (uvicorn alone would first wait for
    every held request to finish before the lifespan's shutdown could answer them)."""

    def __init__(self, config: uvicorn.Config, *, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # NOTE: what lives after startup (app, routes, clients, catalog) moves to the permanent
        # generation, so garbage collections triggered by request allocations stop scanning it.
        gc.freeze()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, except that a handled signal is not raised again once the server stopped:
        the process exits normally, so ``inferq serve`` still stops the embedded services it started."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first and self._loop is not None and not self._loop.is_closed():
            # NOTE: a signal handler runs between bytecodes of the loop's thread: schedule, don't call.
            self._loop.call_soon_threadsafe(self._on_exit)


def run_serve(settings: Settings, *, host: str | None, port: int | None, processes: int) -> int:
    """Start services (embedded when unset), check the schema, then serve until a signal."""
    configure_logging(settings.log_level)
    host, port = host or settings.host, port or settings.port
    embedded_db = settings.services.database_url is None
    settings = resolve_pepper(settings)  # before anything starts: a missing pepper is a refusal
    with started_services(settings.services, redis=True) as services:
        asyncio.run(_prepare(settings, services, embedded_db=embedded_db))
        resolved = msgspec.structs.replace(settings, services=services)
        if processes <= 1:
            return serve(resolved, host=host, port=port)
        return supervise(resolved, host=host, port=port, processes=processes)


async def _prepare(settings: Settings, services: ServiceSettings, *, embedded_db: bool) -> None:
    await prepare_database(services.database_url, embedded=embedded_db)
    await require_safe_redis(settings, services, embedded=settings.services.redis_url is None)


def serve(settings: Settings, *, host: str, port: int, sockets: list[socket.socket] | None = None) -> int:
    """One API server process: blocks until it has drained and stopped; 1 if it never started."""
    app = create_app(settings)
    config = uvicorn.Config(
        FastPredict(app),
        host=host,
        port=port,
        loop="uvloop",
        http=CorkedHttpToolsProtocol,
        lifespan="on",
        access_log=False,  # the app logs one line per request itself
        server_header=False,
        timeout_graceful_shutdown=int(settings.api.shutdown_timeout_s),
    )
    server = DrainingServer(config, on_exit=lambda: begin_drain(app))
    server.run(sockets=sockets)
    return 0 if server.started else 1


def supervise(settings: Settings, *, host: str, port: int, processes: int) -> int:
    """Bind once, run ``processes`` servers on the socket, restart crashed ones, stop them on a signal."""
    multiprocessing.allow_connection_pickling()
    sock = uvicorn.Config("inferq.api:create_app", host=host, port=port).bind_socket()
    metrics_dir = _metrics_dir()
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def start() -> BaseProcess:
        child = context.Process(target=_child, args=(settings, host, port, sock), name="inferq-api")
        child.start()
        return child

    children = [start() for _ in range(processes)]
    backoff = [0.5] * processes
    log.info("serve.started", host=host, port=port, processes=processes, pids=[c.pid for c in children])
    status = 0
    try:
        while not stop.wait(0.5):
            for slot, child in enumerate(children):
                if child.is_alive():
                    continue
                _forget(metrics_dir, child.pid)
                if child.exitcode == STARTUP_FAILURE:
                    log.error("serve.startup_failed", pid=child.pid)
                    status = 1
                    stop.set()
                    break
                log.warning("serve.process_died", pid=child.pid, exitcode=child.exitcode, restart_in_s=backoff[slot])
                time.sleep(backoff[slot])
                backoff[slot] = min(backoff[slot] * 2, 30.0)
                children[slot] = start()
    finally:
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            child.join(timeout=settings.api.shutdown_timeout_s + 5)
            if child.is_alive():
                child.kill()
                child.join()
        sock.close()
        if metrics_dir is not None and metrics_dir.name.startswith("inferq-metrics-"):
            shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("serve.stopped", status=status)
    return status


def _child(settings: Settings, host: str, port: int, sock: socket.socket) -> None:
    """One server process under the supervisor (a fresh interpreter: ``spawn``)."""
    configure_logging(settings.log_level)
    if serve(settings, host=host, port=port, sockets=[sock]) != 0:
        raise SystemExit(STARTUP_FAILURE)


def _metrics_dir() -> Path | None:
    """Prometheus multiprocess mode for the server processes: the configured directory (its old
    ``*.db`` files removed), else a fresh temporary one set in the environment they inherit."""
    configured = os.environ.get(_METRICS_DIR)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        return directory
    directory = Path(tempfile.mkdtemp(prefix="inferq-metrics-"))
    os.environ[_METRICS_DIR] = str(directory)
    return directory


def _forget(metrics_dir: Path | None, pid: int | None) -> None:
    if metrics_dir is not None and pid is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path=str(metrics_dir))  # type: ignore[no-untyped-call]
