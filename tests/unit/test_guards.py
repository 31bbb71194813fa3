"""Whole-model guards: external data anywhere in the model, custom operator domains."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inferq.engine import Runner, read_signature
from inferq.errors import InvalidModel
from inferq.settings import EngineSettings

SECRET = b"SECRET-DATA-1234"  # 16 bytes: what a leaking model would read back as 4 float32s


def external(name: str = "c") -> onnx.TensorProto:
    """A float32 [4] tensor whose data ORT would read from ``secret.bin`` in the working directory."""
    tensor = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "secret.bin"), ("offset", "0"), ("length", str(len(SECRET)))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def sparse(values: onnx.TensorProto) -> onnx.SparseTensorProto:
    """``values`` (4 floats) at positions 0..3 of a dense [4]."""
    indices = helper.make_tensor("i", TensorProto.INT64, [4], [0, 1, 2, 3])
    return helper.make_sparse_tensor(values, indices, [4])


def branch(
    nodes: list[onnx.NodeProto], *, out: str, initializer: list[onnx.TensorProto] | None = None
) -> onnx.GraphProto:
    """An If branch with no inputs producing ``out`` (float32 [4])."""
    output = helper.make_tensor_value_info(out, TensorProto.FLOAT, [4])
    return helper.make_graph(nodes, f"branch_{out}", [], [output], initializer=initializer)


def if_nodes(then_branch: onnx.GraphProto, *, out: str) -> list[onnx.NodeProto]:
    """``out = then_branch if True else zeros``; names derive from ``out`` to stay unique when nested."""
    zeros = helper.make_tensor(f"{out}_zeros", TensorProto.FLOAT, [4], [0.0] * 4)
    true = helper.make_tensor(f"{out}_true", TensorProto.BOOL, [], [True])
    else_branch = branch([helper.make_node("Constant", [], [f"{out}_else"], value=zeros)], out=f"{out}_else")
    return [
        helper.make_node("Constant", [], [f"{out}_cond"], value=true),
        helper.make_node("If", [f"{out}_cond"], [out], then_branch=then_branch, else_branch=else_branch),
    ]


def leaking_model(
    nodes: list[onnx.NodeProto], *, sparse_initializer: list[onnx.SparseTensorProto] | None = None
) -> bytes:
    """``y = x + c`` for float32 ``[None, 4]``: ``c`` comes from ``nodes`` or a sparse initializer."""
    graph = helper.make_graph(
        [*nodes, helper.make_node("Add", ["x", "c"], ["y"])], "leak",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        sparse_initializer=sparse_initializer,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def constant(out: str = "c", **attribute: Any) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [out], name="leak", **attribute)


def in_subgraph() -> bytes:
    """The Constant sits in an If branch."""
    return leaking_model(if_nodes(branch([constant("c1", value=external())], out="c1"), out="c"))


def in_nested_subgraph() -> bytes:
    """An initializer of an If branch inside another If branch."""
    inner = branch([helper.make_node("Identity", ["w"], ["c2"])], out="c2", initializer=[external("w")])
    outer = branch(if_nodes(inner, out="c1"), out="c1")
    return leaking_model(if_nodes(outer, out="c"))


LEAKS = [
    ("constant node", lambda: leaking_model([constant(value=external())]),
     "tensor 'c' in attribute 'value' of Constant node 'leak' uses external data"),
    ("sparse constant node", lambda: leaking_model([constant(sparse_value=sparse(external()))]),
     "sparse tensor 'c' in attribute 'sparse_value' of Constant node 'leak' uses external data"),
    ("sparse initializer", lambda: leaking_model([], sparse_initializer=[sparse(external())]),
     "sparse initializer 'c' uses external data"),
    ("constant in a subgraph", in_subgraph,
     "tensor 'c' in attribute 'value' of Constant node 'leak' uses external data"),
    ("initializer in a nested subgraph", in_nested_subgraph, "initializer 'w' uses external data"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "message"), [c[1:] for c in LEAKS], ids=[c[0] for c in LEAKS])
def test_external_data_anywhere_is_refused(
    build: Callable[[], bytes], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``secret.bin`` in the working directory, ORT would load each model and add its bytes to x."""
    (tmp_path / "secret.bin").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)
    model = build()
    with pytest.raises(InvalidModel) as caught:
        read_signature(model)
    assert message in caught.value.message
    with pytest.raises(InvalidModel, match="uses external data"):
        Runner.load(model, settings=EngineSettings())


def test_a_leak_free_subgraph_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same If model with embedded data is accepted: the guard refuses the data, not the shape."""
    monkeypatch.chdir(tmp_path)
    embedded = helper.make_tensor("c", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    model = leaking_model(if_nodes(branch([constant("c1", value=embedded)], out="c1"), out="c"))
    runner = Runner.load(model, settings=EngineSettings())
    assert runner.run({"x": np.zeros((2, 4), np.float32)})["y"].tolist() == [[1, 2, 3, 4]] * 2


def custom_model(*, imported: bool, in_subgraph: bool) -> bytes:
    evil = helper.make_node("Evil", [] if in_subgraph else ["x"], ["c1" if in_subgraph else "y"], domain="com.evil")
    if in_subgraph:
        return leaking_model(if_nodes(branch([evil], out="c1"), out="c"))
    graph = helper.make_graph(
        [evil], "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.evil", 1)] if imported else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize(
    ("imported", "in_subgraph"), [(True, False), (False, False), (False, True)],
    ids=["opset import", "node domain", "node in a subgraph"],
)  # fmt: skip
def test_custom_operator_domains_are_refused(imported: bool, in_subgraph: bool) -> None:
    with pytest.raises(InvalidModel, match=r"^custom operator domain 'com.evil' is not supported$") as caught:
        read_signature(custom_model(imported=imported, in_subgraph=in_subgraph))
    assert caught.value.details == {"domain": "com.evil"}


def test_the_ml_domain_is_accepted(iris_lr: Any) -> None:
    """skl2onnx's classifiers use ai.onnx.ml operators."""
    proto = onnx.load_model_from_string(iris_lr.onnx)
    assert {o.domain for o in proto.opset_import} == {"", "ai.onnx.ml"}
    assert read_signature(iris_lr.onnx).task == "classifier"
