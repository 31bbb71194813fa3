"""The queue path against a naive in-process server, side by side, in one run.

For each model (``wine@2``: 100-tree forest; ``heavy@1``: an MLP with three 1024-wide hidden layers,
trained here) and each concurrency (1, 16, 64): wrk against

- **naive**: Litestar handler calling ONNX Runtime directly (bench/naive_server.py), 2 uvicorn workers;
- **queue**: ``inferq serve --workers 2`` + one ``inferq worker`` process, through Redis Streams.

Also: stream throughput (100k single-row messages XADDed straight onto the work stream) as a ratio of
the engine's in-process rows/s at batch 64, and, under c64 load, the batch-size histogram and the
queue-wait vs inference split (sampled from response timings). CPU per request is printed per process
group so the gap is explained. Services are embedded ones of this run's own (no shared server). inferq is
called with an API key of the run's own (every scope, quotas far above the load: ``harness.auth_env``); the
naive server gets the same header and ignores it.

Run: ``.venv/bin/python bench/queue_path.py [--seconds 8] [--concurrency 1,16,64]`` (needs ``wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from harness import auth_env, bearer, cpu_seconds, free_port, make_key, new_pepper, process, python, wait_http, wrk

from inferq.cli.demo import build
from inferq.contracts.messages import InferRequest, message_encoder
from inferq.contracts.names import Names
from inferq.embedded import started_services
from inferq.engine import Runner, read_signature, to_predictions
from inferq.inputs import encode_tensors
from inferq.settings import EngineSettings, ServiceSettings
from inferq.store import migrate
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.registry import Registry

PREFIX = "bench"


def heavy_model() -> bytes:
    """An MLP with three 1024-wide hidden layers on the wine data: ≥ 300 µs per row at batch 1."""
    import warnings

    from sklearn.datasets import load_wine
    from sklearn.neural_network import MLPClassifier

    from inferq.engine import convert_sklearn

    data = load_wine()
    x = np.asarray(data.data, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few iterations on purpose: speed, not accuracy, is measured
        model = MLPClassifier(hidden_layer_sizes=(1024, 1024, 1024), max_iter=3, random_state=0).fit(x, data.target)
    names = [str(n).replace("/", "_") for n in data.feature_names]
    return convert_sklearn(model, n_features=x.shape[1], feature_names=names, class_names=list(data.target_names))


async def register(database_url: str, models: dict[str, bytes]) -> None:
    await migrate.upgrade(database_url)
    engine = create_engine(database_url)
    registry = Registry(create_sessionmaker(engine))
    for name, onnx in models.items():
        await registry.register(name=name, model=onnx, signature=read_signature(onnx))
    await engine.dispose()


def engine_rows_per_s(onnx: bytes, *, batch: int, seconds: float = 2.0) -> tuple[float, float]:
    """In-process rows/s (run + postprocess) at ``batch``, and µs per row at batch 1."""
    runner = Runner.load(onnx, settings=EngineSettings(intra_op_threads=1))
    width = runner.signature.n_features or 1
    x = np.random.default_rng(0).normal(size=(batch, width)).astype(np.float32)
    feeds, one = {runner.signature.inputs[0].name: x}, {runner.signature.inputs[0].name: x[:1]}
    rates = []
    for f, rows in ((feeds, batch), (one, 1)):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2:
            to_predictions(runner.signature, runner.run(f))
            n += 1
        rates.append(n * rows / (time.perf_counter() - start))
    return rates[0], 1e6 / rates[1]


async def sample_timings(
    url: str, body: str, *, n: int, headers: Mapping[str, str], concurrency: int = 8
) -> list[dict[str, Any]]:
    """Response timings of ``n`` requests sent while wrk loads the server."""
    out: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30, headers=dict(headers)) as client:

        async def one() -> None:
            while len(out) < n:
                r = await client.post(url, content=body, headers={"content-type": "application/json"})
                if r.status_code == 200:
                    out.append(r.json()["timings"])

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--models", default="wine,heavy")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="inferq-bench-"))
    onnx = {"wine": build("wine", 2).onnx, "heavy": heavy_model()}
    onnx = {k: v for k, v in onnx.items() if k in args.models.split(",")}
    for name, data in onnx.items():
        (tmp / f"{name}.onnx").write_bytes(data)

    with started_services(ServiceSettings(state_dir=tmp / "state"), persist=False) as services:
        assert services.redis_url
        assert services.database_url
        asyncio.run(register(services.database_url, onnx))
        pepper = new_pepper()
        headers = bearer(asyncio.run(make_key(services.database_url, pepper)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
        env.update(
            INFERQ_REDIS_URL=services.redis_url, INFERQ_DATABASE_URL=services.database_url,
            INFERQ_KEY_PREFIX=PREFIX, INFERQ_MODEL_ROOT=str(tmp / "models"), INFERQ_LOG_LEVEL="warning",
            INFERQ_ADMISSION_LIMIT="100000", PYTHONPATH=str(Path(__file__).resolve().parent), **auth_env(pepper),
        )  # fmt: skip
        redis_pid = _redis_pid(tmp / "state" / "redis")
        print(f"# {os.cpu_count()} cores; wrk 2 threads, {args.seconds:.0f}s per run; one row per request")
        for name, data in onnx.items():
            run_model(
                name, data, env=env, tmp=tmp, levels=levels, seconds=args.seconds, redis_pid=redis_pid, headers=headers
            )
        if "wine" in onnx:
            stream_throughput(onnx["wine"], env=env, tmp=tmp, messages=args.messages, redis_url=services.redis_url)


def run_model(
    name: str,
    onnx: bytes,
    *,
    env: dict[str, str],
    tmp: Path,
    levels: list[int],
    seconds: float,
    redis_pid: int,
    headers: Mapping[str, str],
) -> None:
    import psutil

    runner = Runner.load(onnx, settings=EngineSettings())
    width = runner.signature.n_features or 1
    body = json.dumps({"inputs": [list(np.round(np.random.default_rng(1).normal(10, 3, width), 3))]})
    _, per_row_us = engine_rows_per_s(onnx, batch=1, seconds=1.0)
    print(f"\n## {name}@1: {per_row_us:.0f} µs per row in-process at batch 1")
    naive_port, api_port = free_port(), free_port()
    naive_env = {**env, "BENCH_MODEL_FILE": str(tmp / f"{name}.onnx")}
    naive_cmd = [python(), "-m", "uvicorn", "naive_server:app", "--port", str(naive_port), "--workers", "2",
                 "--log-level", "warning", "--no-access-log"]  # fmt: skip
    results: dict[tuple[str, int], Any] = {}
    with process(naive_cmd, env=naive_env, log=tmp / "naive.log") as naive:
        wait_http(f"http://127.0.0.1:{naive_port}/schema")
        for c in levels:
            results[("naive", c)] = measure(
                f"http://127.0.0.1:{naive_port}/v1/models/{name}/predict", body, c, seconds, {"naive": [naive]},
                headers=headers,
            )  # fmt: skip
    serve = [python(), "-m", "inferq", "serve", "--port", str(api_port), "--workers", "2"]
    worker = [python(), "-m", "inferq", "worker", "--models", f"{name}@1", "--processes", "1"]
    url = f"http://127.0.0.1:{api_port}/v1/models/{name}@1/predict"
    with process(serve, env=env, log=tmp / "api.log") as api, process(worker, env=env, log=tmp / "worker.log") as wk:
        wait_http(f"http://127.0.0.1:{api_port}/health/ready")
        _wait_ready(f"http://127.0.0.1:{api_port}/v1/models/{name}", headers=headers)
        groups = {"api": [api], "worker": [wk], "redis": [psutil.Process(redis_pid)]}
        for c in levels:
            results[("queue", c)] = measure(url, body, c, seconds, groups, headers=headers, sample=c == max(levels))
    print(f"{'path':<6} {'c':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  CPU µs/request by process")
    for c in levels:
        for path in ("naive", "queue"):
            r, cpu, _ = results[(path, c)]
            split = " ".join(f"{k}={v:.0f}" for k, v in cpu.items())
            print(f"{path:<6} {c:>3} {r.rps:>9,.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.errors:>6}  {split}")
        q, n = results[("queue", c)][0], results[("naive", c)][0]
        print(f"{'':<6} {c:>3} queue/naive throughput {q.rps / n.rps:.2f}x, p50 {q.p50_ms - n.p50_ms:+.2f} ms")
    samples = results[("queue", max(levels))][2]
    if samples:
        hist = collections.Counter(t["batch_rows"] for t in samples)
        print(f"batch rows under c{max(levels)} ({len(samples)} sampled responses): "
              + ", ".join(f"{k}:{v}" for k, v in sorted(hist.items())))  # fmt: skip
        print(
            "median ms: queue "
            f"{statistics.median(t['queue_ms'] for t in samples):.2f}, inference "
            f"{statistics.median(t['inference_ms'] for t in samples):.2f}, total "
            f"{statistics.median(t['total_ms'] for t in samples):.2f}"
        )


def measure(
    url: str,
    body: str,
    c: int,
    seconds: float,
    groups: dict[str, list[Any]],
    *,
    headers: Mapping[str, str],
    sample: bool = False,
) -> Any:
    before = {k: cpu_seconds(v) for k, v in groups.items()}
    samples: list[dict[str, Any]] = []
    if sample:
        import threading

        def sampled() -> None:
            samples.extend(asyncio.run(sample_timings(url, body, n=300, headers=headers)))

        thread = threading.Thread(target=sampled)
        thread.start()
    result = wrk(url, body, connections=c, seconds=seconds, headers=headers)
    if sample:
        thread.join()
    cpu = {k: (cpu_seconds(v) - before[k]) / max(result.requests, 1) * 1e6 for k, v in groups.items()}
    return result, cpu, samples


def stream_throughput(onnx: bytes, *, env: dict[str, str], tmp: Path, messages: int, redis_url: str) -> None:
    """100k single-row InferRequests XADDed straight to the work stream; rows/s until all are done."""
    import redis

    names = Names(PREFIX)
    engine_rate, _ = engine_rows_per_s(onnx, batch=64)
    runner = Runner.load(onnx, settings=EngineSettings())
    width = runner.signature.n_features or 1
    x = np.random.default_rng(2).normal(10, 3, size=(1, width)).astype(np.float32)
    tensors = encode_tensors({runner.signature.inputs[0].name: x})
    client = redis.Redis.from_url(redis_url)
    stream = names.work_stream(names.partition("wine", 1))
    worker = [python(), "-m", "inferq", "worker", "--models", "wine@1", "--processes", "1"]
    with process(worker, env=env, log=tmp / "worker-stream.log"):
        time.sleep(3)
        start = time.perf_counter()
        for chunk in range(0, messages, 1000):
            pipe = client.pipeline(transaction=False)
            for i in range(chunk, min(chunk + 1000, messages)):
                req = InferRequest(id=f"s{i}", tenant="default", model="wine", version=1, inputs=tensors,
                                   rows=1, ttl_ms=600_000)  # fmt: skip
                pipe.xadd(stream, {"m": message_encoder.encode(req)})
            pipe.execute()
        produced = time.perf_counter() - start
        while client.xlen(stream) > 0 and time.perf_counter() - start < 600:
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
    rate = messages / elapsed
    print(f"\n## stream throughput: {messages:,} single-row messages in {elapsed:.2f}s (produced in {produced:.2f}s)")
    print(f"{rate:,.0f} rows/s through the stream vs engine in-process at batch 64 {engine_rate:,.0f} rows/s "
          f"= {rate / engine_rate:.2f}x")  # fmt: skip


def _wait_ready(url: str, timeout: float = 60, *, headers: Mapping[str, str]) -> None:
    """Until ``GET url`` (a model, with an API key in ``headers``) says it is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(url, timeout=2, headers=headers)
        if r.status_code == 200 and r.json().get("ready"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} never became ready")


def _redis_pid(data_dir: Path) -> int:
    return int(json.loads((data_dir / "server.json").read_text())["pid"])


if __name__ == "__main__":
    main()
