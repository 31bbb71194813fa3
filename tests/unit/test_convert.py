"""scikit-learn → ONNX: metadata written, tensor outputs, clear errors; loading pickles."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeRegressor

from inferq.engine import convert_sklearn, load_sklearn_file, read_signature
from inferq.errors import InvalidModel

X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
Y = np.array(["no", "yes"] * 20)


def props_of(model: bytes) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load_model_from_string(model).metadata_props}


def test_classifier_metadata_and_outputs() -> None:
    estimator = LogisticRegression().fit(X, Y)
    model = convert_sklearn(
        estimator, n_features=3, feature_names=["p", "q", "r"], class_names=["No", "Yes"], description="toy"
    )
    proto = onnx.load_model_from_string(model)
    assert proto.doc_string == "toy"
    assert [(i.name, [d.dim_value or None for d in i.type.tensor_type.shape.dim]) for i in proto.graph.input] == [
        ("input", [None, 3])
    ]
    assert {o.type.WhichOneof("value") for o in proto.graph.output} == {"tensor_type"}  # zipmap=False
    opsets = {op.domain or "": op.version for op in proto.opset_import}
    assert opsets[""] == 17
    assert opsets["ai.onnx.ml"] <= 3  # the target is a ceiling: skl2onnx uses the lowest that suffices
    assert props_of(model) == {
        "inferq.feature_names": '["p", "q", "r"]',
        "inferq.class_names": '["No", "Yes"]',
        "inferq.classes": '["no", "yes"]',
        "inferq.task": "classifier",
    }
    sig = read_signature(model)
    assert (sig.task, sig.classes, sig.class_names) == ("classifier", ("no", "yes"), ("No", "Yes"))


def test_regressor_metadata() -> None:
    model = convert_sklearn(DecisionTreeRegressor(max_depth=2).fit(X, X[:, 0]), n_features=3)
    assert props_of(model) == {"inferq.task": "regressor"}
    assert read_signature(model).task == "regressor"


def test_pipeline_keys_zipmap_on_its_final_estimator(iris_lr: Any) -> None:
    sig = read_signature(iris_lr.onnx)
    assert [o.name for o in sig.outputs] == ["label", "probabilities"]
    assert json.loads(props_of(iris_lr.onnx)["inferq.classes"]) == [0, 1, 2]


def test_unfitted_estimator_is_invalid_model() -> None:
    with pytest.raises(InvalidModel, match=r"cannot convert LogisticRegression: .*not fitted"):
        convert_sklearn(LogisticRegression(), n_features=3)


class Homemade(ClassifierMixin, BaseEstimator):
    """A fitted classifier that skl2onnx has no converter for."""

    def fit(self, x: Any, y: Any) -> Homemade:
        self.classes_ = np.unique(y)
        self.n_features_in_ = x.shape[1]
        return self

    def predict(self, x: Any) -> Any:
        return np.repeat(self.classes_[:1], len(x))


def test_unconvertible_estimator_is_invalid_model() -> None:
    with pytest.raises(InvalidModel, match="cannot convert Homemade to ONNX: "):
        convert_sklearn(Homemade().fit(X, Y), n_features=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_features": 4}, "LogisticRegression was fitted on 3 features, not n_features=4"),
        ({"n_features": 3, "feature_names": ["a"]}, "1 feature names for 3 features"),
        ({"n_features": 3, "class_names": ["a", "b", "c"]}, "3 class names for 2 classes"),
    ],
)
def test_names_must_fit_the_estimator(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidModel, match=message):
        convert_sklearn(LogisticRegression().fit(X, Y), **kwargs)


def test_load_sklearn_file_round_trip(tmp_path: Path) -> None:
    estimator = LogisticRegression().fit(X, Y)
    for name, dump in (("m.joblib", joblib.dump), ("m.pkl", lambda o, p: Path(p).write_bytes(pickle.dumps(o)))):
        dump(estimator, tmp_path / name)
        loaded = load_sklearn_file(tmp_path / name)
        assert loaded.predict(X).tolist() == estimator.predict(X).tolist()


def test_load_sklearn_file_errors(tmp_path: Path, iris_lr: Any) -> None:
    (tmp_path / "model.onnx").write_bytes(iris_lr.onnx)
    with pytest.raises(InvalidModel, match=r"model\.onnx is not a scikit-learn pickle or joblib file"):
        load_sklearn_file(tmp_path / "model.onnx")
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(InvalidModel, match=r"dict\.pkl holds a dict, not a scikit-learn estimator"):
        load_sklearn_file(tmp_path / "dict.pkl")
    with pytest.raises(InvalidModel, match=r"cannot read .*missing\.pkl"):
        load_sklearn_file(tmp_path / "missing.pkl")


def test_importing_the_engine_loads_no_sklearn_and_builds_nothing() -> None:
    code = (
        "import sys, gc, inferq.engine, inferq.inputs, onnxruntime as ort\n"
        "assert not {'sklearn', 'skl2onnx', 'joblib'} & set(sys.modules), sorted(sys.modules)\n"
        "assert not [o for o in gc.get_objects() if isinstance(o, ort.InferenceSession)]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
