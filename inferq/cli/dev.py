"""``inferq dev``: the whole system on one machine, with demo models, until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator

import httpx
import msgspec
from sqlalchemy import text

from inferq.cli import demo
from inferq.cli.keys import DEV_KEY_FILE, dev_key, resolve_pepper
from inferq.cli.models import cache_locally
from inferq.cli.output import say
from inferq.cli.runtime import Runtime, opened
from inferq.errors import ModelNotFound, ServiceUnavailable
from inferq.settings import Settings, redacted_url
from inferq.store.keys import KeyHasher, KeyStore

SEED_LOCK = 0x696E666572710001  # "inferq" + 1: serialises concurrent `inferq dev` seeding
EXAMPLE_WINE = (
    '[{"alcohol": 13.2, "malic_acid": 1.78, "ash": 2.14, "alcalinity_of_ash": 11.2, "magnesium": 100, '
    '"total_phenols": 2.65, "flavanoids": 2.76, "nonflavanoid_phenols": 0.26, "proanthocyanins": 1.28, '
    '"color_intensity": 4.38, "hue": 1.05, "od280_od315_of_diluted_wines": 3.4, "proline": 1050}]'
)


async def run_dev(settings: Settings, *, exit_after_setup: bool = False) -> int:
    """Services (embedded when unset), migrations, demo models, then the API and workers until Ctrl-C.

    ``exit_after_setup``: start everything, check that a prediction is answered over HTTP, stop.
    """
    settings = resolve_pepper(msgspec.structs.replace(settings, dev=True))
    assert settings.auth.api_key_pepper is not None
    async with opened(settings, redis=True) as rt:
        await seed_demo_models(rt)
        key = await dev_key(settings, KeyStore(rt.sessions, hasher=KeyHasher(settings.auth.api_key_pepper)))
        env = _child_env(rt, pepper=settings.auth.api_key_pepper)
        base = f"http://{settings.host}:{settings.port}"
        async with _children(env) as children:
            await _wait_ready(base, children, key)
            await _print_tour(rt, base, key)
            if exit_after_setup:
                await _smoke(base, key)
                return 0
            say("inferq dev is running: API, workers, tasks, direct producer 'demo'. Ctrl-C stops everything.")
            return await _wait_for_signal_or_exit(children)


async def seed_demo_models(rt: Runtime) -> None:
    """Register every demo version that is missing (idempotent; one seeder at a time)."""
    async with rt.engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SEED_LOCK})
        try:
            await _seed(rt)
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SEED_LOCK})


async def _seed(rt: Runtime) -> None:
    root = rt.artifacts.root / "demo"
    root.mkdir(parents=True, exist_ok=True)
    for name, version in demo.DEMO_MODELS:
        if await _has_version(rt, name, version):
            continue
        say(f"training demo model {name}@{version} …")
        model = demo.build(name, version)
        (root / f"{name}-{version}.onnx").write_bytes(model.onnx)
        from inferq.engine import read_signature

        registered = await rt.registry.register(
            name=name,
            model=model.onnx,
            signature=read_signature(model.onnx),
            description=model.description,
            aliases=model.aliases,
        )
        cache_locally(rt, registered.sha256, model.onnx)
        if registered.version != version:
            say(f"note: {name} already had other versions; demo {name}@{version} is {registered.key}")


async def _has_version(rt: Runtime, name: str, version: int) -> bool:
    try:
        info = await rt.registry.get_model(name)
    except ModelNotFound:
        return False
    return any(v.version == version for v in info.versions)


def _child_env(rt: Runtime, *, pepper: str) -> dict[str, str]:
    """Children use this command's (possibly embedded) servers, and accept the demo producer."""
    env = dict(os.environ)
    env["INFERQ_REDIS_URL"] = rt.services.redis_url or ""
    env["INFERQ_DATABASE_URL"] = rt.services.database_url or ""
    env.setdefault("INFERQ_PRODUCERS", "demo=default")
    env.setdefault("INFERQ_WEBHOOK_ALLOW_PRIVATE", "true")
    env.setdefault("INFERQ_DEV", "true")
    env["INFERQ_API_KEY_PEPPER"] = pepper
    return env


@contextlib.asynccontextmanager
async def _children(env: dict[str, str]) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """``inferq serve``, ``inferq worker --all`` and ``inferq tasks`` as child processes, stopped (drained) on exit."""
    commands = (["serve"], ["worker", "--all"], ["tasks"])
    children = [await asyncio.create_subprocess_exec(sys.executable, "-m", "inferq", *c, env=env) for c in commands]
    try:
        yield children
    finally:
        for child in children:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), timeout=30)
            except TimeoutError:
                child.kill()
                await child.wait()


async def _wait_ready(base: str, children: list[asyncio.subprocess.Process], key: str, timeout_s: float = 60) -> None:
    """Until the API is ready and every demo partition has a live consumer."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base, timeout=2, headers={"Authorization": f"Bearer {key}"}) as client:
        while time.monotonic() < deadline:
            if any(c.returncode is not None for c in children):
                raise ServiceUnavailable("the API, workers or tasks exited during startup (see their logs above)")
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get("/v1/models")
                if response.status_code in (401, 403):  # never a race: the key itself is wrong
                    raise ServiceUnavailable(f"the development key was refused: {response.text}")
                models = response.json().get("models", []) if response.status_code == 200 else []
                if models and all(m.get("ready") for m in models):
                    return
            await asyncio.sleep(0.25)
    raise ServiceUnavailable(f"the API at {base} was not ready within {timeout_s:.0f}s")


async def _smoke(base: str, key: str) -> None:
    """One prediction and one small job over HTTP through the queue: the check behind ``inferq dev --exit``."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        response = await client.post("/v1/models/iris/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]})
        if response.status_code != 200:
            raise ServiceUnavailable(f"smoke prediction answered {response.status_code}: {response.text}")
        say(f"smoke test: POST /v1/models/iris/predict → 200 {response.json()['predictions'][0]['class_name']}")
        job = (await client.post("/v1/jobs", json={"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]] * 3})).json()
        deadline = time.monotonic() + 30
        while job.get("status") in ("queued", "running") and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            job = (await client.get(f"/v1/jobs/{job['id']}")).json()
    if job.get("status") != "succeeded":
        raise ServiceUnavailable(f"smoke job ended {job.get('status')}: {job}")
    say(f"smoke test: POST /v1/jobs (3 rows) → {job['status']} {job['counts']}")


async def _print_tour(rt: Runtime, base: str, key: str) -> None:
    say("\nregistered models:")
    for model in await rt.registry.list_models():
        aliases = ", ".join(f"@{a.name}→{_weights(a.weights)}" for a in model.aliases)
        versions = ", ".join(f"{v.version} ({v.signature.task}, {v.status})" for v in model.versions)
        say(f"  {model.name:<10} versions {versions}; aliases {aliases}")
    redis, postgres = redacted_url(rt.services.redis_url), redacted_url(rt.services.database_url)
    say(f"\nservices: redis {redis}\n          postgres {postgres}")
    say(f"\nAPI {base}  (docs {base}/schema, metrics {base}/metrics)")
    say(f"development API key (tenant 'default', every scope; kept in {DEV_KEY_FILE} under the state dir):")
    say(f"  export INFERQ_API_KEY={key}")
    say("\ntry, in another terminal:")
    for line in _examples(base):
        say(f"  {line}")
    say("")


def _examples(base: str) -> list[str]:
    json_header = "-H 'content-type: application/json' -H \"Authorization: Bearer $INFERQ_API_KEY\""
    iris = json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]]})
    wine = json.dumps({"inputs": json.loads(EXAMPLE_WINE)})
    job = json.dumps(
        {"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], "custom_ids": ["a", "b"]}
    )
    v2 = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})
    return [
        f"curl -s {base}/v1/models/iris/predict {json_header} -d {shlex.quote(iris)}",
        f"curl -s {base}/v1/models/wine@2/predict {json_header} -d {shlex.quote(wine)}",
        f"curl -s {base}/v2/models/iris/infer {json_header} -d {shlex.quote(v2)}",
        f"curl -s {base}/v1/jobs {json_header} -d {shlex.quote(job)}   # a batch job; then GET /v1/jobs/<id>",
        ".venv/bin/inferq keys create --tenant acme --scopes predict,jobs   # another tenant's key",
        f".venv/bin/inferq predict wine@prod --input {shlex.quote(EXAMPLE_WINE)}   # in-process, no server",
        ".venv/bin/inferq models show wine",
    ]


def _weights(weights: dict[int, int]) -> str:
    if len(weights) == 1:
        return str(next(iter(weights)))
    return "{" + ", ".join(f"{v}: {w}%" for v, w in sorted(weights.items())) + "}"


async def _wait_for_signal_or_exit(children: list[asyncio.subprocess.Process]) -> int:
    """0 on Ctrl-C / SIGTERM; 1 when a child exits by itself (then everything is stopped)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.create_task(c.wait()) for c in children]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
    for task in [stopper, *waits]:
        task.cancel()
    if stopper in done:
        return 0
    say("a child process exited; stopping everything")
    return 1
