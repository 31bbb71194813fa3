"""Demo models trained from scikit-learn's bundled datasets: no downloads, nothing committed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# (name, version) of every demo model, in registration order; aliases point at the version.
DEMO_MODELS: tuple[tuple[str, int], ...] = (("iris", 1), ("wine", 1), ("wine", 2), ("diabetes", 1))


@dataclass(frozen=True)
class DemoModel:
    """A trained demo model converted to ONNX, ready to register."""

    name: str
    version: int
    description: str
    onnx: bytes
    aliases: tuple[str, ...] = ()


def build(name: str, version: int) -> DemoModel:
    """Train and convert one demo model (deterministic: fixed seeds)."""
    try:
        builder = _BUILDERS[(name, version)]
    except KeyError:
        raise ValueError(f"no demo model {name}@{version}") from None
    return builder()


def _iris_1() -> DemoModel:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_iris()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return _convert("iris", 1, "iris: scaled logistic regression", model, data, names=_iris_names(data))


def _wine_1() -> DemoModel:
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_wine()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return _convert("wine", 1, "wine cultivar: scaled logistic regression", model, data, aliases=("prod",))


def _wine_2() -> DemoModel:
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier

    data = load_wine()
    model = RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0)
    return _convert("wine", 2, "wine cultivar: 100-tree random forest", model, data, aliases=("default",))


def _diabetes_1() -> DemoModel:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import GradientBoostingRegressor

    data = load_diabetes()
    model = GradientBoostingRegressor(n_estimators=100, max_depth=3, random_state=0)
    return _convert("diabetes", 1, "diabetes progression: gradient boosting regressor", model, data)


def _iris_names(data: Any) -> tuple[str, ...]:
    # "sepal length (cm)" -> "sepal_length_cm": record keys users can type without quoting spaces.
    return tuple(n.replace(" (cm)", "_cm").replace(" ", "_") for n in data.feature_names)


def _convert(
    name: str,
    version: int,
    description: str,
    model: Any,
    data: Any,
    *,
    names: tuple[str, ...] | None = None,
    aliases: tuple[str, ...] = (),
) -> DemoModel:
    import numpy as np

    from inferq.engine.convert import convert_sklearn

    x = np.asarray(data.data, dtype=np.float32)
    model.fit(x, data.target)
    feature_names = names or tuple(str(n).replace("/", "_") for n in data.feature_names)
    target_names = getattr(data, "target_names", None)
    class_names = tuple(str(n) for n in target_names) if target_names is not None else None
    onnx = convert_sklearn(
        model,
        n_features=x.shape[1],
        feature_names=feature_names,
        class_names=class_names,
        description=description,
    )
    return DemoModel(name=name, version=version, description=description, onnx=onnx, aliases=aliases)


_BUILDERS: dict[tuple[str, int], Callable[[], DemoModel]] = {
    ("iris", 1): _iris_1,
    ("wine", 1): _wine_1,
    ("wine", 2): _wine_2,
    ("diabetes", 1): _diabetes_1,
}
