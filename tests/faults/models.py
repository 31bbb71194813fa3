"""ONNX graphs built for the fault tests with onnx.helper: fast, slow, and one input that kills the process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INT32_MIN = -(2**31)


def build(inputs: Sequence[Any], outputs: Sequence[Any], nodes: Sequence[Any], inits: Sequence[Any] = ()) -> bytes:
    graph = helper.make_graph(
        list(nodes),
        "fault-test",
        [helper.make_tensor_value_info(name, elem, shape) for name, elem, shape in inputs],
        [helper.make_tensor_value_info(name, elem, shape) for name, elem, shape in outputs],
        initializer=list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


def affine_model() -> bytes:
    """``y = 2x + 1`` on float32 ``[None, 4]``: exact outputs, microseconds per batch."""
    return build(
        [("x", TensorProto.FLOAT, [None, 4])],
        [("y", TensorProto.FLOAT, [None, 4])],
        [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])],
        [
            numpy_helper.from_array(np.array(2, np.float32), "two"),
            numpy_helper.from_array(np.array(1, np.float32), "one"),
        ],
    )


def int_model() -> bytes:
    """``y = i + 1`` on int64 ``[None, 2]``: a second dtype for the bad-input table."""
    return build(
        [("i", TensorProto.INT64, [None, 2])],
        [("y", TensorProto.INT64, [None, 2])],
        [helper.make_node("Add", ["i", "one"], ["y"])],
        [numpy_helper.from_array(np.array(1, np.int64), "one")],
    )


SLOW_WIDTH = 1024


def slow_model(*, depth: int = 300) -> bytes:
    """``depth`` chained ``[1024, 1024]`` MatMul + Tanh (one shared 4 MB weight): ~3 ms per row on one
    ORT thread, so a few hundred rows keep a worker busy for about a second."""
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((SLOW_WIDTH, SLOW_WIDTH)) / np.sqrt(SLOW_WIDTH)).astype(np.float32)
    nodes, last = [], "x"
    for k in range(depth):
        nodes += [helper.make_node("MatMul", [last, "w"], [f"m{k}"]), helper.make_node("Tanh", [f"m{k}"], [f"t{k}"])]
        last = f"t{k}"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    return build(
        [("x", TensorProto.FLOAT, [None, SLOW_WIDTH])],
        [("y", TensorProto.FLOAT, [None, SLOW_WIDTH])],
        nodes,
        [numpy_helper.from_array(weights, "w")],
    )


def negate_model() -> bytes:
    """``y = x / -1`` on int32 ``[None, 1]``. ONNX Runtime checks integer division by zero but not
    overflow: ``INT32_MIN / -1`` executes x86 ``idiv``, which traps, and the process dies of SIGFPE.
    A real model input that crashes the worker process on every run, with no test hook."""
    return build(
        [("x", TensorProto.INT32, [None, 1])],
        [("y", TensorProto.INT32, [None, 1])],
        [helper.make_node("Div", ["x", "minus_one"], ["y"])],
        [numpy_helper.from_array(np.array([-1], np.int32), "minus_one")],
    )
