"""Task detection: which outputs are a classifier's label and probabilities, or a regressor's value."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from inferq.contracts.models import Task, TensorSpec
from inferq.errors import InvalidModel

_FLOATS = ("float32", "float64")
_TASKS = ("classifier", "regressor", "tensor")


class Roles(NamedTuple):
    """The task and the outputs that postprocessing reads for it."""

    task: Task
    label_output: str | None = None
    probabilities_output: str | None = None
    value_output: str | None = None


def detect_task(outputs: Sequence[TensorSpec], *, declared: str | None = None) -> Roles:
    """Classifier: an int/string label output plus a float ``[None, n_classes]`` probabilities output
    (skl2onnx's ``label``/``probabilities``, else found by type and shape). Regressor: one float output
    ``[None]`` or ``[None, 1]`` (``[None, k]`` too when metadata ``inferq.task`` says regressor).
    Anything else is a plain tensor model.
    """
    if declared is not None and declared not in _TASKS:
        raise InvalidModel(f"metadata inferq.task must be one of {', '.join(_TASKS)}, got {declared!r}")
    if declared == "tensor":
        return Roles("tensor")
    label = _pick(outputs, "label", _is_label)
    probabilities = _pick(outputs, "probabilities", _is_probabilities)
    if label is not None and probabilities is not None and declared != "regressor":
        return Roles("classifier", label_output=label.name, probabilities_output=probabilities.name)
    if declared == "classifier":
        raise InvalidModel(
            "metadata inferq.task says classifier, but the model lacks an int64/string label output "
            "and a float [None, n_classes] probabilities output"
        )
    if len(outputs) == 1 and _is_value(outputs[0], multi=declared == "regressor"):
        return Roles("regressor", value_output=outputs[0].name)
    if declared == "regressor":
        raise InvalidModel("metadata inferq.task says regressor, but the model has not exactly one float output")
    return Roles("tensor")


def check_classes(
    probabilities: TensorSpec,
    *,
    classes: Sequence[int | str] | None,
    class_names: Sequence[str] | None,
) -> None:
    """Classes, class names and probability columns must agree in number."""
    width = probabilities.shape[1]
    if classes is not None and width is not None and len(classes) != width:
        raise InvalidModel(
            f"the model has {len(classes)} classes but output {probabilities.name!r} has {width} columns"
        )
    expected = len(classes) if classes is not None else width
    if class_names is not None and expected is not None and len(class_names) != expected:
        raise InvalidModel(f"metadata inferq.class_names has {len(class_names)} names for {expected} classes")


def _pick(outputs: Sequence[TensorSpec], name: str, test: Callable[[TensorSpec], bool]) -> TensorSpec | None:
    named = [spec for spec in outputs if spec.name == name and test(spec)]
    return named[0] if named else next((spec for spec in outputs if test(spec)), None)


def _is_label(spec: TensorSpec) -> bool:
    rank = len(spec.shape)
    return spec.dtype in ("int64", "int32", "string") and (rank == 1 or (rank == 2 and spec.shape[1] == 1))


def _is_probabilities(spec: TensorSpec) -> bool:
    return spec.dtype in _FLOATS and len(spec.shape) == 2


def _is_value(spec: TensorSpec, *, multi: bool) -> bool:
    rank = len(spec.shape)
    return spec.dtype in _FLOATS and (rank == 1 or (rank == 2 and (multi or spec.shape[1] == 1)))
