"""Batch jobs under load, in one run, on ``wine@1`` (the demo's 100-tree forest):

1. a 100,000-row JSONL job from the 202 to its terminal state: rows/s as a ratio of the engine's
   in-process rows/s at batch 256 (run + postprocess), measured here; where the time goes (upload and
   commit vs running and storing);
2. p99 of sync predict (wrk, c8) on the same model while that job runs, vs without it;
3. recovery after ``kill -9`` of the worker mid-job: the time from the kill to the job's end, against the
   same job undisturbed, with exactly one result per row checked.

Processes: ``inferq serve --workers 2`` and ``inferq worker --processes 1`` (plus a second worker started
after the kill), embedded Redis and Postgres of this run's own. Every call takes an API key of the run's own
(every scope, quotas far above the load: ``harness.auth_env``).

Run: ``.venv/bin/python bench/jobs.py [--rows 100000]`` (needs ``wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from harness import auth_env, bearer, cpu_seconds, free_port, make_key, new_pepper, process, python, wait_http, wrk

from inferq.cli.demo import build
from inferq.embedded import started_services
from inferq.engine import Runner, read_signature, to_predictions
from inferq.settings import EngineSettings, ServiceSettings
from inferq.store import migrate
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.registry import Registry


async def register(database_url: str, onnx: bytes) -> None:
    await migrate.upgrade(database_url)
    engine = create_engine(database_url)
    await Registry(create_sessionmaker(engine)).register(name="wine", model=onnx, signature=read_signature(onnx))
    await engine.dispose()


def engine_rows_per_s(onnx: bytes, *, batch: int, seconds: float = 2.0) -> float:
    runner = Runner.load(onnx, settings=EngineSettings(intra_op_threads=1))
    x = np.random.default_rng(0).normal(10, 3, size=(batch, runner.signature.n_features or 1)).astype(np.float32)
    feeds, rows, started = {runner.signature.inputs[0].name: x}, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        to_predictions(runner.signature, runner.run(feeds))
        rows += batch
    return rows / (time.perf_counter() - started)


def write_jsonl(path: Path, rows: int, width: int) -> None:
    rng = np.random.default_rng(2)
    with path.open("w") as out:
        for i, row in enumerate(np.round(rng.normal(10, 3, size=(rows, width)), 3).tolist()):
            out.write(json.dumps({"custom_id": f"r{i}", "inputs": row}) + "\n")


def submit(base: str, path: Path, *, headers: Mapping[str, str]) -> tuple[str, float]:
    started = time.perf_counter()
    with path.open("rb") as handle:
        files = {"file": (path.name, handle, "application/jsonl")}
        response = httpx.post(f"{base}/v1/jobs", data={"model": "wine@1"}, files=files, headers=headers, timeout=600)
    response.raise_for_status()
    return response.json()["id"], time.perf_counter() - started


def wait_done(base: str, job_id: str, *, headers: Mapping[str, str], timeout_s: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers, timeout=10).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise RuntimeError(f"job {job_id} did not finish in {timeout_s}s")


def count_results(base: str, job_id: str, *, headers: Mapping[str, str]) -> tuple[int, int]:
    ids = []
    with httpx.stream("GET", f"{base}/v1/jobs/{job_id}/results.jsonl", headers=headers, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line:
                ids.append(json.loads(line)["custom_id"])
    return len(ids), len(set(ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=8.0, help="each wrk run")
    parser.add_argument("--worker-processes", type=int, default=1, help="inferq worker --processes")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="inferq-bench-jobs-"))
    onnx = build("wine", 2).onnx
    width = read_signature(onnx).n_features or 1
    upload = tmp / "rows.jsonl"
    write_jsonl(upload, args.rows, width)
    engine_256 = engine_rows_per_s(onnx, batch=256)
    print(f"# {os.cpu_count()} cores; {args.rows:,} rows ({upload.stat().st_size / 1e6:.1f} MB JSONL); "
          f"serve --workers 2, worker --processes {args.worker_processes}")  # fmt: skip
    print(f"engine in-process at batch 256: {engine_256:,.0f} rows/s")

    with started_services(ServiceSettings(state_dir=tmp / "state"), persist=False) as services:
        assert services.redis_url
        assert services.database_url
        asyncio.run(register(services.database_url, onnx))
        pepper = new_pepper()
        headers = bearer(asyncio.run(make_key(services.database_url, pepper)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
        env.update(
            INFERQ_REDIS_URL=services.redis_url, INFERQ_DATABASE_URL=services.database_url,
            INFERQ_KEY_PREFIX="benchjobs", INFERQ_MODEL_ROOT=str(tmp / "models"), INFERQ_LOG_LEVEL="warning",
            INFERQ_ADMISSION_LIMIT="100000", INFERQ_RECLAIM_MIN_IDLE_MS="5000", **auth_env(pepper),
        )  # fmt: skip
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        serve = [python(), "-m", "inferq", "serve", "--port", str(port), "--workers", "2"]
        worker = [python(), "-m", "inferq", "worker", "--models", "wine@1", "--processes", str(args.worker_processes)]
        body = json.dumps({"inputs": [list(np.round(np.random.default_rng(1).normal(10, 3, width), 3))]})
        predict_url = f"{base}/v1/models/wine@1/predict"
        with process(serve, env=env, log=tmp / "api.log") as api:
            wait_http(f"{base}/health/ready")
            with process(worker, env=env, log=tmp / "worker.log") as wk:
                time.sleep(2)
                groups = {
                    "api": [api],
                    "worker": [wk],
                    "redis": _servers("redis", tmp),
                    "postgres": _servers("postgres", tmp),
                }
                throughput(base, upload, args.rows, engine_256, groups, headers=headers)
                latency(base, upload, predict_url, body, args.seconds, headers=headers)
            recovery(base, upload, worker, env, tmp, headers=headers)


def throughput(
    base: str,
    upload: Path,
    rows: int,
    engine_256: float,
    groups: dict[str, list[psutil.Process]],
    *,
    headers: Mapping[str, str],
) -> None:
    before = {name: cpu_seconds(procs) for name, procs in groups.items()}
    job_id, upload_s = submit(base, upload, headers=headers)
    during = {name: cpu_seconds(procs) for name, procs in groups.items()}
    started = time.perf_counter()
    job = wait_done(base, job_id, headers=headers)
    run_s = time.perf_counter() - started
    after = {name: cpu_seconds(procs) for name, procs in groups.items()}
    total_s = upload_s + run_s
    n, unique = count_results(base, job_id, headers=headers)
    rate = rows / run_s
    print("\n## 1. 100k-row job")
    print(f"status {job['status']}, counts {job['counts']}, results.jsonl {n} lines ({unique} distinct custom_ids)")
    print(f"upload + parse + validate + commit (to the 202): {upload_s:.2f} s ({rows / upload_s:,.0f} rows/s)")
    print(f"202 → terminal: {run_s:.2f} s = {rate:,.0f} rows/s = {rate / engine_256:.3f}x the engine at batch 256")
    print(f"submission to terminal: {total_s:.2f} s = {rows / total_s:,.0f} rows/s = "
          f"{rows / total_s / engine_256:.3f}x")  # fmt: skip
    print("CPU seconds, submission (to the 202) | run (202 → terminal): " + ", ".join(
        f"{name} {during[name] - before[name]:.2f} | {after[name] - during[name]:.2f}" for name in groups))  # fmt: skip


def _servers(name: str, tmp: Path) -> list[psutil.Process]:
    """This run's embedded server processes (their command lines name its state directory)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if name in (proc.info["name"] or "") and str(tmp) in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
    return found


def latency(base: str, upload: Path, url: str, body: str, seconds: float, *, headers: Mapping[str, str]) -> None:
    """wrk alone, then while jobs run the whole time (three of them queued: the last is checked to be
    still running when wrk ends, so every sampled request competed with job chunks)."""
    alone = wrk(url, body, connections=8, seconds=seconds, headers=headers)
    job_ids = [submit(base, upload, headers=headers)[0] for _ in range(3)]
    during = wrk(url, body, connections=8, seconds=seconds, headers=headers)
    last = httpx.get(f"{base}/v1/jobs/{job_ids[-1]}", headers=headers, timeout=10).json()
    for job_id in job_ids:
        wait_done(base, job_id, headers=headers)
    print("\n## 2. sync predict (wrk c8) alone vs while jobs run")
    print(
        f"alone : {alone.rps:,.0f} req/s, p50 {alone.p50_ms:.2f} ms, p99 {alone.p99_ms:.2f} ms, errors {alone.errors}"
    )
    print(f"during: {during.rps:,.0f} req/s, p50 {during.p50_ms:.2f} ms, p99 {during.p99_ms:.2f} ms, "
          f"errors {during.errors} (last job {last['status']} at the end, {last['progress']:.0%} done)")  # fmt: skip
    print(f"p99 during / alone = {during.p99_ms / alone.p99_ms:.2f}x (target ≤ 2x)")


def recovery(
    base: str, upload: Path, worker: list[str], env: dict[str, str], tmp: Path, *, headers: Mapping[str, str]
) -> None:
    """Kill -9 the only worker when the job is a third done; a new worker (another host:pid) picks up."""
    with process(worker, env=env, log=tmp / "worker-a.log") as victim:
        time.sleep(2)
        job_id, _ = submit(base, upload, headers=headers)
        while httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers, timeout=10).json()["progress"] < 0.33:
            time.sleep(0.05)
        for child in victim.children(recursive=True):
            os.kill(child.pid, signal.SIGKILL)
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.perf_counter()
    with process(worker, env=env, log=tmp / "worker-b.log"):
        job = wait_done(base, job_id, headers=headers)
        recovered_s = time.perf_counter() - killed
    n, unique = count_results(base, job_id, headers=headers)
    print("\n## 3. kill -9 of the worker at 1/3 of the job")
    print(f"status {job['status']}, counts {job['counts']}; results.jsonl {n} lines, {unique} distinct custom_ids")
    print(f"kill → job terminal: {recovered_s:.2f} s (includes a new worker's start and the reclaim min-idle of 5 s)")


if __name__ == "__main__":
    main()
