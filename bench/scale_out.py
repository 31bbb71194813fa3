"""Scale-out on one machine: a heavy model's throughput with 1 vs 2 worker processes, in one run.

Two measurements per worker count, same model (``heavy@1``: an MLP with three 1024-wide hidden layers,
bench/queue_path.py), same embedded Redis:

- **stream**: ``--messages`` single-row requests XADDed straight onto the work stream (no HTTP), rows/s
  until all are done — what the worker pool alone can drain;
- **sync**: wrk at ``--concurrency`` against ``inferq serve --workers 2`` — what callers see, with the
  API processes sharing the same cores.

The API takes an API key of the run's own (every scope, quotas far above the load: ``harness.auth_env``).

Printed with each process group's CPU use (cores busy) so the limit is visible: on a 2-core machine
two worker processes can at best double the one-process rate when nothing else runs, and the API,
Redis and wrk take their share of the same two cores under sync load. Also the in-process engine's
rows/s at batch 64 on one thread: the ceiling per worker process.

Run: ``.venv/bin/python bench/scale_out.py [--messages 20000] [--seconds 8] [--concurrency 64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import psutil
from harness import auth_env, bearer, cpu_seconds, free_port, make_key, new_pepper, process, python, wait_http, wrk
from queue_path import PREFIX, _redis_pid, _wait_ready, engine_rows_per_s, heavy_model, register

from inferq.contracts.messages import InferRequest, message_encoder
from inferq.contracts.names import Names
from inferq.embedded import started_services
from inferq.engine import read_signature
from inferq.inputs import encode_tensors
from inferq.settings import ServiceSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", default="1,2")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="inferq-scale-"))
    onnx = heavy_model()
    engine_rate, per_row_us = engine_rows_per_s(onnx, batch=64)
    print(f"# {os.cpu_count()} cores; heavy@1: {per_row_us:.0f} µs per row at batch 1, "
          f"{engine_rate:,.0f} rows/s in-process at batch 64 (one thread)")  # fmt: skip
    with started_services(ServiceSettings(state_dir=tmp / "state"), persist=False) as services:
        assert services.redis_url
        assert services.database_url
        asyncio.run(register(services.database_url, {"heavy": onnx}))
        pepper = new_pepper()
        headers = bearer(asyncio.run(make_key(services.database_url, pepper)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
        env.update(
            INFERQ_REDIS_URL=services.redis_url, INFERQ_DATABASE_URL=services.database_url,
            INFERQ_KEY_PREFIX=PREFIX, INFERQ_MODEL_ROOT=str(tmp / "models"), INFERQ_LOG_LEVEL="warning",
            INFERQ_ADMISSION_LIMIT="100000", INFERQ_DEV="true", **auth_env(pepper),
        )  # fmt: skip
        redis = psutil.Process(_redis_pid(tmp / "state" / "redis"))
        rows = []
        for n in [int(p) for p in args.processes.split(",")]:
            rows.append(
                run(n, onnx, env=env, tmp=tmp, args=args, redis=redis, redis_url=services.redis_url, headers=headers)
            )
    print(f"\n{'processes':>9} {'stream rows/s':>14} {'worker cores':>13} {'sync req/s':>11} {'p99 ms':>8} "
          f"{'cores: api':>11} {'worker':>7} {'redis':>6}")  # fmt: skip
    for r in rows:
        print(f"{r['n']:>9} {r['stream']:>14,.0f} {r['stream_cores']:>13.2f} {r['rps']:>11,.0f} {r['p99']:>8.1f} "
              f"{r['api_cores']:>11.2f} {r['worker_cores']:>7.2f} {r['redis_cores']:>6.2f}")  # fmt: skip
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['n']} vs {base['n']} worker process(es): stream {r['stream'] / base['stream']:.2f}x, "
              f"sync {r['rps'] / base['rps']:.2f}x")  # fmt: skip


def run(
    n: int,
    onnx: bytes,
    *,
    env: dict[str, str],
    tmp: Path,
    args: argparse.Namespace,
    redis: psutil.Process,
    redis_url: str,
    headers: Mapping[str, str],
) -> dict[str, float]:
    """One worker count: the stream drain, then wrk through the API."""
    worker_cmd = [python(), "-m", "inferq", "worker", "--models", "heavy@1", "--processes", str(n)]
    api_port = free_port()
    serve_cmd = [python(), "-m", "inferq", "serve", "--port", str(api_port), "--workers", "2"]
    with (
        process(serve_cmd, env=env, log=tmp / f"api-{n}.log") as api,
        process(worker_cmd, env=env, log=tmp / f"worker-{n}.log") as worker,
    ):
        wait_http(f"http://127.0.0.1:{api_port}/health/ready")
        _wait_ready(f"http://127.0.0.1:{api_port}/v1/models/heavy", headers=headers)
        time.sleep(2)  # every worker process has loaded the model and joined the group
        stream, stream_cores = drain(onnx, redis_url=redis_url, messages=args.messages, worker=worker)
        width = read_signature(onnx).n_features or 1
        body = json.dumps({"inputs": [list(np.round(np.random.default_rng(1).normal(10, 3, width), 3))]})
        before = {k: cpu_seconds(v) for k, v in {"api": [api], "worker": [worker], "redis": [redis]}.items()}
        started = time.perf_counter()
        result = wrk(f"http://127.0.0.1:{api_port}/v1/models/heavy@1/predict", body, connections=args.concurrency,
                     seconds=args.seconds, headers=headers)  # fmt: skip
        wall = time.perf_counter() - started
        after = {k: cpu_seconds(v) for k, v in {"api": [api], "worker": [worker], "redis": [redis]}.items()}
    cores = {k: (after[k] - before[k]) / wall for k in before}
    print(f"{n} worker process(es): stream {stream:,.0f} rows/s; sync c{args.concurrency} {result.rps:,.0f} req/s, "
          f"p99 {result.p99_ms:.1f} ms, errors {result.errors}")  # fmt: skip
    return {"n": n, "stream": stream, "stream_cores": stream_cores, "rps": result.rps, "p99": result.p99_ms,
            "api_cores": cores["api"], "worker_cores": cores["worker"], "redis_cores": cores["redis"]}  # fmt: skip


def drain(onnx: bytes, *, redis_url: str, messages: int, worker: psutil.Process) -> tuple[float, float]:
    """``messages`` single-row requests XADDed onto the work stream; rows/s and worker cores until done."""
    import redis as redis_client

    names = Names(PREFIX)
    signature = read_signature(onnx)
    x = np.random.default_rng(2).normal(10, 3, size=(1, signature.n_features or 1)).astype(np.float32)
    tensors = encode_tensors({signature.inputs[0].name: x})
    client = redis_client.Redis.from_url(redis_url)
    stream = names.work_stream(names.partition("heavy", 1))
    encoded = [
        message_encoder.encode(
            InferRequest(
                id=f"d{i}-{time.monotonic_ns()}",
                tenant="default",
                model="heavy",
                version=1,
                inputs=tensors,
                rows=1,
                ttl_ms=600_000,
            )
        )
        for i in range(messages)
    ]
    cpu_before = cpu_seconds([worker])
    start = time.perf_counter()
    for chunk in range(0, messages, 1000):
        pipe = client.pipeline(transaction=False)
        for m in encoded[chunk : chunk + 1000]:
            pipe.xadd(stream, {"m": m})
        pipe.execute()
    while client.xlen(stream) > 0 and time.perf_counter() - start < 600:
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    cores = (cpu_seconds([worker]) - cpu_before) / elapsed
    client.close()
    return messages / elapsed, cores


if __name__ == "__main__":
    main()
