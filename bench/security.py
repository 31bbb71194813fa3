"""What API keys and per-key quotas cost, and how exact and how fair the quotas are — in one run.

Same embedded Redis and Postgres, same model (``wine@2``, a 100-tree forest), one worker process:

1. **cost**: sync predict throughput and p50 with wrk at ``--concurrency`` through ``inferq serve
   --workers 2`` as shipped (key checked, quota spent in the admission script), against the same
   server with both bypassed (``unguarded_serve.py``: a fixed caller, the plain admission script) —
   target: ≤ 10 % fewer requests/s.
2. **exactness**: two API processes, one key limited to ``--rate`` requests/s (burst 10), hammered by
   wrk far above it for ``--seconds``: requests admitted vs the quota's ``rate × seconds + burst``
   (target: within 2 %).
3. **fairness**: a quiet key at half its quota (an open-loop client at a fixed rate) measured alone,
   then beside a noisy key sending 10× its own quota (open-loop too): the quiet key's p99, with vs
   alone (target: ≤ 1.2×).
4. **timing**: response time of a wrong key id vs a wrong secret for a known id, both after the first
   lookup (cached) and on first sight (a Postgres lookup each): not an order of magnitude apart.

Run: ``.venv/bin/python bench/security.py [--seconds 8] [--concurrency 32] [--rate 200]`` (needs ``wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from harness import free_port, process, python, wait_http, wrk
from queue_path import _wait_ready, register

from inferq.cli.demo import build
from inferq.contracts.auth import SCOPES, TenantLimits
from inferq.embedded import started_services
from inferq.settings import ServiceSettings
from inferq.store.database import create_engine, create_sessionmaker
from inferq.store.keys import KeyHasher, KeyStore

PEPPER = secrets.token_hex(32)
BURST = 10  # the limited key's burst: with 1, every late arrival's slack is lost (GCRA never lends it back)
BODY = json.dumps({"inputs": [[13.2, 1.78, 2.14, 11.2, 100, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050]]})


async def make_keys(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    store = KeyStore(create_sessionmaker(engine), hasher=KeyHasher(PEPPER))
    keys = {"free": (await store.create(tenant="bench", scopes=SCOPES)).key}
    for tenant, limits in {
        "limited": TenantLimits(rate_per_s=ARGS.rate, burst=BURST, concurrency=1_000_000),
        "noisy": TenantLimits(rate_per_s=ARGS.fair_rate, burst=int(ARGS.fair_rate), concurrency=1_000_000),
        "quiet": TenantLimits(rate_per_s=ARGS.fair_rate, burst=int(ARGS.fair_rate), concurrency=1_000_000),
    }.items():
        await store.set_limits(tenant, limits)
        keys[tenant] = (await store.create(tenant=tenant, scopes=("predict",))).key
    await engine.dispose()
    return keys


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="inferq-security-"))
    with started_services(ServiceSettings(state_dir=tmp / "state"), persist=False) as services:
        assert services.redis_url
        assert services.database_url
        asyncio.run(register(services.database_url, {"wine": build("wine", 2).onnx}))
        keys = asyncio.run(make_keys(services.database_url))
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
        env.update(
            INFERQ_REDIS_URL=services.redis_url, INFERQ_DATABASE_URL=services.database_url, INFERQ_KEY_PREFIX="sec",
            INFERQ_MODEL_ROOT=str(tmp / "models"), INFERQ_LOG_LEVEL="warning", INFERQ_ADMISSION_LIMIT="100000",
            INFERQ_API_KEY_PEPPER=PEPPER, INFERQ_KEY_RATE_PER_S="1000000", INFERQ_KEY_BURST="1000000",
            INFERQ_KEY_CONCURRENCY="1000000", INFERQ_DEV="true", PYTHONPATH=str(Path(__file__).resolve().parent),
        )  # fmt: skip
        worker = [python(), "-m", "inferq", "worker", "--models", "wine@1", "--processes", "1"]
        with process(worker, env=env, log=tmp / "worker.log"):
            cost(env, tmp, keys)
            exactness(env, tmp, keys)
            fairness(env, tmp, keys)
            timing(env, tmp, keys)


def serving(env: dict[str, str], tmp: Path, *, unguarded: bool = False):  # type: ignore[no-untyped-def]
    port = free_port()
    entry = [python(), str(Path(__file__).with_name("unguarded_serve.py"))] if unguarded else [python(), "-m", "inferq"]
    command = [*entry, "serve", "--port", str(port), "--workers", "2"]
    return port, process(command, env=env, log=tmp / f"api-{port}.log")


def cost(env: dict[str, str], tmp: Path, keys: dict[str, str]) -> None:
    print(f"## cost of keys + quotas: wrk c{ARGS.concurrency}, {ARGS.seconds:.0f}s, sync predict wine@1")
    rows = {}
    rounds = [(f"{label} {i}", flag) for i in (1, 2, 3) for label, flag in (("guarded", False), ("unguarded", True))]
    for label, unguarded in rounds:
        port, proc = serving(env, tmp, unguarded=unguarded)
        with proc:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/health/ready")
            _wait_ready(f"{base}/v1/models/wine", headers=auth(keys["free"]))
            url = f"{base}/v1/models/wine@1/predict"
            wrk(url, BODY, connections=ARGS.concurrency, seconds=2, headers=auth(keys["free"]))  # warm-up
            rows[label] = wrk(url, BODY, connections=ARGS.concurrency, seconds=ARGS.seconds, headers=auth(keys["free"]))
    for label, r in rows.items():
        print(f"  {label:<14} {r.rps:>8,.0f} req/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms  errors {r.errors}")
    guarded = statistics.median(r.rps for label, r in rows.items() if label.startswith("guarded"))
    unguarded = statistics.median(r.rps for label, r in rows.items() if label.startswith("unguarded"))
    print(f"  guarded / unguarded throughput (medians of three interleaved rounds each): {guarded / unguarded:.3f} "
          f"(cost {100 * (1 - guarded / unguarded):.1f} %; target ≤ 10 %)")  # fmt: skip


def exactness(env: dict[str, str], tmp: Path, keys: dict[str, str]) -> None:
    port, proc = serving(env, tmp)
    with proc:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health/ready")
        result = wrk(f"{base}/v1/models/wine@1/predict", BODY, connections=ARGS.concurrency, seconds=ARGS.seconds,
                     headers=auth(keys["limited"]))  # fmt: skip
    admitted = result.requests - result.errors
    allowed = ARGS.rate * ARGS.seconds + BURST
    print(f"\n## exactness: one key at {ARGS.rate:g}/s (burst {BURST}) over 2 API processes, {ARGS.seconds:.0f}s")
    print(f"  offered {result.rps:,.0f} req/s = {result.rps / ARGS.rate:.1f}x the quota; admitted {admitted:,} "
          f"vs quota {allowed:,.0f}: {100 * (admitted - allowed) / allowed:+.2f} % (target within 2 %)")  # fmt: skip


async def open_loop(url: str, key: str, *, rate: float, seconds: float) -> list[float]:
    """Requests at a fixed rate (not waiting for answers); their latencies in ms (successes only)."""
    latencies: list[float] = []
    async with httpx.AsyncClient(headers=auth(key), timeout=30, limits=httpx.Limits(max_connections=200)) as client:

        async def one() -> None:
            started = time.perf_counter()
            response = await client.post(url, content=BODY, headers={"content-type": "application/json"})
            if response.status_code == 200:
                latencies.append((time.perf_counter() - started) * 1000)

        tasks, begin = [], time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies


def fairness(env: dict[str, str], tmp: Path, keys: dict[str, str]) -> None:
    """Both clients open-loop (fixed rates, as traffic arrives): quiet at half its quota, noisy at 10×."""
    port, proc = serving(env, tmp)
    quiet_rate, noisy_rate = ARGS.fair_rate / 2, ARGS.fair_rate * 10
    with proc:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health/ready")
        url = f"{base}/v1/models/wine@1/predict"
        asyncio.run(open_loop(url, keys["quiet"], rate=quiet_rate, seconds=1))  # warm-up
        alone = asyncio.run(open_loop(url, keys["quiet"], rate=quiet_rate, seconds=ARGS.seconds))

        async def both() -> tuple[list[float], list[float]]:
            quiet, noisy = await asyncio.gather(
                open_loop(url, keys["quiet"], rate=quiet_rate, seconds=ARGS.seconds),
                open_loop(url, keys["noisy"], rate=noisy_rate, seconds=ARGS.seconds),
            )
            return quiet, noisy

        beside, noisy_ok = asyncio.run(both())
    p99_alone, p99_beside = _p99(alone), _p99(beside)
    print(f"\n## fairness: quiet key at {quiet_rate:g}/s (half its quota of {ARGS.fair_rate:g}/s), noisy key at "
          f"{noisy_rate:g}/s (10x the same quota), both open-loop")  # fmt: skip
    sent = int(quiet_rate * ARGS.seconds)
    print(f"  quiet p99 alone {p99_alone:.2f} ms, beside the noisy one {p99_beside:.2f} ms: "
          f"{p99_beside / p99_alone:.2f}x (target ≤ 1.2x); quiet answered {len(beside)}/{sent}, "
          f"noisy admitted {len(noisy_ok)}/{int(noisy_rate * ARGS.seconds)}")  # fmt: skip


def timing(env: dict[str, str], tmp: Path, keys: dict[str, str]) -> None:
    port, proc = serving(env, tmp)
    known_id = keys["free"].split("_")[1]
    with proc, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        wait_http(f"http://127.0.0.1:{port}/health/ready")

        def probe(key: str) -> float:
            started = time.perf_counter()
            response = client.get("/v1/jobs", headers=auth(key))
            assert response.status_code == 401, response.text
            return (time.perf_counter() - started) * 1000

        first_id = [probe(f"iq_{secrets.token_hex(8)}_" + "0" * 48) for _ in range(20)]
        wrong_id_key = f"iq_{secrets.token_hex(8)}_" + "0" * 48
        wrong_secret_key = f"iq_{known_id}_" + secrets.token_hex(24)
        probe(wrong_id_key), probe(wrong_secret_key)
        wrong_id = [probe(wrong_id_key) for _ in range(300)]
        wrong_secret = [probe(wrong_secret_key) for _ in range(300)]
    print("\n## timing of a 401 (ms, median over requests; cached = the id's lookup is in the cache)")
    by_id, by_secret = statistics.median(wrong_id), statistics.median(wrong_secret)
    print(f"  wrong id, cached {by_id:.3f}; wrong secret, cached {by_secret:.3f}; ratio {by_secret / by_id:.2f}")
    print(f"  unknown id on first sight (a Postgres lookup) {statistics.median(first_id):.3f}")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("nan")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--fair-rate", type=float, default=40.0, help="the quiet and noisy keys' quota (req/s)")
    ARGS = parser.parse_args()
    main()
