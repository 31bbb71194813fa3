"""Models an upload must refuse (and one it must accept), built in the test with ``onnx.helper``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(
    nodes: Sequence[onnx.NodeProto],
    inits: Sequence[onnx.TensorProto] = (),
    *,
    x: Sequence[int | None] = (None, 1),
    y: Sequence[int | None] = (None, 1),
    opsets: Sequence[onnx.OperatorSetIdProto] = (),
    check: bool = True,
) -> bytes:
    """A float32 ``x`` → ``y`` model (opset 17, IR 8); ``check=False`` for what ONNX's checker refuses."""
    graph = helper.make_graph(
        list(nodes),
        "upload-test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y))],
        initializer=list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), *opsets])
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def unnamed_classifier() -> bytes:
    """Logistic regression on iris, converted without feature or class names (labels 0, 1, 2)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from inferq.engine.convert import convert_sklearn

    data = load_iris()
    model = LogisticRegression(max_iter=1000).fit(data.data.astype(np.float32), data.target)
    return convert_sklearn(model, n_features=4)


def identity() -> bytes:
    """``y = x``, float32 ``[None, 1]``: a tensor model (no classes)."""
    return build([helper.make_node("Identity", ["x"], ["y"])])


def fixed_batch() -> bytes:
    """``y = x`` on ``[1, 4]``: a model exported without a dynamic batch dimension."""
    return build([helper.make_node("Identity", ["x"], ["y"])], x=(1, 4), y=(1, 4))


def external_data(location: str = "../../etc/passwd") -> bytes:
    """An initializer whose bytes live in a file outside the model, at ``location``."""
    weight = numpy_helper.from_array(np.zeros(4, dtype=np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        weight.external_data.add(key=key, value=value)
    nodes = [helper.make_node("ReduceSum", ["w"], ["s"], keepdims=0), helper.make_node("Add", ["x", "s"], ["y"])]
    return build(nodes, [weight], check=False)


def custom_domain() -> bytes:
    """A node of a custom operator domain (ONNX Runtime would need a custom-op library)."""
    node = helper.make_node("Exploit", ["x"], ["y"], domain="com.evil")
    return build([node], opsets=[helper.make_opsetid("com.evil", 1)], check=False)


def big_initializer(n_bytes: int) -> bytes:
    """``y = x + sum(w)`` with a float32 initializer ``w`` of ``n_bytes`` bytes."""
    weight = numpy_helper.from_array(np.ones(n_bytes // 4, dtype=np.float32), "w")
    nodes = [helper.make_node("ReduceSum", ["w"], ["s"], keepdims=0), helper.make_node("Add", ["x", "s"], ["y"])]
    return build(nodes, [weight])


def memory_bomb(n_floats: int = 600_000_000) -> bytes:
    """187 bytes on disk, 2.4 GB at its warm-up run: ``ConstantOfShape([n])`` summed."""
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=fill),
        helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
        helper.make_node("Add", ["x", "s"], ["y"]),
    ]
    return build(nodes, [numpy_helper.from_array(np.array([n_floats], dtype=np.int64), "shape")])


def cpu_bomb(trips: int = 10**12, *, step: float = 1.0) -> bytes:
    """A ``Loop`` of ``trips`` additions at its warm-up run: a tiny file that never finishes loading.
    ``step`` only makes two bombs different files."""
    scalar: Any = []
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc_in", "step"], ["acc_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, scalar),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, scalar),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, scalar),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, scalar),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, scalar),
        ],
        initializer=[numpy_helper.from_array(np.float32(step), "step")],
    )
    inits = [
        numpy_helper.from_array(np.array(trips, dtype=np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.float32(0), "zero"),
    ]
    nodes = [
        helper.make_node("Loop", ["trips", "cond", "zero"], ["total"], body=body),
        helper.make_node("Add", ["x", "total"], ["y"]),
    ]
    return build(nodes, inits)


def with_doc(model: bytes, doc: str) -> bytes:
    """``model`` with ``doc`` as its doc string: the same model in other bytes (another artifact sha256)."""
    proto = onnx.load_model_from_string(model)
    proto.doc_string = doc
    return bytes(proto.SerializeToString())


def truncated(model: bytes) -> bytes:
    """The first half of ``model``: an upload cut short."""
    return model[: len(model) // 2]
