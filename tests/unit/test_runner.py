"""``Runner``: parity with scikit-learn, deliberate session options, typed load and run failures."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from inferq.engine import Runner, predict, to_predictions
from inferq.errors import InferenceFailed, InvalidModel, ModelLoadFailed
from inferq.settings import EngineSettings

SETTINGS = EngineSettings(intra_op_threads=2, inter_op_threads=1)


@pytest.mark.parametrize("fixture", ["iris_lr", "wine_rf"])
def test_classifier_parity_with_sklearn(fixture: str, request: pytest.FixtureRequest) -> None:
    fitted = request.getfixturevalue(fixture)
    outputs = fitted.runner.run({"input": fitted.x})
    np.testing.assert_array_equal(outputs["label"], fitted.estimator.predict(fitted.x))
    # float32 inputs, float32 probabilities: 1e-5 is ~100 float32 ulps at 1.0.
    np.testing.assert_allclose(outputs["probabilities"], fitted.estimator.predict_proba(fitted.x), rtol=0, atol=1e-5)


def test_regressor_parity_with_sklearn(diabetes_gbr: Any) -> None:
    values = diabetes_gbr.runner.run({"input": diabetes_gbr.x})["variable"]
    assert values.shape == (442, 1)
    # ORT sums 50 trees in float32; values reach ~300, where one float32 ulp is ~3e-5.
    np.testing.assert_allclose(values[:, 0], diabetes_gbr.estimator.predict(diabetes_gbr.x), rtol=1e-6, atol=1e-4)


def test_predict_pipeline_matches_sklearn(wine_rf: Any) -> None:
    names = wine_rf.runner.signature.feature_names
    records = [dict(zip(names, row, strict=True)) for row in wine_rf.x[:20].tolist()]
    predictions = predict(wine_rf.runner, records)
    assert [p.label for p in predictions] == wine_rf.estimator.predict(wine_rf.x[:20]).tolist()
    expected = wine_rf.estimator.predict_proba(wine_rf.x[:20])
    for prediction, row in zip(predictions, expected, strict=True):
        assert prediction.probabilities is not None
        assert list(prediction.probabilities) == ["0", "1", "2"]
        np.testing.assert_allclose(list(prediction.probabilities.values()), row, atol=1e-5)
    assert predictions == to_predictions(wine_rf.runner.signature, wine_rf.runner.run({"input": wine_rf.x[:20]}))


def test_session_options_are_deliberate(iris_lr: Any) -> None:
    runner = Runner.load(iris_lr.onnx, settings=SETTINGS)
    session = runner._session
    options = session.get_session_options()
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.execution_mode.name == "ORT_SEQUENTIAL"
    assert options.graph_optimization_level.name == "ORT_ENABLE_ALL"
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_run_failure_is_inference_failed(iris_lr: Any) -> None:
    with pytest.raises(InferenceFailed, match=r"ONNX Runtime failed: .*INVALID_ARGUMENT"):
        iris_lr.runner.run({"input": np.zeros((1, 4), dtype=np.float64)})
    with pytest.raises(InferenceFailed, match="ONNX Runtime failed"):
        iris_lr.runner.run({"input": np.zeros((1, 5), dtype=np.float32)})


def test_closed_runner_raises_retryable_load_failure(iris_lr: Any) -> None:
    runner = Runner.load(iris_lr.onnx, settings=SETTINGS)
    assert runner.run({"input": iris_lr.x[:1]})["label"].tolist() == [0]
    runner.close()
    with pytest.raises(ModelLoadFailed, match="the model was closed") as caught:
        runner.run({"input": iris_lr.x[:1]})
    assert caught.value.retryable is True


def test_invalid_file_is_invalid_model(iris_lr: Any) -> None:
    with pytest.raises(InvalidModel, match="not a valid ONNX model"):
        Runner.load(b"not onnx at all", settings=SETTINGS)
    small = EngineSettings(max_model_bytes=len(iris_lr.onnx) - 1)
    with pytest.raises(InvalidModel, match=f"the model is {len(iris_lr.onnx):,} bytes, over the limit of "):
        Runner.load(iris_lr.onnx, settings=small)


def test_model_onnx_runtime_cannot_load_is_model_load_failed(onnx_model: Any) -> None:
    """Float plus int64 passes ONNX's checker (no type inference) but not ORT's."""
    model = onnx_model(
        [("x", TensorProto.FLOAT, [None, 2])],
        [("y", TensorProto.FLOAT, [None, 2])],
        [
            helper.make_node("Constant", [], ["two"], value=helper.make_tensor("two", TensorProto.INT64, [], [2])),
            helper.make_node("Add", ["x", "two"], ["y"]),
        ],
    )
    with pytest.raises(ModelLoadFailed, match=r"ONNX Runtime could not load the model: .*Type Error"):
        Runner.load(model, settings=SETTINGS)


def test_model_failing_its_warm_up_is_model_load_failed(onnx_model: Any) -> None:
    """Reshaping to a fixed batch of 2 loads fine but cannot run the batch-1 warm-up."""
    model = onnx_model(
        [("x", TensorProto.FLOAT, [None, 3])],
        [("y", TensorProto.FLOAT, [None, 3])],
        [
            helper.make_node("Constant", [], ["shape"], value=helper.make_tensor("s", TensorProto.INT64, [2], [2, 3])),
            helper.make_node("Reshape", ["x", "shape"], ["y"]),
        ],
    )
    with pytest.raises(ModelLoadFailed, match="the model failed its warm-up run: ONNX Runtime failed"):
        Runner.load(model, settings=SETTINGS)


def test_string_and_int_inputs_warm_up(onnx_model: Any) -> None:
    model = onnx_model(
        [("s", TensorProto.STRING, [None]), ("i", TensorProto.INT64, [None, None])],
        [("s2", TensorProto.STRING, [None]), ("i2", TensorProto.INT64, [None, None])],
        [helper.make_node("Identity", ["s"], ["s2"]), helper.make_node("Identity", ["i"], ["i2"])],
    )
    runner = Runner.load(model, settings=SETTINGS)
    out = runner.run({"s": np.array(["a", "b"], dtype=object), "i": np.array([[1, 2], [3, 4]])})
    assert out["s2"].tolist() == ["a", "b"]
    assert out["i2"].tolist() == [[1, 2], [3, 4]]


def test_outputs_must_have_one_row_per_input_row(onnx_model: Any) -> None:
    """Column sums kept as ``[1, 3]`` while declaring ``[None, 3]``: right at batch 1, wrong after."""
    model = onnx_model(
        [("x", TensorProto.FLOAT, [None, 3])],
        [("y", TensorProto.FLOAT, [None, 3])],
        [
            helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("a", TensorProto.INT64, [1], [0])),
            helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1),
        ],
    )
    runner = Runner.load(model, settings=SETTINGS)  # the batch-1 warm-up cannot tell
    assert runner.run({"x": np.ones((1, 3), np.float32)})["y"].tolist() == [[1, 1, 1]]
    with pytest.raises(InferenceFailed, match=r"^output 'y' has 1 rows for a batch of 2; it is not batch-major$"):
        runner.run({"x": np.ones((2, 3), np.float32)})
    with pytest.raises(InferenceFailed, match="output 'y' has 1 rows for a batch of 4"):
        predict(runner, [[1, 2, 3]] * 4)
