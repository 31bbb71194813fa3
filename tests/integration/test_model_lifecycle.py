"""Versions and aliases over HTTP: status, description, overrides, soft delete, weights, shadows, and refusals."""

from __future__ import annotations

import re
from typing import Any

import httpx
import msgspec
import pytest
from apikit import SIGNATURE, Api, register_model, running, tuned

from inferq.contracts.models import TensorSpec
from inferq.errors import VersionNotFound
from inferq.settings import Settings
from inferq.store.registry import Registry

pytestmark = pytest.mark.integration

# Five features instead of four: a version with this signature cannot shadow one with SIGNATURE.
WIDER = msgspec.structs.replace(
    SIGNATURE, inputs=(TensorSpec(name="X", dtype="float32", shape=(None, 5)),), feature_names=None
)
ROW = {"inputs": [[1, 2, 3, 4]]}
NOW = {"Prefer": "wait=0"}


@pytest.fixture
async def model(registry: Registry, model_name: str) -> str:
    """Versions 1 (``default``), 2 (``prod``), 3 (no alias), and 4 with other inputs (no alias)."""
    await register_model(registry, model_name)
    await registry.register(name=model_name, model=b"model-v3", signature=SIGNATURE)
    await registry.register(name=model_name, model=b"model-v4", signature=WIDER)
    return model_name


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


async def _alias(api: Api, model: str, alias: str) -> dict[str, Any]:
    response = await api.client.get(f"/v1/models/{model}/aliases/{alias}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_get_and_patch_a_version(settings: Settings, model: str) -> None:
    url = f"/v1/models/{model}/versions/2"
    async with running(tuned(settings)) as api:
        got = await api.client.get(url)
        deprecated = await api.client.patch(url, json={"status": "deprecated"})
        described = await api.client.patch(url, json={"description": "retrained", "overrides": {"max_batch": 32}})
        cleared = await api.client.patch(url, json={"description": None, "overrides": {}})
        served = await api.client.post(f"/v1/models/{model}@prod/predict", json=ROW, headers=NOW)
        async with api.as_key(await api.key_for("default", "predict")) as predictor:
            read = await predictor.get(url)
            refused = await predictor.patch(url, json={"status": "archived"})
        bad = [
            await api.client.patch(url, json={"status": "retired"}),
            await api.client.patch(url, json={"colour": "blue"}),
            await api.client.patch(url, json={"overrides": {"max_batch": "many"}}),
            await api.client.patch(url, json={"overrides": {"result_cache_ttl_s": -1}}),
        ]
        missing = [
            await api.client.get(f"/v1/models/{model}/versions/9"),
            await api.client.patch(f"/v1/models/{model}/versions/9", json={"status": "active"}),
            await api.client.get(f"/v1/models/nope-{model}/versions/1"),
        ]
        after = (await api.client.get(url)).json()
    assert got.status_code == 200
    assert {k: got.json()[k] for k in ("version", "status", "ready")} == {
        "version": 2,
        "status": "active",
        "ready": False,
    }
    assert got.json()["signature"]["inputs"] == [{"name": "X", "dtype": "float32", "shape": [None, 4]}]
    assert (deprecated.status_code, deprecated.json()["status"]) == (200, "deprecated")
    assert described.status_code == 200
    assert (described.json()["description"], described.json()["overrides"]) == ("retrained", {"max_batch": 32})
    assert '"max_batch":32}' in described.text  # a whole number stays an integer
    assert cleared.status_code == 200
    assert "description" not in cleared.json()
    assert "overrides" not in cleared.json()
    assert (served.status_code, served.json()["version"]) == (202, 2)  # deprecated: still served
    assert (read.status_code, read.json()["status"]) == (200, "deprecated")
    _problem(refused, 403, "forbidden")
    _problem(bad[0], 400, "malformed_request")
    _problem(bad[1], 400, "malformed_request")
    _problem(bad[2], 400, "malformed_request")
    assert "result_cache_ttl_s" in _problem(bad[3], 422, "invalid_input")["detail"]
    assert "has no version 9" in _problem(missing[0], 404, "version_not_found")["detail"]
    _problem(missing[1], 404, "version_not_found")
    _problem(missing[2], 404, "model_not_found")
    assert (after["status"], after.get("description"), after.get("overrides")) == ("deprecated", None, None)


async def test_archiving_or_deleting_a_version_an_alias_routes_to_is_a_conflict(settings: Settings, model: str) -> None:
    async with running(tuned(settings)) as api:
        shadowed = await api.client.put(
            f"/v1/models/{model}/aliases/default", json={"shadow": {"version": 3, "share": 10}, "version": 1}
        )
        archive_weighted = await api.client.patch(f"/v1/models/{model}/versions/2", json={"status": "archived"})
        archive_shadow = await api.client.patch(f"/v1/models/{model}/versions/3", json={"status": "archived"})
        delete_weighted = await api.client.delete(f"/v1/models/{model}/versions/1")
        still = [(await api.client.get(f"/v1/models/{model}/versions/{v}")).json()["status"] for v in (1, 2, 3)]
        # Move the traffic away first: then both go.
        await api.client.put(f"/v1/models/{model}/aliases/prod", json={"version": 1})
        await api.client.put(f"/v1/models/{model}/aliases/default", json={"version": 1, "shadow": None})
        archived = await api.client.patch(f"/v1/models/{model}/versions/2", json={"status": "archived"})
        deleted = await api.client.delete(f"/v1/models/{model}/versions/3")
        by_number = await api.client.post(f"/v1/models/{model}@2/predict", json=ROW)
    assert shadowed.status_code == 200, shadowed.text
    weighted = _problem(archive_weighted, 409, "conflict")
    assert "prod (weights)" in weighted["detail"]
    assert weighted["details"]["aliases"] == ["prod"]
    assert "default (shadow)" in _problem(archive_shadow, 409, "conflict")["detail"]
    assert _problem(delete_weighted, 409, "conflict")["details"]["aliases"] == ["default"]
    assert still == ["active", "active", "active"]  # nothing half-applied
    assert (archived.status_code, archived.json()["status"]) == (200, "archived")
    assert deleted.status_code == 204
    assert _problem(by_number, 404, "version_not_found")["details"]["status"] == "archived"


async def test_a_deleted_version_is_hidden_never_served_and_its_number_never_reused(
    settings: Settings, registry: Registry, model: str
) -> None:
    sha256 = (await registry.get_version(model, 3)).sha256
    async with running(tuned(settings)) as api:
        deleted = await api.client.delete(f"/v1/models/{model}/versions/3")
        again = await api.client.delete(f"/v1/models/{model}/versions/3")
        got = await api.client.get(f"/v1/models/{model}/versions/3")
        patched = await api.client.patch(f"/v1/models/{model}/versions/3", json={"status": "active"})
        listed = (await api.client.get(f"/v1/models/{model}")).json()
        listing = (await api.client.get("/v1/models")).json()
        predicted = await api.client.post(f"/v1/models/{model}@3/predict", json=ROW)
        pinned = await api.client.put(f"/v1/models/{model}/aliases/canary", json={"version": 3})
        shadow = await api.client.put(
            f"/v1/models/{model}/aliases/canary", json={"version": 1, "shadow": {"version": 3, "share": 5}}
        )
        newer = await registry.register(name=model, model=b"model-v5", signature=SIGNATURE)
    assert deleted.status_code == 204
    assert deleted.content == b""
    _problem(again, 404, "version_not_found")
    assert "versions: 1, 2, 4" in _problem(got, 404, "version_not_found")["detail"]
    _problem(patched, 404, "version_not_found")
    assert [v["version"] for v in listed["versions"]] == [1, 2, 4]
    (mine,) = [m for m in listing["models"] if m["name"] == model]
    assert [v["version"] for v in mine["versions"]] == [1, 2, 4]
    _problem(predicted, 404, "version_not_found")
    assert "version 3 of model" in _problem(pinned, 422, "invalid_input")["detail"]
    assert "is deleted" in pinned.json()["detail"]
    assert "is deleted" in _problem(shadow, 422, "invalid_input")["detail"]
    assert newer.version == 5
    assert await registry.artifact(sha256) == b"model-v3"  # the artifact is kept
    with pytest.raises(VersionNotFound):
        await registry.get_version(model, 3)


async def test_put_and_get_aliases_weights_previous_fallback_and_shadow(settings: Settings, model: str) -> None:
    url = f"/v1/models/{model}/aliases/canary"
    async with running(tuned(settings)) as api:
        created = await api.client.put(url, json={"version": 1, "fallback": True})
        split = await api.client.put(url, json={"weights": {"1": 95, "2": 5}})
        canaried = {
            (await api.client.post(f"/v1/models/{model}@canary/predict", json=ROW, headers=NOW)).json()["version"]
            for _ in range(60)
        }
        shadowed = await api.client.put(url, json={"weights": {"1": 95, "2": 5}, "shadow": {"version": 3, "share": 10}})
        kept = await api.client.put(url, json={"weights": {"1": 90, "2": 10}})
        graduated = await api.client.put(url, json={"weights": {"1": 50, "3": 50}})  # the shadow's version is weighted
        rolled_back = await api.client.put(url, json={"weights": (await _alias(api, model, "canary"))["previous"]})
        pinned = await api.client.put(url, json={"version": 2})
        served = await api.client.post(f"/v1/models/{model}@canary/predict", json=ROW, headers=NOW)
        read = await _alias(api, model, "canary")
        async with api.as_key(await api.key_for("default", "predict")) as predictor:
            readable = await predictor.get(url)
            refused = await predictor.put(url, json={"version": 1})
        unknown = await api.client.get(f"/v1/models/{model}/aliases/staging")
        no_model = await api.client.put(f"/v1/models/nope-{model}/aliases/canary", json={"version": 1})
    assert (created.status_code, created.json()) == (
        200, {"name": "canary", "weights": {"1": 100}, "fallback": True, "shadow": None, "previous": None}
    )  # fmt: skip
    assert split.json() == {
        "name": "canary", "weights": {"1": 95, "2": 5}, "fallback": True, "shadow": None, "previous": {"1": 100}
    }  # fmt: skip
    assert canaried <= {1, 2}
    assert 1 in canaried
    assert shadowed.json()["shadow"] == {"version": 3, "share": 10}
    assert shadowed.json()["previous"] == {"1": 100}  # the weights did not change: previous stays
    assert (kept.json()["shadow"], kept.json()["previous"]) == ({"version": 3, "share": 10}, {"1": 95, "2": 5})
    assert (graduated.json()["shadow"], graduated.json()["weights"]) == (None, {"1": 50, "3": 50})
    assert rolled_back.json()["weights"] == {"1": 90, "2": 10}
    assert pinned.json()["weights"] == {"2": 100}
    assert (served.status_code, served.json()["version"]) == (202, 2)  # this process saw the change at once
    assert read == pinned.json()
    assert (read["fallback"], read["previous"]) == (True, {"1": 90, "2": 10})
    assert readable.json() == read
    _problem(refused, 403, "forbidden")
    assert "aliases: canary, default, prod" in _problem(unknown, 404, "alias_not_found")["detail"]
    _problem(no_model, 404, "model_not_found")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"weights": {"1": 60, "2": 30}}, "must sum to 100, got 90"),
        ({"weights": {"1": 100, "2": 5}}, "must sum to 100, got 105"),
        ({"weights": {"1": 100, "2": 0}}, "weight of version 2 must be a positive integer, got 0"),
        ({"weights": {"1": 50, "9": 50}}, r"has no version 9 \(versions: 1, 2, 3, 4\)"),
        ({"weights": {}}, "at least one version"),
        ({"version": 5}, "has no version 5"),
        ({"version": 1, "weights": {"1": 100}}, 'exactly one of "version"'),
        ({"fallback": True}, 'exactly one of "version"'),
        ({"version": 1, "shadow": {"version": 3, "share": 0}}, "share must be a whole percentage from 1 to 100, got 0"),
        ({"version": 1, "shadow": {"version": 3, "share": 101}}, "from 1 to 100, got 101"),
        ({"version": 1, "shadow": {"version": 1, "share": 10}}, "already sends it 100% of its traffic"),
        ({"weights": {"1": 50, "2": 50}, "shadow": {"version": 2, "share": 5}}, "already sends it 50%"),
        ({"version": 1, "shadow": {"version": 9, "share": 10}}, "has no version 9"),
        (
            {"version": 1, "shadow": {"version": 4, "share": 10}},
            r"shadow version 4 of model .* takes other inputs than version 1: X float32\[N, 5\] vs X float32\[N, 4\]",
        ),
        ({"weights": {"4": 50, "2": 50}}, None),  # versions with other inputs may share traffic (no shadow)
    ],
)
async def test_bad_alias_changes_are_refused_naming_the_issue(
    settings: Settings, model: str, body: dict[str, Any], message: str | None
) -> None:
    url = f"/v1/models/{model}/aliases/canary"
    async with running(tuned(settings)) as api:
        await api.client.put(url, json={"weights": {"1": 70, "2": 30}})
        answer = await api.client.put(url, json=body)
        after = await _alias(api, model, "canary")
    if message is None:
        assert answer.status_code == 200, answer.text
        return
    assert re.search(message, _problem(answer, 422, "invalid_input")["detail"]), answer.json()
    assert after["weights"] == {"1": 70, "2": 30}  # nothing half-applied
    assert after["shadow"] is None


async def test_an_alias_to_an_archived_version_and_a_shadow_of_one_are_refused(settings: Settings, model: str) -> None:
    async with running(tuned(settings)) as api:
        archived = await api.client.patch(f"/v1/models/{model}/versions/3", json={"status": "archived"})
        weighted = await api.client.put(f"/v1/models/{model}/aliases/canary", json={"weights": {"1": 50, "3": 50}})
        shadow = await api.client.put(
            f"/v1/models/{model}/aliases/canary", json={"version": 1, "shadow": {"version": 3, "share": 10}}
        )
        mixed = await api.client.put(
            f"/v1/models/{model}/aliases/canary",
            json={"weights": {"2": 50, "4": 50}, "shadow": {"version": 1, "share": 1}},
        )
        malformed = await api.client.put(f"/v1/models/{model}/aliases/canary", json={"weights": {"1": 99.5, "2": 0.5}})
        bad_name = await api.client.put(f"/v1/models/{model}/aliases/9lives", json={"version": 1})
        missing = await api.client.get(f"/v1/models/{model}/aliases/canary")
    assert archived.status_code == 200
    assert "version 3 of model" in _problem(weighted, 422, "invalid_input")["detail"]
    assert "is archived and cannot receive traffic" in weighted.json()["detail"]
    assert "is archived" in _problem(shadow, 422, "invalid_input")["detail"]
    # A shadow must take the inputs of every weighted version: 1 fits 2 but not 4.
    assert "takes other inputs than version 4" in _problem(mixed, 422, "invalid_input")["detail"]
    _problem(malformed, 400, "malformed_request")
    assert "invalid alias '9lives'" in _problem(bad_name, 422, "invalid_input")["detail"]
    _problem(missing, 404, "alias_not_found")  # never created by the refused calls


async def test_delete_alias(settings: Settings, model: str) -> None:
    async with running(tuned(settings)) as api:
        await api.client.put(f"/v1/models/{model}/aliases/canary", json={"version": 2})
        async with api.as_key(await api.key_for("default", "jobs")) as jobs:
            refused = await jobs.delete(f"/v1/models/{model}/aliases/canary")
        default = await api.client.delete(f"/v1/models/{model}/aliases/default")
        deleted = await api.client.delete(f"/v1/models/{model}/aliases/canary")
        gone = await api.client.get(f"/v1/models/{model}/aliases/canary")
        again = await api.client.delete(f"/v1/models/{model}/aliases/canary")
        predicted = await api.client.post(f"/v1/models/{model}@canary/predict", json=ROW)
        aliases = [a["name"] for a in (await api.client.get(f"/v1/models/{model}")).json()["aliases"]]
        no_model = await api.client.delete(f"/v1/models/nope-{model}/aliases/canary")
    _problem(refused, 403, "forbidden")
    assert "'default' alias cannot be deleted" in _problem(default, 409, "conflict")["detail"]
    assert deleted.status_code == 204
    _problem(gone, 404, "alias_not_found")
    _problem(again, 404, "alias_not_found")
    _problem(predicted, 404, "alias_not_found")
    assert aliases == ["default", "prod"]
    _problem(no_model, 404, "model_not_found")


async def test_writes_need_the_admin_scope(settings: Settings, model: str) -> None:
    writes = [
        ("PATCH", f"/v1/models/{model}/versions/3", {"status": "deprecated"}),
        ("DELETE", f"/v1/models/{model}/versions/3", None),
        ("PUT", f"/v1/models/{model}/aliases/canary", {"version": 1}),
        ("DELETE", f"/v1/models/{model}/aliases/prod", None),
    ]
    async with running(tuned(settings)) as api:
        keys = [await api.key_for("default", "predict"), await api.key_for("default", "jobs")]
        answers = []
        for key in keys:
            async with api.as_key(key) as client:
                for method, url, body in writes:
                    answers.append(await client.request(method, url, json=body))
        async with api.as_key("iq_" + "0" * 16 + "_" + "0" * 48) as unknown:
            anonymous = await unknown.get(f"/v1/models/{model}/versions/3")
        state = (await api.client.get(f"/v1/models/{model}")).json()
    assert [(a.status_code, a.json()["code"]) for a in answers] == [(403, "forbidden")] * 8
    _problem(anonymous, 401, "unauthenticated")
    assert [v["status"] for v in state["versions"]] == ["active"] * 4
    assert [a["name"] for a in state["aliases"]] == ["default", "prod"]
