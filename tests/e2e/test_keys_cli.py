"""API keys as an operator runs them: ``inferq keys …`` and ``inferq tenants limits`` (JSON on stdout) against a
running ``inferq serve``, and a server that refuses to start without its pepper."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferq.settings import Settings
from inferq.store.migrate import upgrade

from .apikeys import auth_env, bearer
from .ports import free_port

CACHE_S = 0.3  # INFERQ_KEY_CACHE_S of the server under test: how long a revoked key may still pass


@pytest.fixture
async def env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """The environment of every process here: the run's database and Redis, its pepper, a short key cache."""
    assert settings.services.database_url
    await upgrade(settings.services.database_url)
    base = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    return {
        **base,
        "INFERQ_DATABASE_URL": settings.services.database_url,
        "INFERQ_REDIS_URL": settings.services.redis_url or "",
        "INFERQ_KEY_PREFIX": settings.services.key_prefix,
        "INFERQ_STATE_DIR": str(tmp_path / "state"),
        "INFERQ_KEY_CACHE_S": str(CACHE_S),
        **auth_env(settings),
    }


async def inferq(*args: str, env: dict[str, str]) -> tuple[int, Any, str]:
    """Run ``inferq ARGS`` to its end: ``(exit status, stdout as JSON or None, stderr)``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inferq", *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out.strip() else None, err.decode()


def error_of(stderr: str) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(stderr.strip().splitlines()[-1])["error"]
    return error


@contextlib.asynccontextmanager
async def serving(env: dict[str, str], log: Path) -> AsyncIterator[str]:
    """``inferq serve`` on a free port until the block ends; its base URL once ``/health/ready`` answers."""
    port = free_port()
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "inferq", "serve", "--port", str(port),
            env=env, stdout=subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            for _ in range(600):
                if proc.returncode is not None:
                    raise AssertionError(f"serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/health/ready")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"serve was not ready:\n{log.read_text()[-3000:]}")
        yield base
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def status_with(http: httpx.AsyncClient, key: str) -> httpx.Response:
    """``GET /v1/models`` (any scope) sending ``key``."""
    return await http.get("/v1/models", headers=bearer(key))


async def eventually_status(http: httpx.AsyncClient, key: str, status: int, what: str) -> httpx.Response:
    """Poll with ``key`` until the answer is ``status`` (a bound, not a figure: 30 s)."""
    for _ in range(300):
        response = await status_with(http, key)
        if response.status_code == status:
            return response
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: still {response.status_code} {response.text}")


SHORT_PEPPER = pytest.param("short-" + "x" * 25, id="31-chars")


@pytest.mark.parametrize("pepper", [pytest.param("", id="unset"), SHORT_PEPPER])
async def test_serve_refuses_to_start_without_a_pepper_outside_dev(
    env: dict[str, str], pepper: str, tmp_path: Path
) -> None:
    """Configured services, not development: no (or a too short) pepper is a refusal before anything starts."""
    refused = {**env, "INFERQ_API_KEY_PEPPER": pepper}
    code, out, err = await inferq("serve", "--port", str(free_port()), env=refused)
    assert (code, out) == (2, None), err
    error = error_of(err)
    assert error["code"] == "invalid_input"
    assert "INFERQ_API_KEY_PEPPER" in error["message"]
    assert "Traceback" not in err
    # The operator's tool refuses the same way: a key made under another pepper would never match.
    code, out, err = await inferq("keys", "create", "--tenant", "acme", "--scopes", "predict", env=refused)
    assert (code, out) == (2, None), err
    assert "INFERQ_API_KEY_PEPPER" in error_of(err)["message"]
    assert not (tmp_path / "state" / "api-key-pepper").exists()  # none was made up outside development


async def test_keys_and_limits_from_the_command_line_take_effect_on_a_running_server(
    env: dict[str, str], tmp_path: Path
) -> None:
    tenant = f"ops-{secrets.token_hex(3)}"
    code, made, err = await inferq("keys", "create", "--tenant", tenant, "--scopes", "predict,jobs", "--name",
                                   "nightly", env=env)  # fmt: skip
    assert code == 0, err
    key, view = made["key"], made["view"]
    assert key.startswith(f"iq_{view['id']}_")
    assert (view["tenant"], view["scopes"], view["name"]) == (tenant, ["jobs", "predict"], "nightly")
    assert "revoked_at" not in view  # KeyView omits its defaults: not revoked, no expiry, active
    assert "expires_at" not in view
    assert "only time its secret is shown" in err

    async with serving(env, tmp_path / "serve.log") as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        assert (await status_with(http, key)).status_code == 200
        forbidden = await http.get("/v1/admin/keys", headers=bearer(key))  # no admin scope
        assert (forbidden.status_code, forbidden.json()["code"]) == (403, "forbidden")

        code, listed, err = await inferq("keys", "list", "--tenant", tenant, env=env)
        assert code == 0, err
        assert [(k["id"], k.get("active", True), k.get("revoked_at")) for k in listed] == [(view["id"], True, None)]
        assert key.rsplit("_", 1)[1] not in json.dumps(listed)  # never the secret

        # Limits: shown, lowered (the running server applies them within its cache time), reset.
        code, shown, err = await inferq("tenants", "limits", tenant, env=env)
        assert (code, shown) == (0, {}), err
        code, lowered, err = await inferq("tenants", "limits", tenant, "--rate-per-s", "0.5", "--burst", "1", env=env)
        assert (code, lowered) == (0, {"rate_per_s": 0.5, "burst": 1}), err
        assert (await inferq("tenants", "limits", tenant, env=env))[1] == lowered
        limited = await eventually_status(http, key, 429, "the lowered rate limit to apply")
        assert (limited.json()["code"], limited.json()["details"]["scope"]) == ("rate_limited", "rate")
        assert limited.headers["RateLimit-Limit"] == "1"
        assert int(limited.headers["Retry-After"]) >= 1
        code, reset, err = await inferq("tenants", "limits", tenant, "--reset", env=env)
        assert (code, reset) == (0, {}), err
        await eventually_status(http, key, 200, "the reset limits to apply")

        # Rotation: a new key at once; the old one keeps working through its grace time.
        code, rotated, err = await inferq("keys", "rotate", view["id"], "--grace", "1h", env=env)
        assert code == 0, err
        new_key, new_view = rotated["key"], rotated["view"]
        assert (new_view["tenant"], new_view["scopes"], new_view["name"]) == (tenant, ["jobs", "predict"], "nightly")
        assert new_view["id"] != view["id"]
        assert (await status_with(http, new_key)).status_code == 200
        assert (await status_with(http, key)).status_code == 200  # in its grace time
        code, listed, err = await inferq("keys", "list", "--tenant", tenant, env=env)
        by_id = {k["id"]: k for k in listed}
        assert sorted(by_id) == sorted([view["id"], new_view["id"]])
        assert by_id[view["id"]].get("active", True)
        assert by_id[view["id"]]["expires_at"]
        assert "expires_at" not in by_id[new_view["id"]]

        # Revocation: refused by the running server within its cache time; the new key is not affected.
        code, revoked, err = await inferq("keys", "revoke", view["id"], env=env)
        assert code == 0, err
        assert (revoked["id"], revoked["active"]) == (view["id"], False)
        assert revoked["revoked_at"]
        refused = await eventually_status(http, key, 401, "the revoked key to be refused")
        assert refused.json()["code"] == "unauthenticated"
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="inferq"'
        assert (await status_with(http, new_key)).status_code == 200
        code, again, err = await inferq("keys", "revoke", view["id"], env=env)  # idempotent
        assert (code, again["revoked_at"]) == (0, revoked["revoked_at"]), err


@pytest.mark.parametrize(
    ("args", "code", "field"),
    [
        (["keys", "create", "--tenant", "acme", "--scopes", "predict,root"], "invalid_input", "scopes"),
        (["keys", "create", "--tenant", "Not A Tenant", "--scopes", "predict"], "invalid_input", "tenant"),
        (["keys", "create", "--tenant", "acme", "--scopes", "predict", "--expires-in=-1d"], "invalid_input", None),
        (["keys", "revoke", "0123456789abcdef"], "key_not_found", None),
        (["keys", "rotate", "0123456789abcdef"], "key_not_found", None),
        (["tenants", "limits", "acme-e2e", "--burst", "0"], "invalid_input", None),
        (["tenants", "limits", "no-such-tenant-e2e"], "not_found", None),
    ],
    ids=["unknown-scope", "bad-tenant", "negative-expiry", "revoke-unknown", "rotate-unknown", "zero-burst",
         "unknown-tenant"],
)  # fmt: skip
async def test_bad_key_commands_are_refused_with_a_typed_error(
    env: dict[str, str], args: list[str], code: str, field: str | None
) -> None:
    if args[:3] == ["tenants", "limits", "acme-e2e"]:  # a tenant that exists, so only the value is wrong
        assert (await inferq("keys", "create", "--tenant", "acme-e2e", "--scopes", "predict", env=env))[0] == 0
    status, out, err = await inferq(*args, env=env)
    assert (status, out) == (2, None), err
    error = error_of(err)
    assert error["code"] == code, error
    if field is not None:
        assert error["details"]["field"] == field
