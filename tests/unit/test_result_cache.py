"""The result cache's rules without Redis: random operators found anywhere, the override refused, the TTL read."""

from __future__ import annotations

import datetime as dt

import pytest
from onnx import TensorProto, helper

from inferq.api.result_cache import cache_ttl_ms
from inferq.contracts.models import ModelSignature, ModelVersion, TensorSpec
from inferq.engine.signature import random_ops
from inferq.errors import InvalidInput
from inferq.store.records import check_overrides

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
SIGNATURE = ModelSignature(
    inputs=(TensorSpec(name="x", dtype="float32", shape=(None, 4)),),
    outputs=(TensorSpec(name="y", dtype="float32", shape=(None, 4)),),
)


def model(*nodes: object, functions: tuple[object, ...] = ()) -> object:
    graph = helper.make_graph(list(nodes), "g", [X], [Y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], functions=list(functions))


def version(overrides: dict[str, int | float], *, ops: tuple[str, ...] = ()) -> ModelVersion:
    signature = ModelSignature(inputs=SIGNATURE.inputs, outputs=SIGNATURE.outputs, nondeterministic_ops=ops)
    return ModelVersion(
        model="m", version=1, status="active", signature=signature, sha256="0" * 64, size_bytes=1,
        created_at=dt.datetime.now(dt.UTC), overrides=overrides,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("node", "found"),
    [
        (helper.make_node("RandomNormalLike", ["x"], ["y"]), ("RandomNormalLike",)),
        (helper.make_node("RandomUniform", [], ["y"], shape=[1, 4]), ("RandomUniform",)),
        (helper.make_node("Bernoulli", ["x"], ["y"]), ("Bernoulli",)),
        (helper.make_node("Multinomial", ["x"], ["y"]), ("Multinomial",)),
        (helper.make_node("Dropout", ["x", "ratio", "training"], ["y"]), ("Dropout",)),
        (helper.make_node("Dropout", ["x"], ["y"]), ()),  # inference: the identity
        (helper.make_node("Dropout", ["x", "ratio", ""], ["y"]), ()),  # an omitted optional input
        (helper.make_node("Dropout", ["x", "ratio"], ["y"]), ()),
        (helper.make_node("Relu", ["x"], ["y"]), ()),
    ],
)
def test_random_operators_are_found(node: object, found: tuple[str, ...]) -> None:
    assert random_ops(model(node)) == found  # type: ignore[arg-type]


def test_random_operators_inside_subgraphs_and_functions_are_found_once_each_sorted() -> None:
    branch = helper.make_graph([helper.make_node("RandomNormal", [], ["r"], shape=[1])], "b", [], [
        helper.make_tensor_value_info("r", TensorProto.FLOAT, [1])
    ])  # fmt: skip
    noisy = helper.make_function(
        "local", "Noisy", ["a"], ["b"], [helper.make_node("Bernoulli", ["a"], ["b"])], [helper.make_opsetid("", 17)]
    )
    proto = model(
        helper.make_node("If", ["c"], ["r"], then_branch=branch, else_branch=branch),
        helper.make_node("RandomNormal", [], ["n"], shape=[1]),
        helper.make_node("Identity", ["x"], ["y"]),
        functions=(noisy,),
    )
    assert random_ops(proto) == ("Bernoulli", "RandomNormal")  # type: ignore[arg-type]


def test_a_nondeterministic_signature_refuses_the_cache_naming_its_operators() -> None:
    signature = ModelSignature(inputs=SIGNATURE.inputs, outputs=SIGNATURE.outputs, nondeterministic_ops=("Bernoulli",))
    with pytest.raises(InvalidInput, match="random operators: Bernoulli") as refused:
        check_overrides({"result_cache_ttl_s": 30}, signature=signature)
    assert refused.value.details == {"field": "overrides", "nondeterministic_ops": ["Bernoulli"]}
    assert check_overrides({"result_cache_ttl_s": 0, "max_batch": 8}, signature=signature) == {
        "result_cache_ttl_s": 0, "max_batch": 8,
    }  # fmt: skip
    assert check_overrides({"result_cache_ttl_s": 30}, signature=SIGNATURE) == {"result_cache_ttl_s": 30}
    with pytest.raises(InvalidInput, match="must be between 0 and 2592000, got -5"):
        check_overrides({"result_cache_ttl_s": -5}, signature=SIGNATURE)


def test_every_override_is_known_and_bounded() -> None:
    """Every override a worker or the API reads has a range; nothing else may be stored."""
    from inferq.store.records import OVERRIDE_RANGES
    from inferq.workers.config import ENGINE_OVERRIDES, QUEUE_OVERRIDES

    assert QUEUE_OVERRIDES | ENGINE_OVERRIDES | {"admission_limit", "result_cache_ttl_s"} == set(OVERRIDE_RANGES)
    with pytest.raises(InvalidInput, match="unknown serving override 'max_btach'"):
        check_overrides({"max_btach": 8})
    with pytest.raises(InvalidInput, match="'max_batch' must be between 1 and 100000, got 1e\\+300"):
        check_overrides({"max_batch": 1e300})
    assert check_overrides({"max_batch": 100_000, "max_batch_delay_ms": 0}) == {
        "max_batch": 100_000,
        "max_batch_delay_ms": 0,
    }


@pytest.mark.parametrize(
    ("overrides", "ops", "ttl_ms"),
    [
        ({}, (), 0),
        ({"result_cache_ttl_s": 0}, (), 0),
        ({"result_cache_ttl_s": 60}, (), 60_000),
        ({"result_cache_ttl_s": 0.25}, (), 250),
        ({"result_cache_ttl_s": 0.0001}, (), 1),
        ({"result_cache_ttl_s": 60}, ("RandomNormal",), 0),  # never trusted: stored before the rule, or by hand
    ],
)
def test_the_api_reads_the_ttl_and_never_caches_a_random_model(
    overrides: dict[str, int | float], ops: tuple[str, ...], ttl_ms: int
) -> None:
    assert cache_ttl_ms(version(overrides, ops=ops)) == ttl_ms
