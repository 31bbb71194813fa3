"""Model management figures (issue 6): upload to first prediction, canary share, sticky routing keys.

One run, its own embedded Redis and Postgres, ``inferq serve --workers 2`` and ``inferq worker --all``:

- **upload → first prediction**: ``--uploads`` times, a new version of ``iris`` is uploaded over HTTP
  (``POST /v1/models/iris/versions``, validated in the API's child process) and predicted at once
  (``POST /v1/models/iris@N/predict`` with ``Prefer: wait=60``): the wall time from the upload's first
  byte to that 200, which includes the workers' discovery of the version and their model load. Median
  and spread printed, and the upload call's own share.
- **canary**: ``default`` split 95/5 across two versions; ``--requests`` predictions without a routing
  key; the observed share of the canary (expect 5% ± 1%).
- **sticky keys**: ``--keys`` distinct ``X-Routing-Key`` values, each sent twice (second pass after the
  first); keys that got a different version the second time (expect 0), and the canary's share of keys.

Run: ``.venv/bin/python bench/model_management.py [--uploads 5] [--requests 10000] [--keys 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from harness import auth_env, bearer, free_port, make_key, new_pepper, process, python, wait_http
from queue_path import PREFIX

from inferq.embedded import started_services
from inferq.settings import ServiceSettings
from inferq.store import migrate

ROW = [[5.1, 3.5, 1.4, 0.2]]


def iris_models(count: int) -> list[bytes]:
    """``count`` distinct logistic regressions on iris (different C), as ONNX."""
    import warnings

    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from inferq.engine import convert_sklearn

    data = load_iris()
    x = np.asarray(data.data, dtype=np.float32)
    names = [n.replace(" ", "_").replace("(", "").replace(")", "") for n in data.feature_names]
    models = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(count):
            fitted = LogisticRegression(C=0.1 * (i + 1), max_iter=500).fit(x, data.target)
            models.append(
                convert_sklearn(fitted, n_features=4, feature_names=names, class_names=list(data.target_names))
            )
    return models


async def upload(client: httpx.AsyncClient, onnx: bytes) -> int:
    response = await client.post("/v1/models/iris/versions", files={"file": ("iris.onnx", onnx)})
    if response.status_code != 201:
        raise RuntimeError(f"upload: {response.status_code} {response.text}")
    return int(response.json()["version"])


async def first_prediction(client: httpx.AsyncClient, onnx: bytes) -> tuple[float, float, int]:
    """Seconds from the upload's start to its 201, and to the first 200 of the new version."""
    started = time.perf_counter()
    version = await upload(client, onnx)
    uploaded = time.perf_counter() - started
    response = await client.post(
        f"/v1/models/iris@{version}/predict", json={"inputs": ROW}, headers={"Prefer": "wait=60"}, timeout=90
    )
    if response.status_code != 200 or response.json()["version"] != version:
        raise RuntimeError(f"first prediction on v{version}: {response.status_code} {response.text}")
    return uploaded, time.perf_counter() - started, version


async def versions_served(
    client: httpx.AsyncClient, count: int, *, keys: list[str] | None = None, concurrency: int = 32
) -> list[int]:
    """The version that answered each of ``count`` predictions of ``iris`` (with ``keys[i]`` as routing key)."""
    served: list[int] = [0] * count
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def one_client() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            headers = {"X-Routing-Key": keys[i]} if keys else {}
            response = await client.post("/v1/models/iris/predict", json={"inputs": ROW}, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"predict: {response.status_code} {response.text}")
            served[i] = int(response.json()["version"])

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return served


async def measure(base: str, headers: dict[str, str], args: argparse.Namespace) -> None:
    models = iris_models(args.uploads + 1)
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as client:
        await upload(client, models[0])  # version 1: the model exists, `default` pins it
        await versions_served(client, 1)
        timings = [await first_prediction(client, onnx) for onnx in models[1:]]
        totals = sorted(t for _, t, _ in timings)
        print(f"\n## upload → first served prediction ({args.uploads} uploads, workers --all)")
        for uploaded, total, version in timings:
            print(f"v{version}: upload {uploaded * 1000:,.0f} ms, first prediction at {total * 1000:,.0f} ms")
        print(f"median {statistics.median(totals) * 1000:,.0f} ms (min {totals[0] * 1000:,.0f}, "
              f"max {totals[-1] * 1000:,.0f})")  # fmt: skip

        stable, canary = 1, timings[-1][2]
        response = await client.put("/v1/models/iris/aliases/default", json={"weights": {str(stable): 95,
                                                                                         str(canary): 5}})  # fmt: skip
        response.raise_for_status()
        await asyncio.sleep(1.5)  # every API process has the new weights (they agree within a second)
        started = time.perf_counter()
        served = Counter(await versions_served(client, args.requests))
        elapsed = time.perf_counter() - started
        share = served[canary] / args.requests
        print(f"\n## canary 95/5 over {args.requests:,} requests without routing keys ({elapsed:.1f} s)")
        print(f"versions: {dict(served)}; canary share {share:.2%} (expected 5% ± 1%: "
              f"{'within' if abs(share - 0.05) <= 0.01 else 'OUTSIDE'})")  # fmt: skip

        keys = [f"user-{i}" for i in range(args.keys)]
        first = await versions_served(client, args.keys, keys=keys)
        second = await versions_served(client, args.keys, keys=keys)
        switched = sum(a != b for a, b in zip(first, second, strict=True))
        keyed = sum(v == canary for v in first) / args.keys
        print(f"\n## sticky routing: {args.keys:,} keys sent twice")
        print(f"keys that switched version: {switched}; keys on the canary: {keyed:.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=5)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=1_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="inferq-models-"))
    with started_services(ServiceSettings(state_dir=tmp / "state"), persist=False) as services:
        assert services.redis_url
        assert services.database_url
        asyncio.run(migrate.upgrade(services.database_url))
        pepper = new_pepper()
        headers = bearer(asyncio.run(make_key(services.database_url, pepper)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
        env.update(
            INFERQ_REDIS_URL=services.redis_url, INFERQ_DATABASE_URL=services.database_url,
            INFERQ_KEY_PREFIX=PREFIX, INFERQ_MODEL_ROOT=str(tmp / "models"), INFERQ_LOG_LEVEL="warning",
            INFERQ_DEV="true", **auth_env(pepper),
        )  # fmt: skip
        port = free_port()
        serve = [python(), "-m", "inferq", "serve", "--port", str(port), "--workers", "2"]
        worker = [python(), "-m", "inferq", "worker", "--all"]
        with process(serve, env=env, log=tmp / "api.log"), process(worker, env=env, log=tmp / "worker.log"):
            wait_http(f"http://127.0.0.1:{port}/health/ready")
            asyncio.run(measure(f"http://127.0.0.1:{port}", headers, args))
    print(f"\n# logs in {tmp}")


if __name__ == "__main__":
    main()
