"""Tiny models built in the test session: scikit-learn toy fits converted to ONNX, and onnx.helper graphs."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inferq.engine import Runner, convert_sklearn
from inferq.settings import EngineSettings

Spec = tuple[str, int, Sequence[int | str | None]]  # (name, TensorProto elem type, shape)
BuildOnnx = Callable[..., bytes]


@dataclass(frozen=True)
class Fitted:
    """A fitted scikit-learn model, its float32 data, and its ONNX conversion loaded in a runner."""

    estimator: Any
    x: np.ndarray
    onnx: bytes
    runner: Runner


def build_onnx(
    inputs: Sequence[Spec],
    outputs: Sequence[Spec],
    nodes: Sequence[onnx.NodeProto],
    *,
    props: dict[str, str] | None = None,
    ml: bool = False,
) -> bytes:
    """A checked ONNX model (opset 17, IR 8) from value specs and nodes."""
    graph = helper.make_graph(
        list(nodes),
        "test",
        [helper.make_tensor_value_info(name, elem, list(shape)) for name, elem, shape in inputs],
        [helper.make_tensor_value_info(name, elem, list(shape)) for name, elem, shape in outputs],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    if props:
        helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="session")
def onnx_model() -> BuildOnnx:
    """``build_onnx`` as a fixture, so test modules need not import from conftest."""
    return build_onnx


@pytest.fixture(scope="session")
def engine_settings() -> EngineSettings:
    return EngineSettings(intra_op_threads=1, inter_op_threads=1, cache_size=2)


@pytest.fixture(scope="session")
def iris_lr(engine_settings: EngineSettings) -> Fitted:
    """StandardScaler + LogisticRegression on iris, with feature and class names."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_iris()
    x = data.data.astype(np.float32)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, data.target)
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    onx = convert_sklearn(model, n_features=4, feature_names=names, class_names=list(data.target_names))
    return Fitted(model, x, onx, Runner.load(onx, settings=engine_settings))


@pytest.fixture(scope="session")
def wine_rf(engine_settings: EngineSettings) -> Fitted:
    """A 100-tree random forest on wine, with feature names (no class names)."""
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier

    data = load_wine()
    x = data.data.astype(np.float32)
    model = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0).fit(x, data.target)
    names = [name.replace("/", "_") for name in data.feature_names]
    onx = convert_sklearn(model, n_features=x.shape[1], feature_names=names)
    return Fitted(model, x, onx, Runner.load(onx, settings=engine_settings))


@pytest.fixture(scope="session")
def diabetes_gbr(engine_settings: EngineSettings) -> Fitted:
    """A 50-tree gradient boosting regressor on diabetes, without feature names."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import GradientBoostingRegressor

    data = load_diabetes()
    x = data.data.astype(np.float32)
    model = GradientBoostingRegressor(n_estimators=50, max_depth=3, random_state=0).fit(x, data.target)
    onx = convert_sklearn(model, n_features=x.shape[1])
    return Fitted(model, x, onx, Runner.load(onx, settings=engine_settings))


@pytest.fixture(scope="session")
def identity_model() -> bytes:
    """``y = x`` for float32 ``[None, 3]``, feature names a/b/c: exact outputs for batching tests."""
    return build_onnx(
        [("x", TensorProto.FLOAT, [None, 3])],
        [("y", TensorProto.FLOAT, [None, 3])],
        [helper.make_node("Identity", ["x"], ["y"])],
        props={"inferq.feature_names": json.dumps(["a", "b", "c"])},
    )


@pytest.fixture(scope="session")
def two_input_model() -> bytes:
    """``s = a + b`` (float32 ``[None, 2]``) and ``n = ids * 2`` (int64 ``[None]``)."""
    return build_onnx(
        [
            ("a", TensorProto.FLOAT, [None, 2]),
            ("b", TensorProto.FLOAT, ["batch", 2]),
            ("ids", TensorProto.INT64, [None]),
        ],
        [("s", TensorProto.FLOAT, [None, 2]), ("n", TensorProto.INT64, [None])],
        [
            helper.make_node("Add", ["a", "b"], ["s"]),
            helper.make_node("Constant", [], ["two"], value=helper.make_tensor("two", TensorProto.INT64, [], [2])),
            helper.make_node("Mul", ["ids", "two"], ["n"]),
        ],
    )
