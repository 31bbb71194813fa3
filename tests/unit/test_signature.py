"""``read_signature``: what good models declare, and a named ``InvalidModel`` for bad ones."""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inferq.engine import read_signature
from inferq.errors import InvalidModel

IDENTITY = [helper.make_node("Identity", ["x"], ["y"])]


def test_classifier_pipeline(iris_lr: Any) -> None:
    sig = read_signature(iris_lr.onnx)
    assert sig.task == "classifier"
    assert [(s.name, s.dtype, s.shape) for s in sig.inputs] == [("input", "float32", (None, 4))]
    assert [(s.name, s.dtype, s.shape) for s in sig.outputs] == [
        ("label", "int64", (None,)),
        ("probabilities", "float32", (None, 3)),
    ]
    assert sig.feature_names == ("sepal_length", "sepal_width", "petal_length", "petal_width")
    assert sig.classes == (0, 1, 2)
    assert sig.class_names == ("setosa", "versicolor", "virginica")
    assert (sig.label_output, sig.probabilities_output, sig.value_output) == ("label", "probabilities", None)
    assert sig.allow_nan is False
    assert sig.n_features == 4


def test_regressor(diabetes_gbr: Any) -> None:
    sig = read_signature(diabetes_gbr.onnx)
    assert sig.task == "regressor"
    assert sig.value_output == "variable"
    assert sig.outputs[0].shape == (None, 1)
    assert sig.feature_names is None
    assert sig.classes is None


def test_tensor_model(identity_model: bytes) -> None:
    sig = read_signature(identity_model)
    assert sig.task == "tensor"
    assert sig.feature_names == ("a", "b", "c")
    assert (sig.label_output, sig.probabilities_output, sig.value_output) == (None, None, None)


def test_named_dynamic_dims_are_none(two_input_model: bytes) -> None:
    sig = read_signature(two_input_model)
    assert [s.shape for s in sig.inputs] == [(None, 2), (None, 2), (None,)]


@pytest.mark.parametrize(
    ("factory", "attribute", "classes", "label_dtype"),
    [
        ("RandomForestClassifier", "classlabels_int64s", (3, 5, 9), "int64"),
        ("LogisticRegression", "classlabels_ints", (3, 5, 9), "int64"),
        ("LogisticRegression", "classlabels_strings", ("ant", "bee", "cat"), "string"),
    ],
)
def test_classes_from_the_classifier_node(
    factory: str, attribute: str, classes: tuple[Any, ...], label_dtype: str
) -> None:
    """Without inferq metadata, classes come from the ai.onnx.ml node attribute."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    y = np.array(classes * 20)
    estimator = {"RandomForestClassifier": RandomForestClassifier(n_estimators=3, random_state=0),
                 "LogisticRegression": LogisticRegression()}[factory].fit(x, y)  # fmt: skip
    proto = to_onnx(estimator, x[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    assert not proto.metadata_props
    assert any(a.name == attribute for node in proto.graph.node for a in node.attribute)
    sig = read_signature(proto.SerializeToString())
    assert sig.task == "classifier"
    assert sig.classes == classes
    assert sig.outputs[0].dtype == label_dtype
    assert sig.inputs[0].shape == (None, 3)


def test_metadata_props(onnx_model: Any) -> None:
    props = {
        "inferq.feature_names": json.dumps(["p", "q"]),
        "inferq.classes": json.dumps(["no", "yes"]),
        "inferq.class_names": json.dumps(["No", "Yes"]),
        "inferq.allow_nan": "true",
    }
    model = onnx_model(
        [("x", TensorProto.FLOAT, [None, 2])],
        [("label", TensorProto.STRING, [None]), ("probabilities", TensorProto.FLOAT, [None, 2])],
        [helper.make_node("Identity", ["x"], ["probabilities"]),
         helper.make_node("Constant", [], ["label"], value=helper.make_tensor("l", TensorProto.STRING, [1], [b"no"]))],
        props=props,
    )  # fmt: skip
    sig = read_signature(model)
    assert sig.feature_names == ("p", "q")
    assert sig.classes == ("no", "yes")
    assert sig.class_names == ("No", "Yes")
    assert sig.allow_nan is True
    assert sig.task == "classifier"


def test_declared_regressor_with_several_targets(onnx_model: Any) -> None:
    model = onnx_model(
        [("x", TensorProto.FLOAT, [None, 2])], [("y", TensorProto.FLOAT, [None, 2])], IDENTITY,
        props={"inferq.task": "regressor"},
    )  # fmt: skip
    sig = read_signature(model)
    assert (sig.task, sig.value_output) == ("regressor", "y")
    undeclared = onnx_model([("x", TensorProto.FLOAT, [None, 2])], [("y", TensorProto.FLOAT, [None, 2])], IDENTITY)
    assert read_signature(undeclared).task == "tensor"


def zipmap_model() -> bytes:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32)
    estimator = LogisticRegression().fit(x, np.arange(30) % 2)
    return to_onnx(estimator, x[:1], target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()


def float_model(onnx_model: Any, shape: list[Any], **kwargs: Any) -> bytes:
    return onnx_model([("x", TensorProto.FLOAT, shape)], [("y", TensorProto.FLOAT, shape)], IDENTITY, **kwargs)


def external_data_model() -> bytes:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    weight.data_location = TensorProto.EXTERNAL
    del weight.float_data[:]
    weight.external_data.add(key="location", value="/etc/passwd")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])], [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


BAD_MODELS: list[tuple[str, Any, str]] = [
    ("random bytes", lambda m, iris: bytes(range(256)) * 4, "not a valid ONNX model: "),
    ("empty", lambda m, iris: b"", "not a valid ONNX model: "),
    ("truncated", lambda m, iris: iris[: len(iris) // 2], "not a valid ONNX model: "),
    ("pickle", lambda m, iris: pickle.dumps({"weights": [1.0, 2.0]}), "not a valid ONNX model: "),
    ("text", lambda m, iris: b"sepal_length,sepal_width\n1,2\n", "not a valid ONNX model: "),
    ("fixed batch 1", lambda m, iris: float_model(m, [1, 4]),
     "input 'x' has no dynamic batch dimension (shape [1, 4])"),
    ("rank 0", lambda m, iris: float_model(m, []), "input 'x' has no dynamic batch dimension (shape [])"),
    ("zipmap", lambda m, iris: zipmap_model(),
     "output 'output_probability' is seq(map(int64,tensor(float))), not a tensor; "
     "for a scikit-learn classifier (skl2onnx's ZipMap) convert with zipmap=False"),
    ("float16 input", lambda m, iris: m([("x", TensorProto.FLOAT16, [None, 2])],
                                        [("y", TensorProto.FLOAT16, [None, 2])], IDENTITY),
     "input 'x' has unsupported element type float16"),
    ("feature names count", lambda m, iris: float_model(m, [None, 3], props={"inferq.feature_names": '["a", "b"]'}),
     "metadata inferq.feature_names has 2 names but input 'x' has 3 columns"),
    ("duplicate feature names", lambda m, iris: float_model(m, [None, 2], props={"inferq.feature_names": '["a", "a"]'}),
     "metadata inferq.feature_names has duplicate names"),
    ("feature names not JSON", lambda m, iris: float_model(m, [None, 2], props={"inferq.feature_names": "a,b"}),
     "metadata inferq.feature_names is not valid JSON"),
    ("class names count", lambda m, iris: _with_props(iris, {"inferq.class_names": '["a", "b"]'}),
     "metadata inferq.class_names has 2 names for 3 classes"),
    ("bad allow_nan", lambda m, iris: float_model(m, [None, 2], props={"inferq.allow_nan": "maybe"}),
     "metadata inferq.allow_nan must be true or false, got 'maybe'"),
    ("external data", lambda m, iris: external_data_model(), "initializer 'w' uses external data"),
    ("fixed output", lambda m, iris: column_sums_model(), "output 'y' has no dynamic batch dimension (shape [3])"),
    ("scalar output", lambda m, iris: m([("x", TensorProto.FLOAT, [None, 2])], [("y", TensorProto.FLOAT, [])],
                                        [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)]),
     "output 'y' has no dynamic batch dimension (shape [])"),
    ("duplicate class names", lambda m, iris: _with_props(iris, {"inferq.class_names": '["a", "b", "a"]'}),
     "metadata inferq.class_names has duplicate names: 'a'"),
    ("duplicate classes", lambda m, iris: _with_props(iris, {"inferq.classes": "[0, 1, 1]"}),
     "metadata inferq.classes has duplicate labels: 1"),
]  # fmt: skip


def column_sums_model() -> bytes:
    """float32 ``[None, 3]`` → its column sums, a fixed ``[3]``: no row per input row."""
    axes = numpy_helper.from_array(np.array([0], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], [axes],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _with_props(model: bytes, extra: dict[str, str]) -> bytes:
    proto = onnx.load_model_from_string(model)
    props = {p.key: p.value for p in proto.metadata_props} | extra
    helper.set_model_props(proto, props)
    return proto.SerializeToString()


@pytest.mark.parametrize(("build", "message"), [c[1:] for c in BAD_MODELS], ids=[c[0] for c in BAD_MODELS])
def test_bad_model_is_invalid_model(build: Any, message: str, onnx_model: Any, iris_lr: Any) -> None:
    with pytest.raises(InvalidModel) as caught:
        read_signature(build(onnx_model, iris_lr.onnx))
    assert caught.value.code == "invalid_model"
    assert message in caught.value.message


def test_bad_model_error_names_the_output() -> None:
    with pytest.raises(InvalidModel) as caught:
        read_signature(column_sums_model())
    assert caught.value.details == {"output": "y"}
