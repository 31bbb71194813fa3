"""The three input forms convert to identical feeds; dtypes are cast as the signature says."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inferq.contracts.models import ModelSignature, TensorSpec
from inferq.engine import predict
from inferq.inputs import batch_size, check_feeds, to_feeds

NAMES = ("a", "b", "c")
TABULAR = ModelSignature(
    inputs=(TensorSpec(name="input", dtype="float32", shape=(None, 3)),),
    outputs=(TensorSpec(name="y", dtype="float32", shape=(None, 3)),),
    feature_names=NAMES,
)
ROWS = [[1.5, 2, -3.25], [4, 5.5, 6], [7, 8, 9.125]]
EXPECTED = np.array(ROWS, dtype=np.float32)


def signature_of(*inputs: TensorSpec) -> ModelSignature:
    return ModelSignature(inputs=inputs, outputs=(TensorSpec(name="y", dtype="float32", shape=(None,)),))


def all_forms(rows: list[list[float]]) -> dict[str, object]:
    """The same rows in every accepted form."""
    return {
        "records": [dict(zip(NAMES, row, strict=True)) for row in rows],
        "records, shuffled keys": [dict(reversed(list(zip(NAMES, row, strict=True)))) for row in rows],
        "rows": rows,
        "rows as tuples": [tuple(row) for row in rows],
        "named nested": {"input": rows},
        "named shape+data": {"input": {"shape": [len(rows), 3], "data": [v for row in rows for v in row]}},
        "named array": {"input": np.array(rows, dtype=np.float32)},
        "named float64 array": {"input": np.array(rows, dtype=np.float64)},
        "bare array": np.array(rows, dtype=np.float32),
    }


@pytest.mark.parametrize("form", list(all_forms(ROWS)))
def test_every_form_gives_the_same_feeds(form: str) -> None:
    feeds = to_feeds(all_forms(ROWS)[form], TABULAR)
    assert list(feeds) == ["input"]
    assert feeds["input"].dtype == np.float32
    np.testing.assert_array_equal(feeds["input"], EXPECTED)
    assert batch_size(feeds) == 3


def test_every_form_gives_the_same_predictions(iris_lr) -> None:
    rows = iris_lr.x[::10].tolist()  # 15 rows across the three classes
    names = iris_lr.runner.signature.feature_names
    forms = [
        rows,
        [dict(zip(names, row, strict=True)) for row in rows],
        {"input": rows},
        {"input": {"shape": [len(rows), 4], "data": [v for row in rows for v in row]}},
    ]
    results = [predict(iris_lr.runner, form) for form in forms]
    assert len(results[0]) == 15
    assert [p.label for p in results[0]] == iris_lr.estimator.predict(iris_lr.x[::10]).tolist()
    for other in results[1:]:
        assert other == results[0]


def test_single_row_and_single_record() -> None:
    np.testing.assert_array_equal(to_feeds([[1, 2, 3]], TABULAR)["input"], [[1, 2, 3]])
    np.testing.assert_array_equal(to_feeds([{"c": 3, "a": 1, "b": 2}], TABULAR)["input"], [[1, 2, 3]])


def test_integer_values_into_a_float_input_are_cast() -> None:
    feeds = to_feeds([[1, 2, 3]], TABULAR)
    assert feeds["input"].dtype == np.float32


def test_int_input_takes_ints_and_integral_floats() -> None:
    sig = signature_of(TensorSpec(name="ids", dtype="int64", shape=(None, 2)))
    feeds = to_feeds([[1, 2], [3.0, -4.0]], sig)
    assert feeds["ids"].dtype == np.int64
    np.testing.assert_array_equal(feeds["ids"], [[1, 2], [3, -4]])


def test_int32_and_float64_inputs_keep_their_dtype() -> None:
    sig = signature_of(
        TensorSpec(name="i", dtype="int32", shape=(None,)), TensorSpec(name="f", dtype="float64", shape=(None,))
    )
    feeds = to_feeds({"i": [1, 2], "f": [0.1, 1e300]}, sig)
    assert feeds["i"].dtype == np.int32
    assert feeds["f"].dtype == np.float64
    assert feeds["f"][1] == 1e300  # in range for float64


def test_bool_and_string_inputs() -> None:
    sig = signature_of(
        TensorSpec(name="flag", dtype="bool", shape=(None,)),
        TensorSpec(name="word", dtype="string", shape=(None, 2)),
    )
    feeds = to_feeds({"flag": [True, False], "word": [["x", "y"], ["z", ""]]}, sig)
    assert feeds["flag"].dtype == np.bool_
    assert feeds["flag"].tolist() == [True, False]
    assert feeds["word"].dtype == object
    assert feeds["word"].shape == (2, 2)
    assert feeds["word"].tolist() == [["x", "y"], ["z", ""]]


def test_dynamic_inner_dimensions_are_free() -> None:
    sig = signature_of(TensorSpec(name="seq", dtype="float32", shape=(None, None, 2)))
    feeds = to_feeds({"seq": [[[1, 2], [3, 4], [5, 6]]]}, sig)
    assert feeds["seq"].shape == (1, 3, 2)


def test_numpy_scalars_take_the_slow_path_and_are_accepted() -> None:
    feeds = to_feeds([[np.float32(1.5), np.int64(2), np.float64(3.0)]], TABULAR)
    np.testing.assert_array_equal(feeds["input"], [[1.5, 2, 3]])


def test_allow_nan_lets_nan_and_inf_through() -> None:
    sig = ModelSignature(inputs=TABULAR.inputs, outputs=TABULAR.outputs, feature_names=NAMES, allow_nan=True)
    nan, inf = float("nan"), float("inf")
    for payload in ([[nan, inf, -inf]], [{"a": nan, "b": inf, "c": -inf}], {"input": [[nan, inf, -inf]]}):
        values = to_feeds(payload, sig)["input"][0].tolist()
        assert math.isnan(values[0])
        assert values[1:] == [inf, -inf]
    array = np.array([[nan, 1, 2]], dtype=np.float32)
    assert math.isnan(check_feeds({"input": array}, sig, max_elements=10)["input"][0, 0])


def test_multiple_inputs_share_the_batch(two_input_model: bytes) -> None:
    from inferq.engine import read_signature

    sig = read_signature(two_input_model)
    feeds = to_feeds({"a": [[1, 2], [3, 4]], "b": [[0.5, 0.5], [1, 1]], "ids": [7, 8]}, sig)
    assert {name: array.shape for name, array in feeds.items()} == {"a": (2, 2), "b": (2, 2), "ids": (2,)}
    assert feeds["ids"].dtype == np.int64
    assert batch_size(feeds) == 2


def test_batch_size_of_nothing_is_zero() -> None:
    assert batch_size({}) == 0
