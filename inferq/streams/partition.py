"""A partition (``model@version``) and the names of its lanes, group, dead letters and rate key."""

from __future__ import annotations

from dataclasses import dataclass

from inferq.contracts.messages import Lane
from inferq.contracts.names import Names


@dataclass(frozen=True, slots=True)
class Partition:
    """Everything Redis-side that belongs to one model version."""

    model: str
    version: int
    work: str
    bulk: str
    dlq: str
    group: str
    rate_key: str
    alive_key: str

    @classmethod
    def of(cls, names: Names, *, model: str, version: int) -> Partition:
        key = names.partition(model, version)
        return cls(
            model=model,
            version=version,
            work=names.work_stream(key),
            bulk=names.bulk_stream(key),
            dlq=names.dead_letters(key),
            group=names.group(key),
            rate_key=names.rate(key),
            alive_key=names.alive(key),
        )

    @property
    def key(self) -> str:
        return f"{self.model}@{self.version}"

    def stream(self, lane: Lane) -> str:
        return self.work if lane == "interactive" else self.bulk

    def lane_of(self, stream: str) -> Lane:
        return "interactive" if stream == self.work else "bulk"
