"""``inferq models import | list | show``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferq.cli.output import emit, say
from inferq.cli.runtime import Runtime, opened
from inferq.errors import InvalidInput, InvalidModel, ModelLoadFailed
from inferq.settings import Settings

ONNX_SUFFIXES = (".onnx",)


async def import_file(
    settings: Settings,
    *,
    path: str,
    name: str,
    aliases: list[str],
    description: str | None,
    feature_names: list[str] | None,
    class_names: list[str] | None,
) -> int:
    """Register a local ONNX file, or a scikit-learn file converted to ONNX, as the next version."""
    onnx = read_model_file(Path(path), feature_names=feature_names, class_names=class_names, description=description)
    from inferq.engine.validate import validate_model

    # Load it once here (size cap, ONNX Runtime, warm-up run): a model that cannot be served is never registered.
    try:
        signature = validate_model(onnx, settings=settings.engine)
    except ModelLoadFailed as exc:  # deterministic for this file: the file is the problem, not the moment
        raise InvalidModel(exc.message, **exc.details) from None
    async with opened(settings) as rt:
        version = await rt.registry.register(
            name=name, model=onnx, signature=signature, description=description, aliases=aliases
        )
        cache_locally(rt, version.sha256, onnx)
    say(f"registered {version.key} ({version.size_bytes} bytes, sha256 {version.sha256[:12]}…)")
    emit(version)
    return 0


def cache_locally(rt: Runtime, sha256: str, onnx: bytes) -> None:
    """Best effort: the artifact is already committed in Postgres; the local copy only saves a fetch."""
    try:
        rt.artifacts.write(sha256, onnx)
    except OSError as exc:
        say(f"warning: could not write the local model cache ({exc}); it will be fetched when needed")


def read_model_file(
    path: Path,
    *,
    feature_names: list[str] | None = None,
    class_names: list[str] | None = None,
    description: str | None = None,
) -> bytes:
    """ONNX bytes from an ``.onnx`` file, or from a scikit-learn joblib/pickle file (converted).

    The pickle is the user's own local file: loading it runs code, which is why HTTP uploads
    accept ONNX only.
    """
    if not path.is_file():
        raise InvalidInput(f"no such file: {path}", field="file")
    if path.suffix.lower() in ONNX_SUFFIXES:
        return path.read_bytes()
    from inferq.engine.convert import convert_sklearn, load_sklearn_file

    estimator = load_sklearn_file(path)
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is None:
        raise InvalidModel(f"{path.name}: not a fitted scikit-learn estimator (no n_features_in_)")
    names = feature_names or _names_from(estimator)
    if class_names is None and hasattr(estimator, "classes_"):
        class_names = [str(c) for c in estimator.classes_]
    return convert_sklearn(
        estimator,
        n_features=int(n_features),
        feature_names=names,
        class_names=class_names,
        description=description,
    )


async def list_models(settings: Settings) -> int:
    async with opened(settings) as rt:
        models = await rt.registry.list_models()
    emit([_summary(m) for m in models])
    return 0


async def show_model(settings: Settings, *, name: str) -> int:
    async with opened(settings) as rt:
        emit(await rt.registry.get_model(name))
    return 0


def _summary(model: Any) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [{"version": v.version, "status": v.status, "task": v.signature.task} for v in model.versions],
        "aliases": {a.name: a.weights for a in model.aliases},
    }


def _names_from(estimator: Any) -> list[str] | None:
    names = getattr(estimator, "feature_names_in_", None)
    return [str(n) for n in names] if names is not None else None
