"""Model management under faults, with real processes: hot reload across a Redis restart (two API processes and
``worker --all``), fallback when the canary's worker is killed, validator bombs, and Postgres stopped during an
upload. Each test starts its own Redis (and, for the last, its own Postgres), never the shared servers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import signal
import time
from collections import Counter
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped]
import httpx
from prometheus_client.parser import text_string_to_metric_families
from unit.upload_models import cpu_bomb

from .harness import OwnPostgres, Stack, eventually, unique
from .model_kit import (
    MB,
    Call,
    affine,
    apis_ready,
    descendants,
    expected,
    finished,
    memory_bomb,
    predict,
    problem,
    processes_under,
    put_alias,
    routed,
    upload,
    validators,
    wait_alive,
    worker_all,
)
from .test_jobs_kit import connect_args

# Processes that only learn of registry changes through Redis: no periodic catalog reload, no periodic
# discovery (both an hour), so what these tests see is the change notices (pub/sub + revision poll).
NOTICES_ONLY_API = {"INFERQ_CATALOG_REFRESH_S": 3600, "INFERQ_SOCKET_TIMEOUT_S": 1, "INFERQ_KEY_CACHE_S": 3600}
NOTICES_ONLY_WORKER = {"INFERQ_DISCOVERY_INTERVAL_S": 3600, "INFERQ_SOCKET_TIMEOUT_S": 1, "INFERQ_BLOCK_MS": 500}
UPLOADS = {"INFERQ_MAX_MODEL_BYTES": MB}  # the validator's memory limit follows: 1 GiB + 6 MB
CONVERGE_S = 15.0  # a bound for "within seconds" on a machine shared by several test runs
OUTAGE_S = 3.0


def _versions(calls: list[Call]) -> set[int]:
    return {c.version for c in calls}


async def test_alias_change_and_new_version_reach_every_process_after_a_redis_restart(stack: Stack) -> None:
    """Two API processes and ``worker --all`` that hear of registry changes only through Redis. Redis is killed;
    a version is uploaded while it is down (its notice is lost); Redis comes back empty (the revision counter
    starts again from nothing) and an alias is moved at once, maybe before anyone re-subscribed. Every API
    process must route by the new weights, and the worker must serve the version registered during the outage."""
    name = unique("reload")
    await stack.register(affine(2), name=name, aliases=["prod"])  # v1: default and prod
    await stack.register(affine(3), name=name)  # v2
    api1 = stack.serve(**NOTICES_ONLY_API, **UPLOADS)
    api2 = stack.serve(**NOTICES_ONLY_API, **UPLOADS)
    worker = worker_all(stack, **NOTICES_ONLY_WORKER)
    await apis_ready(stack, api1, api2)
    await wait_alive(stack, worker, name, [1, 2], 60)
    prod = f"{name}@prod"

    async with api1.client(timeout_s=30) as one, api2.client(timeout_s=30) as two:
        assert _versions(await routed(two, prod, 10)) == {1}
        # Baseline, Redis healthy: a change made through one process reaches the other.
        moved = await put_alias(one, name, "prod", weights={1: 50, 2: 50})
        assert moved.status_code == 200, moved.text
        assert moved.json()["weights"] == {"1": 50, "2": 50}
        baseline_s = await _converge(two, prod, {1, 2})
        warm = await two.get(f"/v1/models/{name}/versions/2")  # the key is looked up, and cached, by both
        assert warm.status_code == 200, warm.text

        # Redis down: an upload still registers (Postgres is the truth); its announcement is lost.
        stack.redis.kill()
        during = await upload(one, name, affine(4))
        live = await two.get("/health/live")
        await asyncio.sleep(OUTAGE_S)  # every reader's reconnect backoff grows to its longest
        stack.redis.start()  # same port, empty: the revision counter starts again
        restarted = time.monotonic()
        # At once, maybe before either API process or the worker re-subscribed.
        moved_again = await put_alias(one, name, "prod", weights={2: 50, 3: 50})
        assert moved_again.status_code == 200, moved_again.text

        seen_by: dict[str, float] = {}
        for label, http in (("api1", one), ("api2", two)):
            await _converge(http, prod, {2, 3})
            seen_by[label] = time.monotonic() - restarted
        await wait_alive(stack, worker, name, [3], CONVERGE_S)
        worker_s = time.monotonic() - restarted

        # Served end to end by the versions the routes name (each version's outputs are its own).
        calls = [await predict(http, prod, wait_s=10) for http in (one, two) for _ in range(6)]
        pinned = await predict(two, f"{name}@3", wait_s=10)
        default = await routed(two, name, 10)

    assert during.status_code == 201, during.text
    assert during.json()["version"] == 3
    assert during.headers["Location"] == f"/v1/models/{name}/versions/3"
    assert live.status_code == 200
    assert [e for e in api1.proc.events() if e.get("event") == "catalog.notify_failed" and e.get("model") == name]
    assert [(c.status, c.version) for c in calls if c.version not in (2, 3)] == []
    for call in calls:
        assert call.status == 200, call.body
        assert call.body["version"] == call.version
        assert call.outputs() == expected(call.version + 1)  # version v is y = (v + 1)·x + 1
    assert (pinned.status, pinned.outputs()) == (200, expected(4))
    assert _versions(default) == {1}  # the default alias was never moved
    assert all(p.alive() for p in (api1.proc, api2.proc, worker))
    assert not [e for e in worker.events() if e.get("event") in ("worker.exited", "partition.crashed")]
    print(
        f"\n[hot reload across a Redis restart] baseline (pub/sub) {baseline_s:.2f} s; after the restart the alias "
        f"change was routed by {', '.join(f'{k} after {v:.2f} s' for k, v in seen_by.items())}; the version "
        f"registered during the outage served by the worker {worker_s:.2f} s after the restart"
    )


async def _converge(http: httpx.AsyncClient, ref: str, versions: set[int]) -> float:
    """Seconds until 20 calls to ``ref`` are routed to exactly ``versions`` (at most ``CONVERGE_S``)."""

    async def agrees() -> bool:
        return _versions(await routed(http, ref, 20)) == versions

    return await eventually(agrees, CONVERGE_S, f"{ref} to be routed to {sorted(versions)}")


FALLBACK = {"from_version": 2, "reason": "not_ready"}


async def test_a_canary_whose_worker_is_killed_falls_back_to_v1_and_nothing_is_lost(stack: Stack) -> None:
    """``canary`` splits 50/50 over v1 and v2 with fallback; each version has its own worker. v2's worker is
    killed (-9): once its alive key has expired, every call to the alias is answered by v1 and says it fell
    back (body, header, metric, exactly counted). Calls the alias sent to v2 before that were queued on v2: each
    stays pollable and succeeds once a v2 worker is back; then v2's routing keys are served by v2 again."""
    name = unique("canary")
    v1 = await stack.register(affine(2), name=name)
    v2 = await stack.register(affine(3), name=name)
    api = stack.serve(INFERQ_KEY_CACHE_S=3600)
    w1, w2 = stack.worker([v1]), stack.worker([v2])
    await stack.api_ready(api)
    await stack.worker_ready(w1, v1)
    await stack.worker_ready(w2, v2)
    canary = f"{name}@canary"

    async with api.client(timeout_s=30) as http:
        put = await put_alias(http, name, "canary", weights={1: 50, 2: 50}, fallback=True)
        assert put.status_code == 200, put.text
        keys = [f"user-{i}" for i in range(40)]
        healthy = list(await asyncio.gather(*(predict(http, canary, wait_s=10, key=k) for k in keys)))
        to_v2 = [k for k, call in zip(keys, healthy, strict=True) if call.version == 2][:8]
        assert to_v2, [c.version for c in healthy]

        w2.signal_group(signal.SIGKILL)
        window: list[Call] = []

        async def falling_back() -> bool:
            keyed = await asyncio.gather(*(predict(http, canary, wait_s=1, key=k) for k in to_v2))
            loose = await asyncio.gather(*(predict(http, canary, wait_s=1) for _ in range(4)))
            window.extend([*keyed, *loose])
            return all(c.fallback is not None for c in keyed)

        fell_back_s = await eventually(falling_back, 40, "calls to v2's keys to fall back to v1")
        stable = list(
            await asyncio.gather(
                *(predict(http, canary, wait_s=10, key=to_v2[i % len(to_v2)]) for i in range(30)),
                *(predict(http, canary, wait_s=10) for _ in range(30)),
            )
        )
        metrics = (await http.get("/metrics")).text
        queued = [c for c in window if c.status == 202]
        while_down = {c.id: (await http.get(f"/v1/predictions/{c.id}")).json().get("status") for c in queued}

        # A v2 worker again: what was queued on v2 (or read by the killed worker, reclaimed) runs.
        w2b = stack.worker([v2], INFERQ_RECLAIM_MIN_IDLE_MS=1000, INFERQ_RECLAIM_INTERVAL_MS=200)
        await stack.worker_ready(w2b, v2)
        results = await finished(http, [c.id for c in queued], 60)

        async def served_by_v2_again() -> bool:
            calls = await asyncio.gather(*(predict(http, canary, wait_s=10, key=k) for k in to_v2))
            return all(c.status == 200 and c.version == 2 and c.fallback is None for c in calls)

        await eventually(served_by_v2_again, CONVERGE_S, "v2's keys to be served by v2 again")

    assert put.json()["fallback"] is True
    assert [(c.status, c.fallback, c.fallback_header) for c in healthy] == [(200, None, None)] * len(keys)
    assert {c.version for c in healthy} == {1, 2}
    assert all(c.outputs() == expected(c.version + 1) for c in healthy)
    # The window: answered by v1 (chosen, or fallen back to), or queued on v2 (chosen before it was seen down).
    assert {c.status for c in window} <= {200, 202}, Counter(c.status for c in window)
    for call in window + stable:
        if call.fallback is not None:
            assert (call.version, call.body["version"], call.fallback, call.fallback_header) == (1, 1, FALLBACK, "2")
        else:
            assert call.fallback_header is None
        if call.status == 200:
            assert call.outputs() == expected(call.body["version"] + 1)
    assert {(c.version, c.fallback is None) for c in queued} <= {(2, True), (1, False)}
    assert set(while_down.values()) <= {"queued", "running", "succeeded"}, while_down  # pollable, not lost
    # After the fallback began: every call succeeds from v1; v2's keys all say they fell back.
    assert [(c.status, c.version) for c in stable] == [(200, 1)] * 60
    assert [c.fallback for c in stable[:30]] == [FALLBACK] * 30
    assert 0 < sum(c.fallback is not None for c in stable[30:]) < 30
    fallbacks = sum(c.fallback is not None for c in window + stable)
    assert _fallbacks_counted(metrics, name) == {("2", "1", "not_ready"): fallbacks}
    assert {i: r["status"] for i, r in results.items()} == {c.id: "succeeded" for c in queued}
    assert all(r["predictions"][0]["outputs"]["y"] == expected(r["version"] + 1) for r in results.values())
    assert all(p.alive() for p in (api.proc, w1, w2b))
    print(
        f"\n[canary worker killed] fallback for every v2 key {fell_back_s:.2f} s after the kill; in between "
        f"{Counter((c.status, c.version, c.fallback is not None) for c in window)} (status, version, fell back); "
        f"{len(queued)} queued on v2, all succeeded once a v2 worker was back; {fallbacks} fallbacks counted"
    )


def _fallbacks_counted(metrics: str, model: str) -> dict[tuple[str, str, str], int]:
    """``inferq_fallbacks_total`` of ``model`` by (from_version, to_version, reason)."""
    found: dict[tuple[str, str, str], int] = {}
    for family in text_string_to_metric_families(metrics):
        if family.name != "inferq_fallbacks":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels["model"] == model:
                found[(labels["from_version"], labels["to_version"], labels["reason"])] = int(sample.value)
    return found


@dataclass
class Probe:
    kind: str
    status: int
    validating: int  # validator children of the API right after the answer came


async def test_validator_bombs_are_refused_while_the_api_keeps_serving_and_nothing_is_left_behind(
    stack: Stack,
) -> None:
    """Two uploads whose warm-up loops (``Loop`` of 10^12 trips) take both validation slots; a third upload (a
    2.4 GB ``ConstantOfShape``) meanwhile is a 503 ``overloaded``, and afterwards a 422 naming memory. The loops are
    422s naming the CPU limit. All along, ``/health/live`` and predictions of another model answer 200, including
    while both validator children run; afterwards no validator process and no spooled file is left, nothing is
    registered, and a good upload is accepted (the slots were given back)."""
    steady = await stack.register(affine(2), name=unique("steady"))
    spool = stack.root / "tmp"
    spool.mkdir()
    api = stack.serve(
        **UPLOADS, INFERQ_MODEL_VALIDATE_CPU_S=3, INFERQ_MODEL_VALIDATE_TIMEOUT_S=300,
        INFERQ_MODEL_VALIDATE_CONCURRENCY=2, INFERQ_KEY_CACHE_S=3600, TMPDIR=str(spool),
    )  # fmt: skip
    worker = stack.worker([steady])
    await stack.api_ready(api)
    await stack.worker_ready(worker, steady)
    loop_a, loop_b, hog = unique("loop"), unique("loop"), unique("hog")
    probes: list[Probe] = []
    stop = asyncio.Event()

    async def probe(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            live = await http.get("/health/live")
            probes.append(Probe("live", live.status_code, len(validators(api))))
            served = await predict(http, steady.model, wait_s=10)
            ok = served.status == 200 and served.outputs() == expected(2)
            probes.append(Probe("predict", served.status if ok else -served.status, len(validators(api))))
            await asyncio.sleep(0.05)

    async with api.client(timeout_s=300) as http, api.client(timeout_s=60) as prober:
        probing = asyncio.create_task(probe(prober))
        loops = [
            asyncio.create_task(upload(http, loop_a, cpu_bomb(step=1.0))),
            asyncio.create_task(upload(http, loop_b, cpu_bomb(step=2.0))),
        ]

        async def both_validating() -> bool:
            return len(validators(api)) == 2

        await eventually(both_validating, 60, "both uploads to be validated in children")
        busy = await upload(http, hog, memory_bomb())
        looped = await asyncio.gather(*loops)
        hogged = await upload(http, hog, memory_bomb())
        stop.set()
        await asyncio.wait_for(probing, 60)
        listed = [await http.get(f"/v1/models/{n}") for n in (loop_a, loop_b, hog)]
        good = await upload(http, steady.model, affine(5))
        await asyncio.sleep(0.5)  # an orphan would still be running now
        left_children = descendants(api.proc.pid)
        orphans = processes_under(spool)
        # NOTE: ONNX Runtime in the validator leaves a 51-byte ``.ses`` file in TMPDIR: not an upload's.
        spooled = sorted(p.name for p in spool.iterdir() if p.name != ".ses")

    assert problem(busy) == (503, "overloaded"), busy.text
    assert int(busy.headers["Retry-After"]) >= 1
    for response in looped:
        assert problem(response) == (422, "invalid_model"), response.text
        assert "CPU time" in response.json()["detail"], response.text
    assert problem(hogged) == (422, "invalid_model"), hogged.text
    assert "allocate memory" in hogged.json()["detail"], hogged.text
    assert [problem(r) for r in listed] == [(404, "model_not_found")] * 3
    assert good.status_code == 201, good.text
    assert good.json()["version"] == 2
    assert [p for p in probes if p.status != 200] == []
    during = Counter(p.kind for p in probes if p.validating == 2)  # answered while both children ran
    assert during["live"] >= 3, during
    assert during["predict"] >= 3, during
    assert left_children == []
    assert orphans == []
    assert spooled == []
    assert api.proc.alive()
    validated = [e for e in api.proc.events() if e.get("event") in ("model.validator_killed", "model.refused")]
    print(
        f"\n[validator bombs] {len(probes)} probes all 200 ({dict(during)} while both validators ran); "
        f"refusals logged: {Counter((e['event'], e.get('signal') or e.get('code')) for e in validated)}"
    )


async def test_an_upload_whose_client_disconnects_is_stopped_and_registers_nothing(stack: Stack) -> None:
    """A client that gives up during validation (a read timeout, a proxy's) must not leave a version behind that
    its retry would duplicate, nor keep a validation slot until the validator's own limits end it."""
    api = stack.serve(
        **UPLOADS, INFERQ_MODEL_VALIDATE_CPU_S=60, INFERQ_MODEL_VALIDATE_TIMEOUT_S=300,
        INFERQ_MODEL_VALIDATE_CONCURRENCY=1,
    )  # fmt: skip
    await stack.api_ready(api)
    name = unique("gone")

    async def validating() -> bool:
        return len(validators(api)) == 1

    async def stopped() -> bool:
        return validators(api) == []

    async with api.client(timeout_s=300) as http:
        async with api.client(timeout_s=300) as impatient:
            pending = asyncio.create_task(upload(impatient, name, cpu_bomb()))
            await eventually(validating, 60, "the upload to be validated in a child")
            pending.cancel()  # the client goes away: its connection closes
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        await eventually(stopped, 15, "the abandoned validation to be stopped")
        listed = await http.get(f"/v1/models/{name}")
        good = await upload(http, name, affine(3))  # the only slot is free again, long before the CPU limit
    assert problem(listed) == (404, "model_not_found")
    assert good.status_code == 201, good.text
    assert good.json()["version"] == 1  # the abandoned upload took no version number either
    assert any(e.get("event") == "model.upload_abandoned" for e in api.proc.events())


async def test_postgres_stopped_during_an_upload_is_a_503_registers_nothing_and_a_retry_gets_the_next_number(
    pg_stack: Stack, own_postgres: OwnPostgres
) -> None:
    """Version 1 uploaded; then version 2 refused twice — Postgres already down when it comes (after its
    validation), then stopped while the registering transaction is open (its version row inserted, held there by a
    trigger) — each a 503 with ``Retry-After``. Back up: still only version 1, no artifact of the refused file, the
    number not spent; the same upload again is version 2, and a worker serves its outputs."""
    stack = pg_stack
    name = unique("pgdown")
    first, second = affine(2), affine(3)
    api = stack.serve(**UPLOADS, INFERQ_KEY_CACHE_S=3600)
    await stack.api_ready(api)
    url = own_postgres.url

    async with api.client(timeout_s=60) as http:
        created = await upload(http, name, first, description="the first")
        assert created.status_code == 201, created.text

        own_postgres.stop()
        down = await upload(http, name, second)
        live = await http.get("/health/live")
        own_postgres.start()
        after_down = await _registered(url, name, sha256=_sha(second))

        control = await asyncpg.connect(**connect_args(url))
        hold = InsertHold(control, name=f"iqf_hold_{secrets.token_hex(4)}")
        await hold.install(table="model_versions", condition="NEW.version >= 2")
        await hold.hold()
        posting = asyncio.create_task(upload(http, name, second))
        blocked: dict[int, str] = {}

        async def in_transaction() -> bool:
            blocked.update(await hold.waiting())
            return bool(blocked)

        await eventually(in_transaction, 60, "the registering transaction to insert its version row")
        await asyncio.to_thread(own_postgres.stop)
        mid = await asyncio.wait_for(posting, timeout=30)
        await asyncio.to_thread(own_postgres.start)
        cleanup = await asyncpg.connect(**connect_args(url))
        try:
            await hold.remove(cleanup)
        finally:
            await cleanup.close()
        after_mid = await _registered(url, name, sha256=_sha(second))

        retried = await upload(http, name, second)
        worker = worker_all(stack)
        await wait_alive(stack, worker, name, [1, 2], 60)
        served = await predict(http, f"{name}@2", wait_s=10)

    assert created.json()["version"] == 1
    for refused in (down, mid):
        assert problem(refused) == (503, "service_unavailable"), refused.text
        assert int(refused.headers["Retry-After"]) >= 1
    assert live.status_code == 200
    assert [s.lstrip().upper().startswith("INSERT INTO MODEL_VERSIONS") for s in blocked.values()] == [True]
    assert after_down == after_mid == Registered(versions=[1], last_version=1, artifact=False)
    assert retried.status_code == 201, retried.text
    assert (retried.json()["version"], retried.json()["sha256"]) == (2, _sha(second))
    assert retried.headers["Location"] == f"/v1/models/{name}/versions/2"
    assert (served.status, served.version, served.outputs()) == (200, 2, expected(3))
    assert api.proc.alive()


def _sha(model: bytes) -> str:
    return hashlib.sha256(model).hexdigest()


@dataclass(frozen=True)
class Registered:
    versions: list[int]
    last_version: int
    artifact: bool  # an artifact row with the refused file's sha256 exists


async def _registered(url: str, name: str, *, sha256: str) -> Registered:
    """What Postgres holds for ``name``, read directly."""
    conn = await asyncpg.connect(**connect_args(url))
    try:
        model = await conn.fetchrow("SELECT id, last_version FROM models WHERE name = $1", name)
        versions = await conn.fetch("SELECT version FROM model_versions WHERE model_id = $1 ORDER BY 1", model["id"])
        artifact = await conn.fetchval("SELECT count(*) FROM artifacts WHERE sha256 = $1", sha256)
    finally:
        await conn.close()
    return Registered([r["version"] for r in versions], model["last_version"], bool(artifact))


class InsertHold:
    """Holds another process's transaction open right after it inserted a row into ``table`` (a trigger waiting
    on an advisory lock this object holds): the ``INSERT`` ran, nothing is committed."""

    def __init__(self, conn: asyncpg.Connection, *, name: str) -> None:
        self._conn = conn
        self.name = name
        self._keys = (secrets.randbelow(2**31), secrets.randbelow(2**31))
        self._tables: list[str] = []

    async def install(self, *, table: str, condition: str) -> None:
        k1, k2 = self._keys
        await self._conn.execute(
            f"CREATE FUNCTION {self.name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" PERFORM pg_advisory_xact_lock({k1}, {k2}); RETURN NEW; END $$"
        )
        await self._conn.execute(
            f"CREATE TRIGGER {self.name} AFTER INSERT ON {table} FOR EACH ROW WHEN ({condition})"
            f" EXECUTE FUNCTION {self.name}()"
        )
        self._tables.append(table)

    async def hold(self) -> None:
        await self._conn.execute("SELECT pg_advisory_lock($1, $2)", *self._keys)

    async def waiting(self) -> dict[int, str]:
        """Backends blocked on the lock, inside their transaction: ``{pid: statement}``."""
        rows = await self._conn.fetch(
            "SELECT l.pid, a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND NOT l.granted AND l.classid = $1 AND l.objid = $2",
            *self._keys,
        )
        return {r["pid"]: r["query"] for r in rows}

    async def remove(self, conn: asyncpg.Connection) -> None:
        """Drop the trigger and its function (through ``conn``: the server was restarted since)."""
        for table in self._tables:
            await conn.execute(f"DROP TRIGGER IF EXISTS {self.name} ON {table}")
        await conn.execute(f"DROP FUNCTION IF EXISTS {self.name}()")
