"""``stack``/``split``: one run over many requests gives each request exactly its own answer."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import pytest

from inferq.engine import Runner, split, stack
from inferq.errors import InferenceFailed
from inferq.settings import EngineSettings

ROW_COUNTS = [1, 3, 2, 5, 1]


def requests(x: np.ndarray, counts: list[int]) -> list[dict[str, np.ndarray]]:
    starts = np.cumsum([0, *counts])
    return [{"input": x[start:stop]} for start, stop in pairwise(starts.tolist())]


def test_offsets_are_row_boundaries() -> None:
    x = np.arange(12 * 3, dtype=np.float32).reshape(12, 3)
    feeds, offsets = stack(requests(x, ROW_COUNTS))
    assert offsets == [0, 1, 4, 6, 11, 12]
    np.testing.assert_array_equal(feeds["input"], x)


def test_identity_split_returns_each_request_exactly(identity_model: bytes) -> None:
    runner = Runner.load(identity_model, settings=EngineSettings())
    x = np.random.default_rng(1).normal(size=(12, 3)).astype(np.float32)
    batch = requests(x, ROW_COUNTS)
    feeds, offsets = stack([{"x": r["input"]} for r in batch])
    parts = split(runner.run(feeds), offsets)
    assert [part["y"].shape[0] for part in parts] == ROW_COUNTS
    for request, part in zip(batch, parts, strict=True):
        np.testing.assert_array_equal(part["y"], request["input"])


@pytest.mark.parametrize("fixture", ["wine_rf", "diabetes_gbr"])
def test_batched_run_equals_individual_runs(fixture: str, request: pytest.FixtureRequest) -> None:
    fitted = request.getfixturevalue(fixture)
    runner: Runner = fitted.runner
    batch = requests(fitted.x[:12], ROW_COUNTS)
    feeds, offsets = stack(batch)
    parts = split(runner.run(feeds), offsets)
    assert len(parts) == 5
    for single, part in zip(batch, parts, strict=True):
        alone = runner.run(single)
        assert part.keys() == alone.keys()
        for name in alone:
            np.testing.assert_array_equal(part[name], alone[name])  # bit-exact for tree ensembles


def test_batched_linear_model_matches_within_float_noise(iris_lr: Any) -> None:
    """MatMul kernels may differ by batch size, so a linear model agrees to float32 precision."""
    batch = requests(iris_lr.x[::10], [1, 7, 2, 5])
    feeds, offsets = stack(batch)
    parts = split(iris_lr.runner.run(feeds), offsets)
    for single, part in zip(batch, parts, strict=True):
        alone = iris_lr.runner.run(single)
        np.testing.assert_array_equal(part["label"], alone["label"])
        np.testing.assert_allclose(part["probabilities"], alone["probabilities"], rtol=0, atol=1e-6)


def test_multiple_inputs_stack_together(two_input_model: bytes) -> None:
    runner = Runner.load(two_input_model, settings=EngineSettings())
    one = {"a": np.ones((1, 2), np.float32), "b": np.ones((1, 2), np.float32), "ids": np.array([5])}
    two = {"ids": np.array([1, 2]), "a": np.zeros((2, 2), np.float32), "b": np.full((2, 2), 3, np.float32)}
    feeds, offsets = stack([one, two])
    first, second = split(runner.run(feeds), offsets)
    assert first["n"].tolist() == [10]
    assert second["n"].tolist() == [2, 4]
    assert second["s"].tolist() == [[3, 3], [3, 3]]


def test_single_request_is_not_copied() -> None:
    x = np.zeros((2, 3), np.float32)
    feeds, offsets = stack([{"input": x}])
    assert feeds["input"] is x
    assert offsets == [0, 2]


def test_stack_rejects_mismatched_requests() -> None:
    with pytest.raises(ValueError, match="cannot stack requests"):
        stack([{"a": np.zeros((1, 2))}, {"b": np.zeros((1, 2))}])
    with pytest.raises(ValueError, match="at least one request"):
        stack([])


def test_split_rejects_outputs_that_are_not_batch_major() -> None:
    with pytest.raises(InferenceFailed, match="output 'total' has a scalar for a batch of 3"):
        split({"total": np.array(1.0)}, [0, 1, 3])
    with pytest.raises(InferenceFailed, match="output 'y' has 2 rows for a batch of 3"):
        split({"y": np.zeros((2, 1))}, [0, 1, 3])
