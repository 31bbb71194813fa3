"""``inferq models upload | promote | rollback | archive`` against real ``inferq serve`` (uvicorn on uvloop: the
validator child is spawned from there) and ``inferq worker --all`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from unit import upload_models as models

from inferq.settings import Settings
from inferq.store.migrate import upgrade

from .apikeys import auth_env, bearer, make_key
from .ports import free_port

FEATURES = "sepal_length,sepal_width,petal_length,petal_width"
RECORDS = [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]


@contextlib.contextmanager
def processes(env: dict[str, str], commands: list[list[str]], logs: Path) -> Iterator[None]:
    procs = []
    for i, command in enumerate(commands):
        with (logs / f"proc-{i}.log").open("wb") as sink:
            procs.append(
                subprocess.Popen([sys.executable, "-m", "inferq", *command], env=env, stdout=sink, stderr=sink)
            )
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cli(env: dict[str, str], *argv: str) -> tuple[int, Any, str]:
    """Run ``inferq models …``: exit status, stdout as JSON (or stderr's error), stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "inferq", "models", *argv], env=env, capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip
    if done.returncode == 0:
        return 0, json.loads(done.stdout), done.stderr
    return done.returncode, json.loads(done.stderr.strip().splitlines()[-1])["error"], done.stderr


def wait_until(check: Any, what: str, timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            value = check()
            if value:
                return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_upload_route_and_roll_back_a_model_from_the_command_line(settings: Settings, tmp_path: Path) -> None:
    assert settings.services.database_url
    asyncio.run(upgrade(settings.services.database_url))
    admin, predict_only = asyncio.run(make_key(settings, "admin")), asyncio.run(make_key(settings, "predict"))
    port, name = free_port(), f"cli-up-{secrets.token_hex(4)}"
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    env.update(
        INFERQ_DATABASE_URL=settings.services.database_url,
        INFERQ_REDIS_URL=settings.services.redis_url or "",
        INFERQ_KEY_PREFIX=settings.services.key_prefix,
        INFERQ_MODEL_ROOT=str(tmp_path / "models"),
        INFERQ_DISCOVERY_INTERVAL_S="0.2",
        **auth_env(settings),
    )
    client = {**env, "INFERQ_API_KEY": admin}
    first, second, pickled = tmp_path / "iris.onnx", tmp_path / "iris-2.onnx", tmp_path / "iris-3.onnx"
    first.write_bytes(models.unnamed_classifier())
    second.write_bytes(models.with_doc(models.unnamed_classifier(), "retrained"))
    pickled.write_bytes(pickle.dumps({"coef": [1.0, 2.0]}, protocol=5))

    def predict() -> dict[str, Any]:
        url, caller = f"{base}/v1/models/{name}/predict", bearer(predict_only)
        response = httpx.post(url, json={"inputs": RECORDS}, headers=caller, timeout=30)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    with processes(env, [["serve", "--port", str(port)], ["worker", "--all"]], tmp_path):
        wait_until(lambda: httpx.get(f"{base}/health/live", timeout=2).status_code == 200, "the API")
        status, v1, _ = cli(client, "upload", str(first), "--name", name, "--feature-names", FEATURES,
                            "--class-names", "setosa,versicolor,virginica", "--url", base)  # fmt: skip
        assert status == 0
        assert (v1["version"], v1["signature"]["class_names"]) == (1, ["setosa", "versicolor", "virginica"])
        ready = wait_until(lambda: httpx.get(f"{base}/v1/models/{name}", headers=bearer(admin)).json()["ready"],
                           "the worker to pick up the uploaded version")  # fmt: skip
        assert ready is True
        first_answer = predict()
        status, v2, progress = cli(client, "upload", str(second), "--name", name, "--alias", "default", "--weight",
                                   "10", "--url", base)  # fmt: skip
        promoted = cli(client, "promote", name, "2", "--url", base)
        rolled_back = cli(client, "rollback", name, "--url", base)
        refused_archive = cli(client, "archive", name, "2", "--url", base)
        back_to_one = cli(client, "promote", name, "1", "--url", base)
        archived = cli(client, "archive", name, "2", "--url", base)
        refused_pickle = cli(client, "upload", str(pickled), "--name", name, "--url", base)
        no_scope = cli({**env, "INFERQ_API_KEY": predict_only}, "upload", str(first), "--name", name, "--url", base)
        last_answer = predict()

    assert (first_answer["version"], first_answer["predictions"][0]["class_name"]) == (1, "setosa")
    assert (status, v2["version"], v2["alias"]["weights"]) == (0, 2, {"1": 90, "2": 10})
    assert f"registered {name}@2" in progress  # progress on stderr, JSON on stdout
    assert (promoted[0], promoted[1]["weights"]) == (0, {"2": 100})
    assert (rolled_back[0], rolled_back[1]["weights"]) == (0, {"1": 90, "2": 10})
    assert (refused_archive[0], refused_archive[1]["code"]) == (2, "conflict")  # the alias still routes to it
    assert (back_to_one[0], back_to_one[1]["weights"]) == (0, {"1": 100})
    assert (archived[0], archived[1]["status"]) == (0, "archived")
    assert (refused_pickle[0], refused_pickle[1]["code"]) == (2, "invalid_model")
    assert "inferq models import" in refused_pickle[1]["message"]
    assert (no_scope[0], no_scope[1]["code"]) == (2, "forbidden")
    assert last_answer["version"] == 1
