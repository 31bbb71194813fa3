"""``to_predictions``: one Prediction per row, shaped by the task."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from inferq.contracts.models import ModelSignature, TensorSpec
from inferq.contracts.predictions import Prediction
from inferq.engine import to_predictions

INPUTS = (TensorSpec(name="x", dtype="float32", shape=(None, 2)),)
LABEL = TensorSpec(name="label", dtype="int64", shape=(None,))
PROBS = TensorSpec(name="probabilities", dtype="float32", shape=(None, 3))


def classifier(**fields: Any) -> ModelSignature:
    return ModelSignature(
        inputs=INPUTS, outputs=(LABEL, PROBS), task="classifier",
        label_output="label", probabilities_output="probabilities", **fields,
    )  # fmt: skip


OUTPUTS = {
    "label": np.array([2, 0], dtype=np.int64),
    "probabilities": np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], dtype=np.float32),
}


def test_classifier_with_class_names() -> None:
    sig = classifier(classes=(0, 1, 2), class_names=("low", "mid", "high"))
    first, second = to_predictions(sig, OUTPUTS)
    assert first.label == 2
    assert type(first.label) is int
    assert first.class_name == "high"
    assert first.probabilities == pytest.approx({"low": 0.1, "mid": 0.2, "high": 0.7})
    assert list(first.probabilities or {}) == ["low", "mid", "high"]
    assert first.confidence == pytest.approx(0.7)
    assert (second.label, second.class_name, second.confidence) == (0, "low", 0.5)
    assert first.value is None
    assert first.outputs is None


def test_classifier_without_names_keys_by_label() -> None:
    sig = classifier(classes=(3, 5, 9))
    prediction = to_predictions(sig, {**OUTPUTS, "label": np.array([9, 3])})[0]
    assert prediction.label == 9
    assert prediction.class_name is None
    assert list(prediction.probabilities or {}) == ["3", "5", "9"]


def test_classifier_without_classes_keys_by_column() -> None:
    prediction = to_predictions(classifier(), OUTPUTS)[0]
    assert list(prediction.probabilities or {}) == ["0", "1", "2"]


def test_string_labels() -> None:
    sig = classifier(classes=("ant", "bee", "cat"), class_names=("Ant", "Bee", "Cat"))
    labels = np.array(["cat", "ant"], dtype=object)
    first, second = to_predictions(sig, {**OUTPUTS, "label": labels})
    assert (first.label, first.class_name, second.label, second.class_name) == ("cat", "Cat", "ant", "Ant")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([[1.5], [2.5]], dtype=np.float32), [1.5, 2.5]),
        (np.array([1.5, 2.5], dtype=np.float64), [1.5, 2.5]),
        (np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32), [[1.0, 2.0], [3.0, 4.0]]),
    ],
    ids=["[None, 1]", "[None]", "multi-target"],
)
def test_regressor(values: np.ndarray, expected: list[Any]) -> None:
    sig = ModelSignature(
        inputs=INPUTS, outputs=(TensorSpec(name="v", dtype="float32", shape=(None, 1)),),
        task="regressor", value_output="v",
    )  # fmt: skip
    predictions = to_predictions(sig, {"v": values})
    assert [p.value for p in predictions] == expected
    assert all(type(p.value) in (float, list) for p in predictions)
    assert predictions[0].label is None


def test_tensor_outputs_per_row() -> None:
    sig = ModelSignature(inputs=INPUTS, outputs=(TensorSpec(name="y", dtype="float32", shape=(None, 2)),))
    outputs = {"y": np.array([[1, 2], [3, 4]], dtype=np.float32), "tag": np.array(["a", "b"], dtype=object)}
    assert to_predictions(sig, outputs) == [
        Prediction(outputs={"y": [1.0, 2.0], "tag": "a"}),
        Prediction(outputs={"y": [3.0, 4.0], "tag": "b"}),
    ]


def test_large_batch_matches_row_by_row(wine_rf: Any) -> None:
    x = np.repeat(wine_rf.x, 6, axis=0)[:1024]
    sig = wine_rf.runner.signature
    batched = to_predictions(sig, wine_rf.runner.run({"input": x}))
    assert len(batched) == 1024
    for i in (0, 177, 500, 1023):
        assert batched[i] == to_predictions(sig, wine_rf.runner.run({"input": x[i : i + 1]}))[0]
