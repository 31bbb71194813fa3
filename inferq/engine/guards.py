"""Whole-model guards, run before ONNX's checker: no external data anywhere, standard operators only."""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import TensorProto

from inferq.errors import InvalidModel

# The default ONNX domain (also spelled "ai.onnx") and the classic-ML domain skl2onnx emits.
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})

Graph = onnx.GraphProto | onnx.FunctionProto


def check_external_data(proto: onnx.ModelProto) -> None:
    """Refuse any tensor, however nested, whose data lives in a file outside the model.

    NOTE: ONNX Runtime reads external data relative to the worker's working directory (and the
    checker probes those paths), so this must run before either sees the model.
    """
    for where, tensor in _tensors(proto):
        if tensor.data_location == TensorProto.EXTERNAL:
            raise InvalidModel(f"{where} uses external data; embed the weights instead", tensor=tensor.name)


def check_domains(proto: onnx.ModelProto) -> None:
    """Refuse custom operator domains: ONNX Runtime would need a custom-op library to run them."""
    imports = [*proto.opset_import, *(o for function in proto.functions for o in function.opset_import)]
    domains = [o.domain for o in imports] + [node.domain for graph in all_graphs(proto) for node in graph.node]
    for domain in domains:
        if domain not in STANDARD_DOMAINS:
            raise InvalidModel(f"custom operator domain {domain!r} is not supported", domain=domain)


def all_graphs(proto: onnx.ModelProto) -> Iterator[Graph]:
    """The main graph, model-local functions and every subgraph in node attributes (If, Loop, Scan)."""
    pending: list[Graph] = [proto.graph, *proto.functions]
    while pending:  # NOTE: a loop, not recursion: nesting depth is the model author's choice
        graph = pending.pop()
        yield graph
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    pending.append(attribute.g)
                pending.extend(attribute.graphs)


def _tensors(proto: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor with where it sits: initializers, sparse initializers and node attributes."""
    for graph in all_graphs(proto):
        if isinstance(graph, onnx.GraphProto):
            for tensor in graph.initializer:
                yield f"initializer {tensor.name!r}", tensor
            for sparse in graph.sparse_initializer:
                yield f"sparse initializer {sparse.values.name!r}", sparse.values
                yield f"indices of sparse initializer {sparse.values.name!r}", sparse.indices
        for node in graph.node:
            for attribute in node.attribute:
                owner = f"attribute {attribute.name!r} of {_node_text(node)}"
                dense = [attribute.t] if attribute.HasField("t") else []
                sparse = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
                for tensor in [*dense, *attribute.tensors]:
                    yield f"tensor {tensor.name!r} in {owner}", tensor
                for item in [*sparse, *attribute.sparse_tensors]:
                    yield f"sparse tensor {item.values.name!r} in {owner}", item.values
                    yield f"indices of sparse tensor {item.values.name!r} in {owner}", item.indices


def _node_text(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"a {node.op_type} node"
