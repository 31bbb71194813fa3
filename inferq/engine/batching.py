"""Micro-batching: stack many requests' feeds into one run, split the outputs back exactly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

import numpy as np

from inferq.errors import InferenceFailed
from inferq.inputs import batch_size


def stack(requests: Sequence[Mapping[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Concatenate every input along axis 0; ``offsets`` are the row boundaries ``[0, n1, n1+n2, …]``.

    Requests must have the same input names and the same non-batch dimensions (they were
    validated against one signature); otherwise ``ValueError``.
    """
    if not requests:
        raise ValueError("stack needs at least one request")
    offsets = [0]
    for feeds in requests:
        offsets.append(offsets[-1] + batch_size(feeds))
    first = requests[0]
    if len(requests) == 1:
        return dict(first), offsets
    names = list(first)
    for feeds in requests[1:]:
        if set(feeds) != set(names):
            raise ValueError(f"cannot stack requests with different inputs: {sorted(feeds)} vs {sorted(names)}")
    stacked = {name: np.concatenate([feeds[name] for feeds in requests], axis=0) for name in names}
    return stacked, offsets


def split(outputs: Mapping[str, np.ndarray], offsets: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Each request's rows of every output (views, no copies), in request order.

    An output whose first dimension is not the batch (e.g. a scalar) cannot be split:
    ``InferenceFailed``.
    """
    check_rows(outputs, rows=offsets[-1])
    bounds = list(pairwise(offsets))
    return [{name: array[start:stop] for name, array in outputs.items()} for start, stop in bounds]


def check_rows(outputs: Mapping[str, np.ndarray], *, rows: int) -> None:
    """Every output has exactly ``rows`` rows, else ``InferenceFailed`` naming it.

    NOTE: a model may declare ``[None, …]`` outputs yet return another row count at run time.
    """
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != rows:
            got = "a scalar" if array.ndim == 0 else f"{array.shape[0]} rows"
            raise InferenceFailed(f"output {name!r} has {got} for a batch of {rows}; it is not batch-major")
