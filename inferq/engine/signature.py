"""``read_signature``: inputs, outputs, task, feature and class names from an ONNX model's bytes."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from inferq.contracts.models import DType, ModelSignature, TensorSpec
from inferq.engine import metadata
from inferq.engine.guards import all_graphs, check_domains, check_external_data
from inferq.engine.tasks import check_classes, detect_task
from inferq.errors import InvalidModel
from inferq.inputs import shape_text

_DTYPES: dict[int, DType] = {
    TensorProto.FLOAT: "float32",
    TensorProto.DOUBLE: "float64",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.BOOL: "bool",
    TensorProto.STRING: "string",
}
# Operators of the default domain that draw random numbers (Dropout too, in training mode: ``random_ops``).
_RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
# Attributes holding class labels on ai.onnx.ml classifier nodes (Linear, SVM: *_ints; trees: *_int64s).
_LABEL_ATTRIBUTES = ("classlabels_ints", "classlabels_int64s", "classlabels_strings")


def read_signature(model: bytes) -> ModelSignature:
    """Parse and check an ONNX model and describe what it takes and returns.

    Raises ``InvalidModel`` for bytes that are not ONNX, external data or custom operator
    domains anywhere in the model, inputs or outputs without a dynamic batch dimension,
    non-tensor outputs (ZipMap), unsupported element types and bad ``inferq.*`` metadata props.
    """
    return describe_model(parse_model(model))


def load_proto(model: bytes) -> onnx.ModelProto:
    """The ``ModelProto`` of ``model``, unchecked, or ``InvalidModel("not a valid ONNX model: …")``."""
    if not model:
        raise InvalidModel("not a valid ONNX model: the file is empty")
    try:
        return onnx.load_model_from_string(model)
    except Exception as exc:  # DecodeError, and whatever else protobuf raises on junk
        raise InvalidModel(f"not a valid ONNX model: {first_line(exc)}") from None


def parse_model(model: bytes) -> onnx.ModelProto:
    """The checked ``ModelProto`` of ``model``, or ``InvalidModel("not a valid ONNX model: …")``."""
    proto = load_proto(model)
    check_external_data(proto)
    check_domains(proto)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # ValidationError, or a checker crash on a malformed graph
        raise InvalidModel(f"not a valid ONNX model: {first_line(exc)}") from None
    return proto


def describe_model(proto: onnx.ModelProto) -> ModelSignature:
    """The signature of a parsed, checked model."""
    graph = proto.graph
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = tuple(_spec(v, role="input") for v in graph.input if v.name not in initializers)
    outputs = tuple(_spec(v, role="output") for v in graph.output)
    if not inputs:
        raise InvalidModel("the model has no inputs")
    for spec in inputs:
        if not _batch_major(spec):
            raise InvalidModel(
                f"input {spec.name!r} has no dynamic batch dimension (shape {shape_text(spec.shape)}); "
                "export it with a dynamic first dimension, e.g. [None, n_features]",
                input=spec.name,
            )
    for spec in outputs:
        # NOTE: predictions are one per row: an output without rows cannot be split or answered.
        if not _batch_major(spec):
            raise InvalidModel(
                f"output {spec.name!r} has no dynamic batch dimension (shape {shape_text(spec.shape)}); "
                "every output needs one row per input row, e.g. [None] or [None, n_classes]",
                output=spec.name,
            )
    props = {prop.key: prop.value for prop in proto.metadata_props}
    feature_names = metadata.read_strings(props, metadata.FEATURE_NAMES, unique=True)
    if feature_names is not None:
        _check_feature_names(feature_names, inputs)
    classes = metadata.read_classes(props) or _node_classes(graph)
    class_names = metadata.read_strings(props, metadata.CLASS_NAMES, unique=True)
    roles = detect_task(outputs, declared=props.get(metadata.TASK))
    if roles.probabilities_output is not None:
        probabilities = next(spec for spec in outputs if spec.name == roles.probabilities_output)
        check_classes(probabilities, classes=classes, class_names=class_names)
    return ModelSignature(
        inputs=inputs,
        outputs=outputs,
        task=roles.task,
        feature_names=feature_names,
        classes=classes,
        class_names=class_names,
        label_output=roles.label_output,
        probabilities_output=roles.probabilities_output,
        value_output=roles.value_output,
        allow_nan=metadata.read_flag(props, metadata.ALLOW_NAN),
        nondeterministic_ops=random_ops(proto),
    )


def random_ops(proto: onnx.ModelProto) -> tuple[str, ...]:
    """The operators (sorted, once each) whose outputs are random, anywhere in the model: such a model
    answers the same inputs differently, so its results must never be cached.

    Dropout counts only with a ``training_mode`` input: without one (inference) it is the identity.
    """
    found: set[str] = set()
    for graph in all_graphs(proto):
        for node in graph.node:
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type in _RANDOM_OPS or (node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]):
                found.add(node.op_type)
    return tuple(sorted(found))


def _spec(value: onnx.ValueInfoProto, *, role: str) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        hint = ""
        if role == "output" and kind in ("sequence_type", "map_type"):
            hint = (
                "; for a scikit-learn classifier (skl2onnx's ZipMap) convert with zipmap=False, "
                "e.g. options={id(estimator): {'zipmap': False}}"
            )
        raise InvalidModel(f"{role} {value.name!r} is {_type_text(value.type)}, not a tensor{hint}")
    tensor = value.type.tensor_type
    dtype = _DTYPES.get(tensor.elem_type)
    if dtype is None:
        supported = ", ".join(_DTYPES.values())
        raise InvalidModel(
            f"{role} {value.name!r} has unsupported element type {_elem_name(tensor.elem_type)} "
            f"(supported: {supported})"
        )
    if not tensor.HasField("shape"):
        if role == "input":
            raise InvalidModel(f"input {value.name!r} has no declared shape")
        return TensorSpec(name=value.name, dtype=dtype, shape=(None,))  # unknown rank: batch-first
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    if any(d is not None and d < 0 for d in shape):  # protobuf allows it; numpy and ONNX Runtime do not
        raise InvalidModel(f"{role} {value.name!r} has a negative dimension (shape {list(shape)})")
    return TensorSpec(name=value.name, dtype=dtype, shape=shape)


def _batch_major(spec: TensorSpec) -> bool:
    return bool(spec.shape) and spec.shape[0] is None


def _check_feature_names(names: tuple[str, ...], inputs: tuple[TensorSpec, ...]) -> None:
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        raise InvalidModel("metadata inferq.feature_names needs a model with one 2-D input")
    width = inputs[0].shape[1]
    if width is not None and len(names) != width:
        raise InvalidModel(
            f"metadata inferq.feature_names has {len(names)} names but input {inputs[0].name!r} has {width} columns"
        )


def _node_classes(graph: onnx.GraphProto) -> tuple[int, ...] | tuple[str, ...] | None:
    """Class labels from the last classifier node (nodes are in topological order)."""
    found: tuple[int, ...] | tuple[str, ...] | None = None
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name not in _LABEL_ATTRIBUTES:
                continue
            if attribute.ints:
                found = tuple(int(i) for i in attribute.ints)
            elif attribute.strings:
                found = tuple(s.decode() for s in attribute.strings)
    return found


def _type_text(value: onnx.TypeProto) -> str:
    kind = value.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({_elem_name(value.tensor_type.elem_type)})"
    if kind == "sequence_type":
        return f"seq({_type_text(value.sequence_type.elem_type)})"
    if kind == "map_type":
        return f"map({_elem_name(value.map_type.key_type)},{_type_text(value.map_type.value_type)})"
    return kind or "an unknown type"


def _elem_name(elem_type: int) -> str:
    try:
        return str(TensorProto.DataType.Name(elem_type)).lower()
    except ValueError:
        return f"type {elem_type}"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (ONNX and ORT messages run on), else its class name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
