"""The result cache: sync predictions of the same inputs over and over, cache off vs on, side by side in one run.

Two versions of one model (``wine``, the 100-tree forest: the same ONNX bytes), ``wine@1`` without a result
cache and ``wine@2`` with ``result_cache_ttl_s`` (registered with the override), behind ``inferq serve
--workers 2`` and one ``inferq worker`` process for both. Each concurrency level is measured cache off, then
on, ``--rounds`` times interleaved (the medians are printed, so a busy moment of the machine does not land on
one side only). wrk sends one body, so once the first request filled the entry every call to ``wine@2`` is a
hit: answered by the API from Redis, no worker involved. Printed per side: req/s, p50/p99, errors, CPU µs per
request by process group (api, worker, redis), and, from the API's /metrics, the hit ratio of ``wine@2``.

Run: ``.venv/bin/python bench/result_cache.py [--seconds 8] [--concurrency 1,16,64] [--rounds 3]`` (needs wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from harness import auth_env, bearer, free_port, make_key, new_pepper, process, python, wait_http
from queue_path import PREFIX, _redis_pid, measure

from inferq.cli.demo import build
from inferq.embedded import started_services
from inferq.engine import read_signature
from inferq.settings import ServiceSettings
from inferq.store import migrate
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.registry import Registry

TTL_S = 3600


async def register(database_url: str, onnx: bytes) -> None:
    """``wine@1`` (no cache) and ``wine@2`` (cached), the same model."""
    await migrate.upgrade(database_url)
    engine = create_engine(database_url)
    registry = Registry(create_sessionmaker(engine))
    signature = read_signature(onnx)
    await registry.register(name="wine", model=onnx, signature=signature)
    await registry.register(name="wine", model=onnx, signature=signature, overrides={"result_cache_ttl_s": TTL_S})
    await engine.dispose()


def hit_ratio(metrics: str) -> tuple[float, float]:
    """(hits, misses) of ``wine@2`` in the API's exposition text (summed over its processes' lines)."""
    counts = {"hit": 0.0, "miss": 0.0}
    pattern = re.compile(r"^inferq_result_cache_requests_total\{(.*)\} ([\d.e+]+)$", re.M)
    for labels, value in pattern.findall(metrics):
        if 'model="wine"' in labels and 'version="2"' in labels:
            counts["hit" if 'outcome="hit"' in labels else "miss"] += float(value)
    return counts["hit"], counts["miss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="inferq-bench-cache-"))
    onnx = build("wine", 2).onnx
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
        redis = psutil.Process(_redis_pid(tmp / "state" / "redis"))
        run(env=env, tmp=tmp, levels=levels, seconds=args.seconds, rounds=args.rounds, redis=redis, headers=headers)


def run(
    *, env: dict[str, str], tmp: Path, levels: list[int], seconds: float, rounds: int, redis: Any, headers: Any
) -> None:
    width = 13  # the wine data's features
    body = json.dumps({"inputs": [list(np.round(np.random.default_rng(1).normal(10, 3, width), 3))]})
    port = free_port()
    serve = [python(), "-m", "inferq", "serve", "--port", str(port), "--workers", "2"]
    worker = [python(), "-m", "inferq", "worker", "--models", "wine@1,wine@2", "--processes", "1"]
    base = f"http://127.0.0.1:{port}"
    urls = {"off": f"{base}/v1/models/wine@1/predict", "on": f"{base}/v1/models/wine@2/predict"}
    print(f"# {os.cpu_count()} cores; wrk 2 threads, {seconds:.0f}s per run, {rounds} rounds (medians); one row, "
          f"the same body every request; wine@1 cache off, wine@2 result_cache_ttl_s={TTL_S}")  # fmt: skip
    results: dict[tuple[str, int], list[Any]] = {}
    with process(serve, env=env, log=tmp / "api.log") as api, process(worker, env=env, log=tmp / "worker.log") as wk:
        wait_http(f"{base}/health/ready")
        _wait_versions(f"{base}/v1/models/wine", headers=headers)
        first = httpx.post(urls["on"], content=body, headers={**headers, "content-type": "application/json"})
        if first.status_code != 200 or "cached" in first.json():  # the first one fills the entry
            raise RuntimeError(f"the first request was not a miss answered by the worker: {first.text}")
        groups = {"api": [api], "worker": [wk], "redis": [redis]}
        for _ in range(rounds):
            for c in levels:
                for side in ("off", "on"):
                    results.setdefault((side, c), []).append(measure(urls[side], body, c, seconds, groups,
                                                                     headers=headers))  # fmt: skip
        hits, misses = hit_ratio(httpx.get(f"{base}/metrics").text)
    print(f"{'cache':<5} {'c':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  CPU µs/request by process")
    for c in levels:
        for side in ("off", "on"):
            runs = results[(side, c)]
            rps = statistics.median(r.rps for r, _, _ in runs)
            p50 = statistics.median(r.p50_ms for r, _, _ in runs)
            p99 = statistics.median(r.p99_ms for r, _, _ in runs)
            errors = sum(r.errors for r, _, _ in runs)
            cpu = {k: statistics.median(cpu[k] for _, cpu, _ in runs) for k in runs[0][1]}
            split = " ".join(f"{k}={v:.0f}" for k, v in cpu.items())
            print(f"{side:<5} {c:>3} {rps:>9,.0f} {p50:>8.2f} {p99:>8.2f} {errors:>6}  {split}")
        on = statistics.median(r.rps for r, _, _ in results[("on", c)])
        off = statistics.median(r.rps for r, _, _ in results[("off", c)])
        print(f"{'':<5} {c:>3} on/off throughput {on / off:.2f}x")
    total = hits + misses
    print(f"wine@2 result cache: {hits:,.0f} hits, {misses:,.0f} misses, hit ratio {hits / total if total else 0:.4f}")


def _wait_versions(url: str, *, headers: Any, timeout: float = 120) -> None:
    """Until ``GET url`` (a model) says every one of its versions is ready (a worker consumes it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(url, timeout=2, headers=headers)
        if r.status_code == 200 and all(v["ready"] for v in r.json()["versions"]):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url}: not every version became ready")


if __name__ == "__main__":
    main()
