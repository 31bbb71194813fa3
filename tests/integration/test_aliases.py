"""Aliases and statuses: validated weights, replacing aliases, status changes, listings."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import pytest

from inferq.contracts.models import Alias, ModelSignature, VersionStatus
from inferq.errors import InvalidInput, ModelNotFound, VersionNotFound
from inferq.store.registry import Registry

pytestmark = pytest.mark.integration


@pytest.fixture
async def two_versions(registry: Registry, model_name: str, signature: ModelSignature) -> str:
    """``model_name`` with two active versions; ``default`` → 1."""
    for _ in range(2):
        await registry.register(name=model_name, model=secrets.token_bytes(16), signature=signature)
    return model_name


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({1: 60, 2: 30}, "must sum to 100, got 90"),
        ({1: 100, 2: 5}, "must sum to 100, got 105"),
        ({1: 100, 2: 0}, "weight of version 2 must be a positive integer, got 0"),
        ({1: 110, 2: -10}, "weight of version 2 must be a positive integer, got -10"),
        ({1: 99.5, 2: 0.5}, "weight of version 1 must be a positive integer, got 99.5"),
        ({1: 50, 9: 50}, r"has no version 9 \(versions: 1, 2\)"),
        ({0: 100}, "invalid version 0"),
        ({}, "at least one version"),
    ],
)
async def test_invalid_weights_are_refused(
    registry: Registry, two_versions: str, weights: Mapping[int, int], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        await registry.set_alias(two_versions, "canary", weights=weights)
    assert "canary" not in {a.name for a in (await registry.get_model(two_versions)).aliases}


async def test_archived_versions_cannot_receive_traffic(registry: Registry, two_versions: str) -> None:
    await registry.set_status(two_versions, 2, "archived")
    with pytest.raises(InvalidInput, match=r"version 2 of model .* is archived"):
        await registry.set_alias(two_versions, "canary", weights={1: 50, 2: 50})


async def test_alias_name_and_model_are_checked(registry: Registry, two_versions: str, model_name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid alias"):
        await registry.set_alias(two_versions, "9lives", weights={1: 100})
    with pytest.raises(ModelNotFound):
        await registry.set_alias(f"{model_name}-other", "prod", weights={1: 100})


async def test_set_alias_creates_then_replaces(registry: Registry, two_versions: str) -> None:
    created = await registry.set_alias(two_versions, "canary", weights={1: 95, 2: 5})
    assert created == Alias(model=two_versions, name="canary", weights={1: 95, 2: 5}, fallback=False)
    replaced = await registry.set_alias(two_versions, "canary", weights={2: 100}, fallback=True)
    assert replaced == Alias(model=two_versions, name="canary", weights={2: 100}, fallback=True, previous={1: 95, 2: 5})
    aliases = {a.name: a for a in (await registry.get_model(two_versions)).aliases}
    assert aliases["canary"] == replaced
    assert aliases["default"].weights == {1: 100}


async def test_registering_onto_an_alias_keeps_its_fallback_flag(
    registry: Registry, two_versions: str, signature: ModelSignature
) -> None:
    await registry.set_alias(two_versions, "prod", weights={1: 100}, fallback=True)
    await registry.register(name=two_versions, model=secrets.token_bytes(8), signature=signature, aliases=["prod"])
    prod = {a.name: a for a in (await registry.get_model(two_versions)).aliases}["prod"]
    assert (prod.weights, prod.fallback) == ({3: 100}, True)


@pytest.mark.parametrize("status", ["deprecated", "archived", "active"])
async def test_set_status(registry: Registry, two_versions: str, status: VersionStatus) -> None:
    changed = await registry.set_status(two_versions, 2, status)
    assert (changed.version, changed.status) == (2, status)
    assert (await registry.get_version(two_versions, 2)).status == status
    assert (await registry.get_version(two_versions, 1)).status == "active"


async def test_set_status_errors(registry: Registry, two_versions: str, model_name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid status 'retired'"):
        await registry.set_status(two_versions, 1, "retired")  # type: ignore[arg-type]
    with pytest.raises(VersionNotFound, match=r"has no version 5; versions: 1, 2"):
        await registry.set_status(two_versions, 5, "archived")
    with pytest.raises(ModelNotFound):
        await registry.set_status(f"{model_name}-other", 1, "archived")


async def test_list_and_get_models(registry: Registry, signature: ModelSignature, model_name: str) -> None:
    names = [f"{model_name}-b", f"{model_name}-a"]
    for name in names:
        await registry.register(name=name, model=secrets.token_bytes(8), signature=signature)
    await registry.register(name=names[0], model=secrets.token_bytes(8), signature=signature)
    listed = [m for m in await registry.list_models() if m.name.startswith(model_name)]
    assert [m.name for m in listed] == sorted(names)
    assert [[v.version for v in m.versions] for m in listed] == [[1], [1, 2]]
    assert all(v.model == m.name for m in listed for v in m.versions)
    assert await registry.get_model(names[0]) == listed[1]
    with pytest.raises(ModelNotFound, match="not found"):
        await registry.get_model(f"{model_name}-c")
