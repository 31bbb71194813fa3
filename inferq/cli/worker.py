"""``inferq worker``: a supervisor and its worker processes.

``inferq worker (--all | --models wine@2,iris) [--processes N]`` always supervises: it starts N
worker processes (``python -m inferq.cli.worker …``, this module) and restarts any that dies, so a
message that crashes its process is retried and, after ``max_deliveries``, dead-lettered, with no
orchestrator involved. The supervisor is an idle process that never imports ONNX Runtime; the hot
path is entirely in the children. ``python -m inferq.cli.worker --all`` runs one unsupervised
worker process, for an orchestrator that restarts processes itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from inferq.cli.output import fail, say
from inferq.cli.runtime import opened, require_safe_redis
from inferq.errors import InferqError, InvalidInput
from inferq.observability.logs import configure_logging
from inferq.settings import ServiceSettings, Settings, redacted_url

PARENT_CHECK_S = 1.0


async def run_worker(settings: Settings, *, all_models: bool, models: list[str] | None, processes: int) -> int:
    """Start embedded services when no URLs are set, then supervise ``processes`` worker processes."""
    from inferq.workers.selection import Selection
    from inferq.workers.stacks import stack_dumps
    from inferq.workers.supervisor import Supervisor
    from inferq.workers.supervisor_metrics import Exposure

    configure_logging(settings.log_level)
    selection = Selection.parse(all_models=all_models, models=models)  # bad arguments: refused before anything
    if processes < 1:
        raise InvalidInput(f"--processes must be at least 1, got {processes}", field="processes")
    async with opened(settings, redis=True) as rt, Exposure(settings) as metrics:
        await require_safe_redis(settings, rt.services, embedded=settings.services.redis_url is None)
        _, missing = selection.pick(await rt.registry.list_models())
        if missing:  # a typo would otherwise be a child exiting 2, restarted forever
            raise InvalidInput(f"no such model version to serve: {', '.join(missing)}", models=missing)
        command = [sys.executable, "-m", "inferq.cli.worker", *_selection_args(all_models, models)]
        command += ["--parent-pid", str(os.getpid())]
        env = _child_env(rt.services, metrics=metrics.child_env)
        supervisor = Supervisor(command=command, processes=processes, queue=settings.queue, env=env)
        await metrics.serve(supervisor)  # /metrics: the children's summed (INFERQ_WORKER_METRICS_PORT)
        say(f"inferq worker: {processes} process(es) on redis {redacted_url(rt.services.redis_url)}")
        # NOTE: SIGUSR1 dumps stacks here too: a signal sent to the whole group must not kill the supervisor.
        with _on_signals(supervisor.stop), stack_dumps(asyncio.get_running_loop()):
            return await supervisor.run()


async def serve_pool(settings: Settings, *, all_models: bool, models: list[str] | None, parent_pid: int = 0) -> int:
    """One worker process in this process: serve until SIGTERM/SIGINT (or the parent's death), drain, 0."""
    from inferq.streams.connection import connect
    from inferq.streams.tasks import TaskQueue
    from inferq.workers.pool import WorkerPool
    from inferq.workers.selection import Selection
    from inferq.workers.stacks import stack_dumps

    selection = Selection.parse(all_models=all_models, models=models)
    async with opened(settings, redis=True) as rt:
        redis = connect(rt.services, blocking_ms=settings.queue.block_ms)
        tasks = TaskQueue(redis, prefix=settings.services.key_prefix)  # job webhooks go to `inferq tasks`
        pool = WorkerPool(settings, redis=redis, sessions=rt.sessions, selection=selection, schedule=tasks.schedule)
        watcher = asyncio.create_task(_watch_parent(parent_pid, pool.stop)) if parent_pid else None
        try:
            with _on_signals(pool.stop), stack_dumps(asyncio.get_running_loop()):  # kill -USR1: task stacks
                await pool.run()
        finally:
            if watcher is not None:
                watcher.cancel()
            await tasks.aclose()
            await redis.aclose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inferq.cli.worker (--all | --models …) [--parent-pid PID]``: one worker process."""
    parser = argparse.ArgumentParser(prog="python -m inferq.cli.worker", description="one inferq worker process")
    chosen = parser.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--all", action="store_true")
    chosen.add_argument("--models")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit (draining) when this process is gone")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        say(f"inferq: {exc}")
        return 2
    configure_logging(settings.log_level)
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    try:
        return _run(serve_pool(settings, all_models=args.all, models=models, parent_pid=args.parent_pid))
    except InferqError as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return 130


def _run(main: Coroutine[Any, Any, int]) -> int:
    """On uvloop when installed (``uvicorn[standard]`` brings it): ~20 % less CPU per Redis round trip."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _selection_args(all_models: bool, models: list[str] | None) -> list[str]:
    return ["--all"] if all_models else ["--models", ",".join(models or [])]


def _child_env(services: ServiceSettings, *, metrics: dict[str, str]) -> dict[str, str]:
    """The environment with the resolved service URLs (children use the supervisor's embedded servers) and
    the metrics directory: it must be set before a child imports prometheus-client."""
    env = dict(os.environ)
    env["INFERQ_REDIS_URL"] = services.redis_url or ""
    env["INFERQ_DATABASE_URL"] = services.database_url or ""
    env.update(metrics)
    return env


@contextlib.contextmanager
def _on_signals(handler: Callable[[], None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handler)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _watch_parent(parent_pid: int, stop: Callable[[], None]) -> None:
    """Drain and exit when the supervisor is gone (killed with -9: nobody forwards SIGTERM)."""
    while os.getppid() == parent_pid:  # noqa: ASYNC110 (no event to wait for: polling is the only way)
        await asyncio.sleep(PARENT_CHECK_S)
    stop()


if __name__ == "__main__":
    sys.exit(main())
