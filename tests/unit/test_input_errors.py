"""Every bad input is a typed ``InvalidInput`` that names the row, the field and the problem."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from inferq.contracts.models import ModelSignature, TensorSpec
from inferq.errors import InvalidInput
from inferq.inputs import check_feeds, to_feeds

NAMES = ("alcohol", "ash", "hue")
SPEC = TensorSpec(name="input", dtype="float32", shape=(None, 3))
OUT = (TensorSpec(name="y", dtype="float32", shape=(None,)),)
NAMED = ModelSignature(inputs=(SPEC,), outputs=OUT, feature_names=NAMES)
UNNAMED = ModelSignature(inputs=(SPEC,), outputs=OUT)
INTS = ModelSignature(inputs=(TensorSpec(name="ids", dtype="int64", shape=(None, 2)),), outputs=OUT)
TWO = ModelSignature(
    inputs=(TensorSpec(name="a", dtype="float32", shape=(None, 2)), TensorSpec(name="b", dtype="int64", shape=(None,))),
    outputs=OUT,
)
GOOD = {"alcohol": 9.4, "ash": 2.1, "hue": 1.0}


def rec(**changes: Any) -> dict[str, Any]:
    """A good record with some fields changed (``None`` values kept; ``drop=`` removes one)."""
    record = {**GOOD, **changes}
    record.pop(changes.get("drop", ""), None)
    record.pop("drop", None)
    return record


# (id, payload, signature, message parts, details subset)
CASES: list[tuple[str, Any, ModelSignature, tuple[str, ...], dict[str, Any]]] = [
    ("missing feature", [GOOD, GOOD, GOOD, rec(drop="alcohol")], NAMED,
     ("row 3: missing feature 'alcohol'",), {"row": 3, "field": "alcohol"}),
    ("misspelt feature", [rec(drop="ash", asj=2.0)], NAMED,
     ("row 0: missing feature 'ash'", "unknown: 'asj'"), {"row": 0, "field": "ash"}),
    ("extra feature", [GOOD, rec(colour=3)], NAMED,
     ("row 1: unknown feature 'colour'",), {"row": 1, "field": "colour"}),
    ("string value", [GOOD, rec(ash="2.1")], NAMED,
     ("row 1: feature 'ash' must be a number, got a string ('2.1')",), {"row": 1, "field": "ash"}),
    ("bool value", [rec(hue=True)], NAMED,
     ("row 0: feature 'hue' must be a number, got a boolean (true)",), {"row": 0, "field": "hue"}),
    ("null value", [GOOD, GOOD, rec(alcohol=None)], NAMED,
     ("row 2: feature 'alcohol' must be a number, got null",), {"row": 2, "field": "alcohol"}),
    ("nested list value", [rec(ash=[1.0])], NAMED,
     ("row 0: feature 'ash' must be a number, got a list",), {"row": 0, "field": "ash"}),
    ("nested object value", [rec(ash={"v": 1})], NAMED,
     ("row 0: feature 'ash' must be a number, got an object",), {"row": 0, "field": "ash"}),
    ("NaN", [GOOD, rec(hue=float("nan"))], NAMED,
     ("row 1: feature 'hue' is NaN", "does not accept NaN"), {"row": 1, "field": "hue"}),
    ("inf", [rec(ash=float("inf"))], NAMED,
     ("row 0: feature 'ash' is infinite (inf)",), {"row": 0, "field": "ash"}),
    ("-inf in rows", [[1, 2, 3], [1, float("-inf"), 3]], NAMED,
     ("row 1: feature 'ash' is infinite (-inf)",), {"row": 1, "field": "ash", "column": 1}),
    ("float32 overflow", [rec(alcohol=1e39)], NAMED,
     ("row 0: feature 'alcohol' = 1e+39 is out of range for float32",), {"row": 0, "field": "alcohol"}),
    ("record not an object", [GOOD, [1, 2, 3]], NAMED,
     ("row 1: expected a record", "got a list"), {"row": 1}),
    ("records without feature names", [GOOD], UNNAMED,
     ("no feature names", "send rows instead (lists of 3 numbers"), {}),
    ("row too short", [[1, 2, 3], [1, 2, 3], [1, 2]], NAMED,
     ("row 2: expected 3 values, got 2",), {"row": 2, "expected": 3, "got": 2}),
    ("row too long", [[1, 2, 3, 4]], UNNAMED,
     ("row 0: expected 3 values, got 4",), {"row": 0, "expected": 3, "got": 4}),
    ("ragged rows", [[1, 2, 3], [1, 2, 3, 4], [1]], NAMED,
     ("row 1: expected 3 values, got 4",), {"row": 1}),
    ("string in rows, no names", [[1, 2, 3], [1, "x", 3]], UNNAMED,
     ("row 1: column 1 must be a number, got a string ('x')",), {"row": 1, "column": 1}),
    ("bool in rows", [[1, 2, False]], UNNAMED,
     ("row 0: column 2 must be a number, got a boolean (false)",), {"row": 0, "column": 2}),
    ("flat list", [1.0, 2.0, 3.0], NAMED,
     ("row 0: expected a list of 3 values, got a number (1.0)", "wrap it in a list"), {"row": 0}),
    ("row as object among rows", [[1, 2, 3], GOOD], NAMED,
     ("row 1: expected a list of 3 values, got an object",), {"row": 1}),
    ("fractional value for an int input", [[1, 2], [3, 4.5]], INTS,
     ("row 1: column 1 must be an integer, got 4.5",), {"row": 1, "column": 1}),
    ("int out of range", [[1, 2**63]], INTS,
     ("row 0: column 1 = 9223372036854775808 is out of range for int64",), {"row": 0, "column": 1}),
    ("empty list", [], NAMED, ("no inputs: send at least one row",), {}),
    ("single record as an object", GOOD, NAMED,
     ("unknown input 'alcohol'; this model's inputs are: input; to send one record, wrap it in a list",),
     {"field": "alcohol"}),
    ("not a list or object", "9.4,2.1,1.0", NAMED, ("inputs must be a list of records", "got a string"), {}),
    ("unknown tensor name", {"input": [[1, 2, 3]], "extra": [1]}, NAMED,
     ("unknown input 'extra'", "inputs are: input"), {"field": "extra"}),
    ("missing tensor", {"a": [[1, 2]]}, TWO, ("missing input 'b'",), {"field": "b"}),
    ("wrong inner length", {"input": [[1, 2, 3], [1, 2]]}, NAMED,
     ("input 'input': expected shape [None, 3]; the list at [1] has 2 items, not 3",), {"field": "input", "row": 1}),
    ("wrong rank", {"input": [1, 2, 3]}, NAMED,
     ("input 'input': expected shape [None, 3]; the list at [0] is a number (1)",), {"field": "input"}),
    ("wrong shape object", {"input": {"shape": [1, 4], "data": [1, 2, 3, 4]}}, NAMED,
     ("input 'input': expected shape [None, 3]; got [1, 4]",), {"field": "input"}),
    ("data length mismatch", {"input": {"shape": [2, 3], "data": [1, 2, 3, 4, 5]}}, NAMED,
     ("input 'input': shape [2, 3] needs a flat list of 6 values, got 5 values",), {"field": "input"}),
    ("bad value in shape+data", {"input": {"shape": [2, 3], "data": [1, 2, 3, 4, None, 6]}}, NAMED,
     ("input 'input' at [1, 1]: value must be a number, got null",), {"field": "input", "row": 1, "index": [1, 1]}),
    ("bad tensor object keys", {"input": {"shape": [1, 3], "values": [1, 2, 3]}}, NAMED,
     ("exactly the keys 'shape' and 'data'",), {"field": "input"}),
    ("bad value in nested tensor", {"a": [[1, 2], [3, "4"]], "b": [1, 2]}, TWO,
     ("input 'a' at [1, 1]: value must be a number, got a string ('4')",), {"field": "a", "row": 1}),
    ("batch mismatch", {"a": [[1, 2], [3, 4]], "b": [1, 2, 3]}, TWO,
     ("input 'b' has 3 rows but input 'a' has 2",), {"field": "b"}),
    ("empty tensor", {"input": []}, NAMED, ("input 'input' is empty: send at least one row",), {"field": "input"}),
    ("scalar tensor", {"input": 3.0}, NAMED, ("input 'input': expected a nested list or an object",), {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "signature", "parts", "details"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_named(
    payload: Any, signature: ModelSignature, parts: tuple[str, ...], details: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput) as caught:
        to_feeds(payload, signature)
    error = caught.value
    assert error.code == "invalid_input"
    for part in parts:
        assert part in error.message
    assert {key: error.details.get(key) for key in details} == details


def test_nan_is_rejected_in_every_form() -> None:
    nan = float("nan")
    payloads = [
        [rec(ash=nan)],
        [[9.4, nan, 1.0]],
        {"input": [[9.4, nan, 1.0]]},
        {"input": {"shape": [1, 3], "data": [9.4, nan, 1.0]}},
        {"input": np.array([[9.4, nan, 1.0]], dtype=np.float32)},
    ]
    for payload in payloads:
        with pytest.raises(InvalidInput, match="is NaN; this model does not accept NaN"):
            to_feeds(payload, NAMED)


@pytest.mark.parametrize(
    "payload",
    [
        [[1.0, 2.0, 3.0]] * 4,
        [GOOD] * 4,
        {"input": [[1.0, 2.0, 3.0]] * 4},
        {"input": {"shape": [4, 3], "data": [1.0] * 12}},
        {"input": np.ones((4, 3), dtype=np.float32)},
    ],
    ids=["rows", "records", "nested", "shape+data", "array"],
)
def test_too_many_elements(payload: Any) -> None:
    assert to_feeds(payload, NAMED, max_elements=12)["input"].shape == (4, 3)
    with pytest.raises(InvalidInput, match="too many values: 12 exceeds the limit of 11 per request") as caught:
        to_feeds(payload, NAMED, max_elements=11)
    assert caught.value.details == {"elements": 12, "limit": 11}


def test_too_many_elements_is_caught_before_converting() -> None:
    rows = [["not a number"] * 3] * 1000  # would be a cell error if it were converted first
    with pytest.raises(InvalidInput, match="too many values: 3,000"):
        to_feeds(rows, NAMED, max_elements=100)


def test_model_with_several_inputs_rejects_rows() -> None:
    with pytest.raises(InvalidInput, match=r"does not take records or rows; send named tensors.*'a', 'b'"):
        to_feeds([[1, 2]], TWO)


def test_check_feeds_rejects_wrong_dtype_shape_and_names() -> None:
    good = {"a": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.int64)}
    assert check_feeds(good, TWO, max_elements=100).keys() == {"a", "b"}
    with pytest.raises(InvalidInput, match="input 'a': expected float32, got float64"):
        check_feeds({**good, "a": np.zeros((2, 2))}, TWO, max_elements=100)
    with pytest.raises(InvalidInput, match=r"input 'a': expected shape \[None, 2\]; got \[2, 3\]"):
        check_feeds({**good, "a": np.zeros((2, 3), np.float32)}, TWO, max_elements=100)
    with pytest.raises(InvalidInput, match="unknown input 'c'"):
        check_feeds({**good, "c": np.zeros(2, np.int64)}, TWO, max_elements=100)
    with pytest.raises(InvalidInput, match="too many values: 6 exceeds the limit of 5"):
        check_feeds(good, TWO, max_elements=5)
