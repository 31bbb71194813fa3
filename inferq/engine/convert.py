"""scikit-learn → ONNX with the ``inferq.*`` metadata (needs the ``[convert]`` extra)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from inferq.engine import metadata
from inferq.engine.signature import first_line, read_signature
from inferq.errors import InvalidModel

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
INPUT_NAME = "input"


def convert_sklearn(
    estimator: Any,
    *,
    n_features: int,
    feature_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    description: str | None = None,
) -> bytes:
    """A fitted estimator or Pipeline → ONNX bytes: float32 ``input`` of ``[None, n_features]``,
    tensor outputs (``zipmap=False``), feature/class names and classes in metadata props.

    Raises ``InvalidModel`` when the estimator is not fitted, not convertible, or the names do
    not fit it.
    """
    try:
        from skl2onnx import convert_sklearn as to_onnx
        from skl2onnx.common.data_types import FloatTensorType
        from sklearn.base import is_classifier, is_regressor
        from sklearn.utils.validation import check_is_fitted
    except ImportError as exc:
        raise InvalidModel("converting scikit-learn models needs: pip install 'inferq[convert]'") from exc
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    kind = type(final).__name__
    try:
        check_is_fitted(estimator)
    except Exception as exc:  # NotFittedError, or TypeError for something that is not an estimator
        raise InvalidModel(f"cannot convert {kind}: {first_line(exc)}") from None
    fitted_width = getattr(estimator, "n_features_in_", n_features)
    if fitted_width != n_features:
        raise InvalidModel(f"{kind} was fitted on {fitted_width} features, not n_features={n_features}")
    if feature_names is not None and len(feature_names) != n_features:
        raise InvalidModel(f"{len(feature_names)} feature names for {n_features} features")
    classifier = is_classifier(final)
    classes = final.classes_.tolist() if classifier and hasattr(final, "classes_") else None
    if class_names is not None and classes is not None and len(class_names) != len(classes):
        raise InvalidModel(f"{len(class_names)} class names for {len(classes)} classes")
    try:
        proto = to_onnx(
            estimator,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            options={id(final): {"zipmap": False}} if classifier else None,
            target_opset=TARGET_OPSET,
        )
    except Exception as exc:
        raise InvalidModel(f"cannot convert {kind} to ONNX: {first_line(exc)}") from None
    props = _props(feature_names=feature_names, class_names=class_names, classes=classes)
    props[metadata.TASK] = "classifier" if classifier else "regressor" if is_regressor(final) else "tensor"
    onnx.helper.set_model_props(proto, props)
    if description:
        proto.doc_string = description
    model: bytes = proto.SerializeToString()
    read_signature(model)  # what we write must read back as a valid inferq model
    return model


def load_sklearn_file(path: str | Path) -> Any:
    """Unpickle an estimator from the user's own joblib/pickle file.

    NOTE: unpickling runs code from the file; only for local files the user trusts, never uploads.
    """
    try:
        import joblib
    except ImportError as exc:
        raise InvalidModel("loading scikit-learn files needs: pip install 'inferq[convert]'") from exc
    try:
        estimator = joblib.load(path)
    except OSError as exc:
        raise InvalidModel(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # UnpicklingError, KeyError, EOFError, ModuleNotFoundError, ...
        raise InvalidModel(f"{path} is not a scikit-learn pickle or joblib file: {first_line(exc)}") from None
    if not hasattr(estimator, "predict"):
        raise InvalidModel(f"{path} holds a {type(estimator).__name__}, not a scikit-learn estimator")
    return estimator


def _props(
    *, feature_names: Sequence[str] | None, class_names: Sequence[str] | None, classes: list[Any] | None
) -> dict[str, str]:
    props: dict[str, str] = {}
    if feature_names is not None:
        props[metadata.FEATURE_NAMES] = json.dumps([str(name) for name in feature_names])
    if class_names is not None:
        props[metadata.CLASS_NAMES] = json.dumps([str(name) for name in class_names])
    if classes is not None and (
        all(isinstance(c, int) and not isinstance(c, bool) for c in classes) or all(isinstance(c, str) for c in classes)
    ):
        props[metadata.CLASSES] = json.dumps(classes)
    return props
