"""``inferq models upload | promote | rollback | archive`` against a stand-in API (httpx.MockTransport):
the requests they send, the weights they compute, and API problems as errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferq.cli import model_admin
from inferq.cli.main import build_parser
from inferq.errors import AliasNotFound, InvalidInput, InvalidModel, MalformedRequest
from inferq.settings import Settings

SETTINGS = Settings(api_key="iq_test")


class FakeApi:
    """Versions and aliases of one model, answering like the API's routes (problems with a code)."""

    def __init__(self, aliases: dict[str, dict[int, int]] | None = None, versions: int = 0) -> None:
        self.aliases = {name: {"weights": w, "previous": None} for name, w in (aliases or {}).items()}
        self.versions = versions
        self.calls: list[tuple[str, str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        path, method = request.url.path, request.method
        self.calls.append((method, path, body if method == "POST" else (json.loads(body) if body else None)))
        assert request.headers["authorization"] == "Bearer iq_test"
        parts = path.split("/")  # ["", "v1", "models", name, kind, item]
        if method == "POST" and parts[4] == "versions":
            if b"\x80\x04" in body:
                return _problem(422, "invalid_model", "the file is a Python pickle")
            self.versions += 1
            return httpx.Response(201, json={"version": self.versions, "status": "active", "sha256": "ab" * 32})
        if parts[4] == "aliases":
            alias = self.aliases.get(parts[5])
            if method == "PUT":
                sent = json.loads(body)
                weights = (
                    {sent["version"]: 100} if "version" in sent else {int(v): w for v, w in sent["weights"].items()}
                )
                previous = alias["weights"] if alias else None
                alias = self.aliases[parts[5]] = {"weights": weights, "previous": previous}
            if alias is None:
                return _problem(404, "alias_not_found", f"model has no alias {parts[5]!r}")
            return httpx.Response(200, json={"name": parts[5], **alias})
        if method == "PATCH":
            return httpx.Response(200, json={"version": int(parts[5]), **json.loads(body)})
        return _problem(404, "not_found", "no route")


def _problem(status: int, code: str, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"status": status, "code": code, "detail": detail, "title": "x", "type": "x"})


def documents(text: str) -> list[Any]:
    """The JSON documents printed one after another on stdout."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        value, at = decoder.raw_decode(text, at)
        found.append(value)
    return found


async def run(api: FakeApi, *argv: str) -> Any:
    args = build_parser().parse_args(["models", *argv])
    return await model_admin.run(args, SETTINGS, transport=httpx.MockTransport(api.handle))


@pytest.mark.parametrize(
    ("others", "weight", "expected"),
    [
        ({1: 100}, 5, {1: 95, 2: 5}),
        ({1: 50, 2: 50}, 10, {1: 45, 2: 45, 3: 10}),
        ({1: 1, 2: 99}, 95, {2: 5, 3: 95}),  # 1 would get 0.05: it leaves the alias
        ({1: 34, 2: 33, 3: 33}, 50, {1: 17, 2: 16, 3: 17, 4: 50}),  # 17 / 16.5 / 16.5: the tie goes to the newer
        ({1: 60, 2: 40}, 100, {3: 100}),
    ],
)
def test_the_new_version_gets_its_share_and_the_rest_keep_their_proportions(
    others: dict[int, int], weight: int, expected: dict[int, int]
) -> None:
    new = max(others) + 1
    shared = model_admin.share(others, new=new, weight=weight)
    assert shared == expected
    assert sum(shared.values()) == 100


def test_a_share_of_an_alias_without_traffic_is_refused() -> None:
    with pytest.raises(InvalidInput, match="give the new version --weight 100"):
        model_admin.share({}, new=1, weight=5)


async def test_upload_sends_the_fields_and_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api, model = FakeApi(), tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x08onnx-bytes")
    status = await run(api, "upload", str(model), "--name", "iris", "--feature-names", "a, b", "--class-names", "x,y",
                       "--description", "retrained")  # fmt: skip
    assert status == 0
    ((method, path, body),) = api.calls
    assert (method, path) == ("POST", "/v1/models/iris/versions")
    parts = [
        b'name="feature_names"\r\n\r\n["a", "b"]',
        b'name="class_names"\r\n\r\n["x", "y"]',
        b'name="description"\r\n\r\nretrained',
        b'name="file"; filename="m.onnx"',
        b"\x08\x08onnx-bytes",
    ]
    for part in parts:
        assert part in body
    assert body.index(b'name="description"') < body.index(b'name="file"')  # fields before the file
    assert json.loads(capsys.readouterr().out)["version"] == 1


async def test_upload_with_a_weight_shares_the_alias(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api, model = FakeApi({"default": {1: 60, 2: 40}}, versions=2), tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x08")
    await run(api, "upload", str(model), "--name", "iris", "--alias", "default", "--weight", "5")
    assert [(m, p) for m, p, _ in api.calls] == [
        ("GET", "/v1/models/iris/aliases/default"),  # before the upload: the alias must exist
        ("POST", "/v1/models/iris/versions"),
        ("GET", "/v1/models/iris/aliases/default"),
        ("PUT", "/v1/models/iris/aliases/default"),
    ]
    assert api.calls[-1][2] == {"weights": {"1": 57, "2": 38, "3": 5}}
    out = json.loads(capsys.readouterr().out)
    assert (out["version"], out["alias"]["weights"]) == (3, {"1": 57, "2": 38, "3": 5})


async def test_upload_with_an_alias_and_no_weight_pins_it(tmp_path: Path) -> None:
    api, model = FakeApi({"default": {1: 100}}, versions=1), tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x08")
    await run(api, "upload", str(model), "--name", "iris", "--alias", "canary")
    assert api.calls[-1] == ("PUT", "/v1/models/iris/aliases/canary", {"version": 2})


async def test_upload_refusals(tmp_path: Path) -> None:
    api, model = FakeApi(), tmp_path / "m.onnx"
    model.write_bytes(b"\x80\x04pickled")
    with pytest.raises(InvalidModel, match="the file is a Python pickle") as caught:
        await run(api, "upload", str(model), "--name", "iris")
    assert caught.value.details == {"status": 422}
    with pytest.raises(AliasNotFound, match="no alias 'canary'"):
        await run(api, "upload", str(model), "--name", "iris", "--alias", "canary", "--weight", "5")
    with pytest.raises(InvalidInput, match="--weight must be 1 to 100"):
        await run(api, "upload", str(model), "--name", "iris", "--alias", "default", "--weight", "0")
    with pytest.raises(InvalidInput, match="--weight needs --alias"):
        await run(api, "upload", str(model), "--name", "iris", "--weight", "5")
    with pytest.raises(MalformedRequest, match="no such file"):
        await run(api, "upload", str(tmp_path / "missing.onnx"), "--name", "iris")
    assert [c for c in api.calls if c[0] != "GET"] == [("POST", "/v1/models/iris/versions", api.calls[0][2])]


async def test_promote_rollback_and_archive(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi({"default": {1: 95, 2: 5}}, versions=2)
    await run(api, "promote", "iris", "2")
    assert api.calls[-1] == ("PUT", "/v1/models/iris/aliases/default", {"version": 2})
    await run(api, "rollback", "iris")
    assert api.calls[-2:] == [
        ("GET", "/v1/models/iris/aliases/default", None),
        ("PUT", "/v1/models/iris/aliases/default", {"weights": {"1": 95, "2": 5}}),
    ]
    await run(api, "archive", "iris", "1")
    assert api.calls[-1] == ("PATCH", "/v1/models/iris/versions/1", {"status": "archived"})
    await run(api, "promote", "iris", "1", "--alias", "prod")
    assert api.calls[-1] == ("PUT", "/v1/models/iris/aliases/prod", {"version": 1})
    outputs = documents(capsys.readouterr().out)
    assert [doc.get("weights", doc.get("status")) for doc in outputs] == [
        {"2": 100},
        {"1": 95, "2": 5},
        "archived",
        {"1": 100},
    ]


async def test_rollback_without_previous_weights_is_an_error() -> None:
    api = FakeApi({"default": {1: 100}}, versions=1)
    with pytest.raises(Exception, match="has no previous weights to roll back to"):
        await run(api, "rollback", "iris")
    assert [c[0] for c in api.calls] == ["GET"]


async def test_a_key_is_required() -> None:
    args = build_parser().parse_args(["models", "archive", "iris", "1"])
    with pytest.raises(MalformedRequest, match="no API key"):
        await model_admin.run(args, Settings(), transport=httpx.MockTransport(FakeApi().handle))
