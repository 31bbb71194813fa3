"""V2 server and model metadata and readiness, from the catalog and the partitions' alive keys.

A path without a version names an alias (``name`` = ``default``, ``name@prod``): its metadata is the
version taking most of its traffic, and it is ready while a version it routes to is (as v1's flag).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from inferq.api.catalog import ModelCatalog
from inferq.api.directory import ModelDirectory
from inferq.api.health import HealthChecks
from inferq.contracts.models import DEFAULT_ALIAS, ModelRef, ModelVersion, TensorSpec
from inferq.contracts.v2 import DATATYPES, PLATFORM, ModelMetadata, Readiness, ServerMetadata, TensorMetadata
from inferq.errors import InvalidInput, ModelNotFound, VersionNotFound
from inferq.inputs.v2 import v2_shape

SERVER_NAME = "inferq"
EXTENSIONS = ("binary_tensor_data",)


def server_version() -> str:
    """The installed inferq version ("0" when run from a tree that is not installed)."""
    try:
        return package_version("inferq")
    except PackageNotFoundError:
        return "0"


def model_ref(model: str, version: str | None = None) -> ModelRef:
    """The path's model (``name``, ``name@3``, ``name@alias``) and optional ``/versions/{v}``; 404 otherwise."""
    try:
        ref = ModelRef.parse(model)
    except InvalidInput as exc:
        raise ModelNotFound(f"model {model!r} not found: {exc.message}", model=model) from None
    if version is None:
        return ref
    if "@" in model:
        raise ModelNotFound(f"model {model!r} not found: name the version in the path only", model=model)
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise VersionNotFound(f"model {ref.name!r} has no version {version!r}", model=ref.name, version=version)
    return ModelRef(name=ref.name, version=int(version))


class V2Metadata:
    """``GET /v2``, ``/v2/health/ready``, ``/v2/models/{m}[/versions/{v}]`` and ``…/ready``, without HTTP."""

    def __init__(self, *, catalog: ModelCatalog, directory: ModelDirectory, health: HealthChecks) -> None:
        self._catalog = catalog
        self._directory = directory
        self._health = health
        self._server = ServerMetadata(name=SERVER_NAME, version=server_version(), extensions=EXTENSIONS)

    def server(self) -> ServerMetadata:
        return self._server

    async def server_ready(self) -> Readiness:
        """Ready when Redis and Postgres answer (as ``/health/ready``)."""
        report = await self._health.ready()
        if report.status == "ok":
            return Readiness(ready=True)
        failed = "; ".join(f"{name}: {check}" for name, check in report.checks.items() if check != "ok")
        return Readiness(ready=False, error=f"not ready: {failed}")

    async def model(self, ref: ModelRef) -> ModelMetadata:
        served = await self._served(ref)
        info = await self._catalog.model(ref.name)
        shown = served[0].signature
        return ModelMetadata(
            name=ref.name,
            versions=tuple(str(v.version) for v in info.versions if v.status != "archived"),
            platform=PLATFORM,
            inputs=tuple(_tensor(spec) for spec in shown.inputs),
            outputs=tuple(_tensor(spec) for spec in shown.outputs),
        )

    async def model_ready(self, ref: ModelRef) -> Readiness:
        """Ready while a worker consumes a partition the path routes to."""
        served = await self._served(ref)
        ready = await self._directory.ready([(v.model, v.version) for v in served])
        if ready:
            return Readiness(name=ref.name, ready=True)
        listed = ", ".join(str(v.version) for v in served)
        return Readiness(
            name=ref.name, ready=False, error=f"model {str(ref)!r} is not ready: no worker consumes version {listed}"
        )

    async def _served(self, ref: ModelRef) -> list[ModelVersion]:
        """The versions ``ref`` routes to, most traffic first (not-found errors as predictions get them)."""
        picked = await self._catalog.resolve(ref)
        if ref.version is not None:
            return [picked]
        info = await self._catalog.model(ref.name)
        alias = next((a for a in info.aliases if a.name == (ref.alias or DEFAULT_ALIAS)), None)
        if alias is None:  # the catalog was refreshed in between
            return [picked]
        live = {v.version: v for v in info.versions if v.status != "archived"}
        ranked = sorted(
            (v for v, weight in alias.weights.items() if v in live and weight > 0),
            key=lambda v: (alias.weights[v], v),
            reverse=True,
        )
        return [live[v] for v in ranked] or [picked]


def _tensor(spec: TensorSpec) -> TensorMetadata:
    return TensorMetadata(name=spec.name, datatype=DATATYPES[spec.dtype], shape=v2_shape(spec.shape))
