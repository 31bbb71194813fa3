"""Which model versions a worker pool serves: ``--all``, or ``--models wine@2,iris,iris@prod``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inferq.contracts.models import ModelInfo, ModelRef, ModelVersion
from inferq.errors import InvalidInput


@dataclass(frozen=True)
class Selection:
    """``all``: every active or deprecated version. ``refs``: ``name@3`` is that version whatever its
    status; ``name`` and ``name@alias`` are the served versions the alias routes traffic to, its shadow
    included. Deleted versions are never listed, so never selected.

    Re-evaluated at every discovery, so new versions and moved aliases are picked up without restart.
    """

    all: bool = False
    refs: tuple[ModelRef, ...] = ()

    @classmethod
    def parse(cls, *, all_models: bool, models: Sequence[str] | None) -> Selection:
        if all_models == bool(models):
            raise InvalidInput("choose --all or --models (a comma-separated list such as wine@2,iris@1)")
        return cls(all=all_models, refs=tuple(ModelRef.parse(m) for m in models or ()))

    def pick(self, infos: Sequence[ModelInfo]) -> tuple[dict[str, ModelVersion], list[str]]:
        """The versions to serve by partition key, and the refs that matched nothing (yet)."""
        chosen: dict[str, ModelVersion] = {}
        if self.all:
            for info in infos:
                chosen.update((v.key, v) for v in info.versions if v.status != "archived")
            return chosen, []
        by_name = {info.name: info for info in infos}
        missing: list[str] = []
        for ref in self.refs:
            found = _match(by_name.get(ref.name), ref)
            if not found:
                missing.append(str(ref) if ref.version is None else f"{ref.name}@{ref.version}")
            chosen.update((v.key, v) for v in found)
        return chosen, missing


def _match(info: ModelInfo | None, ref: ModelRef) -> list[ModelVersion]:
    if info is None:
        return []
    if ref.version is not None:
        return [v for v in info.versions if v.version == ref.version]
    alias = next((a for a in info.aliases if a.name == ref.alias), None)
    if alias is None:
        return []
    routed = {version for version, weight in alias.weights.items() if weight > 0}
    if alias.shadow is not None:  # mirrored requests need a consumer too
        routed.add(alias.shadow.version)
    return [v for v in info.versions if v.version in routed and v.status != "archived"]
