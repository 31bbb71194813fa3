"""The ``inferq`` command as a user runs it: real processes, real Postgres (and embedded services)."""

from __future__ import annotations

import json
import os
import pickle
import re
import secrets
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from inferq.cli.demo import build
from inferq.embedded import EmbeddedRedis
from inferq.settings import Settings

from .apikeys import auth_env
from .ports import free_port

WINE_RECORD = {
    "alcohol": 13.2, "malic_acid": 1.78, "ash": 2.14, "alcalinity_of_ash": 11.2, "magnesium": 100.0,
    "total_phenols": 2.65, "flavanoids": 2.76, "nonflavanoid_phenols": 0.26, "proanthocyanins": 1.28,
    "color_intensity": 4.38, "hue": 1.05, "od280_od315_of_diluted_wines": 3.4, "proline": 1050.0,
}  # fmt: skip


def inferq(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "inferq", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"inferq {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def error_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    last = proc.stderr.strip().splitlines()[-1]
    error: dict[str, Any] = json.loads(last)["error"]
    return error


@pytest.fixture(scope="module")
def cli_env(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for CLI processes: this run's database, Redis and API key pepper, a model root of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    env.update(
        INFERQ_DATABASE_URL=settings.services.database_url or "",
        INFERQ_REDIS_URL=settings.services.redis_url or "",
        INFERQ_KEY_PREFIX=settings.services.key_prefix,
        INFERQ_MODEL_ROOT=str(tmp_path_factory.mktemp("cli-models")),
        INFERQ_STATE_DIR=str(tmp_path_factory.mktemp("cli-state")),
        **auth_env(settings),
    )
    inferq("migrate", env=env)
    return env


@pytest.fixture
def name() -> str:
    return f"cli-{secrets.token_hex(3)}"


def test_import_onnx_then_predict_each_selector(cli_env: dict[str, str], name: str, tmp_path: Path) -> None:
    wine1, wine2 = build("wine", 1), build("wine", 2)
    (tmp_path / "a.onnx").write_bytes(wine1.onnx)
    (tmp_path / "b.onnx").write_bytes(wine2.onnx)

    first = json.loads(inferq("models", "import", str(tmp_path / "a.onnx"), "--name", name, env=cli_env).stdout)
    second = json.loads(
        inferq("models", "import", str(tmp_path / "b.onnx"), "--name", name, "--alias", "prod", env=cli_env).stdout
    )
    assert (first["version"], second["version"]) == (1, 2)
    assert second["signature"]["task"] == "classifier"

    payload = json.dumps([WINE_RECORD])
    served = {
        selector: json.loads(inferq("predict", selector, "--input", payload, env=cli_env).stdout)["version"]
        for selector in (name, f"{name}@1", f"{name}@2", f"{name}@prod")
    }
    assert served == {name: 1, f"{name}@1": 1, f"{name}@2": 2, f"{name}@prod": 2}

    shown = json.loads(inferq("models", "show", name, env=cli_env).stdout)
    assert {a["name"]: a["weights"] for a in shown["aliases"]} == {"default": {"1": 100}, "prod": {"2": 100}}


def test_import_sklearn_pickle_converts_with_parity(cli_env: dict[str, str], name: str, tmp_path: Path) -> None:
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    data = load_iris()
    x = np.asarray(data.data, dtype=np.float32)
    model = DecisionTreeClassifier(random_state=0).fit(x, data.target)
    path = tmp_path / "tree.pkl"
    path.write_bytes(pickle.dumps(model))

    out = inferq(
        "models", "import", str(path), "--name", name, "--feature-names", "sl,sw,pl,pw",
        "--class-names", "setosa,versicolor,virginica", env=cli_env,
    )  # fmt: skip
    assert json.loads(out.stdout)["signature"]["feature_names"] == ["sl", "sw", "pl", "pw"]

    rows = x[::15].tolist()
    got = json.loads(inferq("predict", name, "--input", json.dumps(rows), env=cli_env).stdout)["predictions"]
    assert [p["label"] for p in got] == model.predict(x[::15]).tolist()
    assert [p["class_name"] for p in got] == [data.target_names[i] for i in model.predict(x[::15])]


def test_predict_reads_input_file_and_local_onnx(cli_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "iris.onnx").write_bytes(build("iris", 1).onnx)
    (tmp_path / "in.json").write_text(json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}))
    out = inferq("predict", str(tmp_path / "iris.onnx"), "--input", f"@{tmp_path / 'in.json'}", env=cli_env)
    assert [p["class_name"] for p in json.loads(out.stdout)["predictions"]] == ["setosa", "virginica"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a valid ONNX model"),
        (b"\x08\x07garbage that is not protobuf" * 3, "not a valid ONNX model"),
        (None, "not a valid ONNX model"),  # a truncated real model
    ],
)
def test_corrupt_onnx_is_refused_and_nothing_registered(
    cli_env: dict[str, str], name: str, tmp_path: Path, content: bytes | None, message: str
) -> None:
    data = content if content is not None else build("iris", 1).onnx[:300]
    (tmp_path / "bad.onnx").write_bytes(data)
    proc = inferq("models", "import", str(tmp_path / "bad.onnx"), "--name", name, env=cli_env, check=False)
    assert proc.returncode == 2
    error = error_of(proc)
    assert error["code"] == "invalid_model"
    assert message in error["message"]
    missing = inferq("models", "show", name, env=cli_env, check=False)
    assert error_of(missing)["code"] == "model_not_found"


def test_non_pickle_file_is_refused(cli_env: dict[str, str], name: str, tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_text("this is not a pickle")
    proc = inferq("models", "import", str(tmp_path / "model.joblib"), "--name", name, env=cli_env, check=False)
    assert (proc.returncode, error_of(proc)["code"]) == (2, "invalid_model")


@pytest.mark.parametrize(
    ("selector", "payload", "code", "fragment"),
    [
        ("{name}@9", [[5.1, 3.5, 1.4, 0.2]], "version_not_found", "has no version 9; versions: 1"),
        ("{name}@canary", [[5.1, 3.5, 1.4, 0.2]], "alias_not_found", "aliases: default"),
        ("nosuch-model", [[1.0]], "model_not_found", "'nosuch-model' not found"),
        ("{name}", [{"sepal_length_cm": 5.1}], "invalid_input", "missing feature"),
        ("{name}", [[5.1, "a", 1.4, 0.2]], "invalid_input", "row 0"),
        ("{name}", [[5.1, 3.5, 1.4]], "invalid_input", "expected 4 values, got 3"),
    ],
)
def test_bad_predictions_are_typed_errors(
    cli_env: dict[str, str], name: str, tmp_path: Path, selector: str, payload: Any, code: str, fragment: str
) -> None:
    (tmp_path / "iris.onnx").write_bytes(build("iris", 1).onnx)
    inferq("models", "import", str(tmp_path / "iris.onnx"), "--name", name, env=cli_env)
    proc = inferq("predict", selector.format(name=name), "--input", json.dumps(payload), env=cli_env, check=False)
    assert proc.returncode == 2
    error = error_of(proc)
    assert error["code"] == code
    assert fragment in error["message"]


def test_stale_schema_is_refused_with_advice(cli_env: dict[str, str], tmp_path: Path, settings: Settings) -> None:
    """A configured database that was never migrated: the CLI says to run `inferq migrate`."""
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(settings.services.database_url or "")
    blank = f"{url.database}_blank"

    async def admin(sql: str) -> None:
        params: dict[str, Any] = url.set(database="postgres").translate_connect_args(username="user")
        if "host" in url.query:
            params["host"] = url.query["host"]
        conn = await asyncpg.connect(**params)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{blank}"'))
    try:
        env = {**cli_env, "INFERQ_DATABASE_URL": url.set(database=blank).render_as_string(hide_password=False)}
        proc = inferq("models", "list", env=env, check=False)
        assert "run `inferq migrate`" in error_of(proc)["message"]
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{blank}" WITH (FORCE)'))


def fresh_env(tmp_path: Path) -> dict[str, str]:
    """A machine with no configured services: everything embedded, under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    env.update(
        INFERQ_STATE_DIR=str(tmp_path / "state"),
        INFERQ_MODEL_ROOT=str(tmp_path / "models"),
        INFERQ_PORT=str(free_port()),
    )
    return env


DEV_KEY = re.compile(r"^  export INFERQ_API_KEY=(iq_[0-9a-f]{16}_[0-9a-f]{48})$", re.M)


def test_dev_on_a_fresh_machine_with_embedded_services(tmp_path: Path) -> None:
    """`inferq dev` with no service URLs: embedded servers, migrations, demo models, a development API key,
    API and workers answering a prediction and a job over HTTP with that key (``--exit`` checks that, then
    stops everything)."""
    env = fresh_env(tmp_path)
    first = inferq("dev", "--exit", env=env)
    assert "training demo model wine@2" in first.stderr
    assert "smoke test: POST /v1/models/iris/predict → 200 setosa" in first.stderr
    assert "smoke test: POST /v1/jobs (3 rows) → succeeded" in first.stderr
    [key] = DEV_KEY.findall(first.stderr)
    again = inferq("dev", "--exit", env=env)  # idempotent: nothing retrained, nothing re-registered
    assert "training" not in again.stderr
    assert DEV_KEY.findall(again.stderr) == [key]  # the same key, not a new one per run
    assert "smoke test: POST /v1/models/iris/predict → 200 setosa" in again.stderr
    state = tmp_path / "state"
    for secret in ("api-key-pepper", "dev-api-key"):
        assert stat.S_IMODE((state / secret).stat().st_mode) == 0o600
    assert (state / "dev-api-key").read_text().strip() == key
    # `inferq keys` on the same (embedded) services finds it under the kept pepper: one key, every scope.
    keys = json.loads(inferq("keys", "list", "--tenant", "default", env=env).stdout)
    assert [(k["id"], k["name"], k["scopes"]) for k in keys] == [(key[3:19], "make dev", ["admin", "jobs", "predict"])]
    listed = json.loads(inferq("models", "list", env=env).stdout)
    assert {m["name"]: [v["version"] for v in m["versions"]] for m in listed} == {
        "diabetes": [1], "iris": [1], "wine": [1, 2],
    }  # fmt: skip
    assert {m["name"]: m["aliases"] for m in listed}["wine"] == {"default": {"2": 100}, "prod": {"1": 100}}
    out = json.loads(inferq("predict", "wine", "--input", json.dumps([WINE_RECORD]), env=env).stdout)
    assert out["version"] == 2
    assert out["predictions"][0]["class_name"] == "class_0"
    assert not (tmp_path / "state" / "redis" / "server.json").exists()  # the embedded Redis was stopped


def _finished(proc: subprocess.Popen[str], *, timeout_s: float) -> str:
    """Its stderr once it exits; past ``timeout_s`` it is stopped (SIGTERM: its children too, then SIGKILL) and
    the stderr so far is returned with a note, so a hang fails with what the command was doing."""
    try:
        return proc.communicate(timeout=timeout_s)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            stderr = proc.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            stderr = proc.communicate()[1]
        return f"{stderr}\n[still running after {timeout_s:.0f} s: stopped]"


def test_two_dev_commands_at_once_share_services_and_seed_once(tmp_path: Path) -> None:
    env = fresh_env(tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "inferq", "dev", "--exit"],
            env={**env, "INFERQ_PORT": str(free_port())},
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [_finished(p, timeout_s=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(log[-4000:] for log in logs)
    assert sum(log.count("training demo model") for log in logs) == 4  # each demo model trained once
    listed = json.loads(inferq("models", "list", env=env).stdout)
    assert {m["name"]: [v["version"] for v in m["versions"]] for m in listed}["wine"] == [1, 2]


def test_model_over_the_size_cap_is_not_registered(cli_env: dict[str, str], name: str, tmp_path: Path) -> None:
    (tmp_path / "iris.onnx").write_bytes(build("iris", 1).onnx)
    env = {**cli_env, "INFERQ_MAX_MODEL_BYTES": "100"}
    proc = inferq("models", "import", str(tmp_path / "iris.onnx"), "--name", name, env=env, check=False)
    assert (proc.returncode, error_of(proc)["code"]) == (2, "invalid_model")
    assert "over the limit of 100" in error_of(proc)["message"]
    assert error_of(inferq("models", "show", name, env=cli_env, check=False))["code"] == "model_not_found"


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker", "--all"], ["tasks"]])
def test_an_evicting_redis_is_refused_at_startup_naming_the_setting(
    cli_env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    with EmbeddedRedis(tmp_path / "redis") as evicting:
        redis.Redis.from_url(evicting.url).config_set("maxmemory-policy", "allkeys-lru")
        proc = inferq(*command, env={**cli_env, "INFERQ_REDIS_URL": evicting.url}, check=False)
    assert proc.returncode == 2, proc.stderr
    error = error_of(proc)
    assert error["code"] == "unsafe_service"
    assert "maxmemory-policy is allkeys-lru" in error["message"]
