"""One Settings object, read from ``INFERQ_*`` environment variables once at process start.

Components take only their own part (``settings.engine``, ``settings.services``); tests build
Settings in code. Every variable is listed in ``docs/settings.md``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

PREFIX = "INFERQ_"


class EngineSettings(msgspec.Struct, frozen=True, kw_only=True):
    """ONNX Runtime and model cache knobs."""

    intra_op_threads: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    inter_op_threads: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    cache_size: Annotated[int, msgspec.Meta(ge=1)] = 8
    model_root: Path = Path(".inferq/models")
    max_model_bytes: Annotated[int, msgspec.Meta(ge=1)] = 512 * 1024 * 1024


class ServiceSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where Redis and Postgres are; ``None`` means start embedded ones."""

    redis_url: str | None = None
    database_url: str | None = None
    # Letters, digits and `_ . : -`: the prefix is part of Redis ACL key patterns (a `*` would widen them).
    key_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")] = "inferq"
    state_dir: Path = Path(".inferq")
    socket_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 2.0


class QueueSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The queue path: waits, deadlines, admission, batching, redelivery (per-version overrides win)."""

    wait_default_s: float = 30.0
    wait_max_s: float = 60.0
    deadline_default_s: float = 600.0
    admission_limit: int = 1000
    max_batch: int = 64
    max_batch_delay_ms: float = 0.0
    thread_crossover_rows: int = 64
    block_ms: int = 1000
    reclaim_min_idle_ms: int = 30_000
    reclaim_interval_ms: int = 1000
    max_deliveries: int = 3
    heartbeat_ms: int = 10_000
    consumer_idle_ms: int = 3_600_000
    result_ttl_s: int = 86_400
    result_short_ttl_s: int = 0  # 0 = 2 x wait_max_s
    discovery_interval_s: float = 2.0
    restart_backoff_ms: int = 500
    restart_backoff_max_ms: int = 30_000
    shutdown_grace_s: float = 60.0
    # Diagnostics: when set, workers append one JSON line per run attempt to this file (fault tests).
    run_ledger: str | None = None
    producers: str = ""  # direct producers and their tenants: "billing=default,fraud=acme"

    def producer_tenants(self) -> dict[str, str]:
        """``producers`` as a map; a producer without ``=tenant`` belongs to the ``default`` tenant."""
        pairs = (item.strip().partition("=") for item in self.producers.split(",") if item.strip())
        return {name.strip(): (tenant.strip() or "default") for name, _, tenant in pairs}


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The HTTP API: request limits, the model catalog's refresh, health checks, shutdown."""

    max_body_bytes: int = 10 * 1024 * 1024
    max_elements: int = 1_000_000  # values per request across all inputs
    deadline_max_s: float = 86_400.0  # the largest Cancel-After accepted
    catalog_refresh_s: float = 2.0
    catalog_miss_refresh_s: float = 1.0  # a miss refreshes the catalog at most this often
    health_timeout_s: float = 1.0
    shutdown_timeout_s: float = 10.0  # uvicorn's graceful shutdown after waiters were answered
    # Model uploads: each is validated by a child process with these limits (docs/models.md "Uploading").
    model_validate_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 120.0  # wall clock; then the child is killed
    model_validate_cpu_s: Annotated[int, msgspec.Meta(ge=1)] = 60  # RLIMIT_CPU of the child
    model_validate_memory_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0  # RLIMIT_AS; 0 = 1 GiB + 6 x max model
    model_validate_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 2  # uploads at once per API process


class JobsSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Durable jobs and their webhooks: chunking, limits, retention, the retry schedule, the reconciler."""

    chunk_rows: Annotated[int, msgspec.Meta(ge=1, le=65_536)] = 256
    max_job_rows: Annotated[int, msgspec.Meta(ge=1)] = 1_000_000
    max_upload_bytes: Annotated[int, msgspec.Meta(ge=1)] = 200_000_000  # a job's file: 200 MB
    max_inline_bytes: Annotated[int, msgspec.Meta(ge=1)] = 32 * 1024 * 1024  # a JSON job body (decoded whole)
    completion_window_default_s: Annotated[float, msgspec.Meta(gt=0)] = 86_400.0
    completion_window_max_s: Annotated[float, msgspec.Meta(gt=0)] = 7 * 86_400.0
    job_retention_s: Annotated[float, msgspec.Meta(gt=0)] = 30 * 86_400.0  # results deleted after this
    stranded_after_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0  # a chunk's entry missing this long → re-enqueued
    reconcile_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    webhook_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=15)] = 15.0
    webhook_retry_scale: Annotated[float, msgspec.Meta(ge=0)] = 1.0  # multiplies the retry schedule (tests: ~0)
    webhook_max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 8


class AuthSettings(msgspec.Struct, frozen=True, kw_only=True):
    """API keys and the default limits of every tenant (a tenant's own limits override these)."""

    api_key_pepper: str | None = None  # HMAC key of stored API keys; required outside development
    key_cache_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0  # the revocation lag (positive and negative)
    auth_ip_rate: Annotated[float, msgspec.Meta(gt=0)] = 10.0  # key lookups per second per client address
    auth_ip_burst: Annotated[int, msgspec.Meta(ge=1)] = 30
    key_rate_per_s: Annotated[float, msgspec.Meta(gt=0)] = 100.0  # requests per second per key, sustained
    key_burst: Annotated[int, msgspec.Meta(ge=1)] = 200  # requests per key allowed at once above the rate
    key_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 64  # predictions in flight per key
    max_rows: Annotated[int, msgspec.Meta(ge=1)] = 10_000  # rows per prediction request


class PredictionLogSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The prediction log (workers write it, ``inferq tasks`` prunes it, the API's stats read it)."""

    prediction_log_sample: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0  # share of results logged; 0 = off
    prediction_log_retention_s: Annotated[float, msgspec.Meta(gt=0)] = 30 * 86_400.0
    prediction_log_buffer: Annotated[int, msgspec.Meta(ge=1)] = 100_000  # rows a worker holds; more are dropped
    prediction_log_flush_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0  # a worker writes its rows this often


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    services: ServiceSettings = ServiceSettings()
    engine: EngineSettings = EngineSettings()
    queue: QueueSettings = QueueSettings()
    api: ApiSettings = ApiSettings()
    jobs: JobsSettings = JobsSettings()
    auth: AuthSettings = AuthSettings()
    prediction_log: PredictionLogSettings = PredictionLogSettings()
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    # /metrics of the worker supervisor and of `inferq tasks`, on ``host`` (docs/metrics.md); 0 = not served.
    worker_metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9101
    tasks_metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9102
    log_level: str = "info"
    webhook_allow_private: bool = False
    api_key: str | None = None  # the key client commands (`inferq jobs submit`) send
    dev: bool = False  # development (`inferq dev` sets it): production-only warnings stay quiet

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``INFERQ_*`` variable. A malformed value is a ``ValueError`` naming the variable;
        an unknown ``INFERQ_*`` name (a typo such as ``INFERQ_REDIS_ULR``) is a warning."""
        env = os.environ if environ is None else environ
        values = {k[len(PREFIX) :].lower(): v for k, v in env.items() if k.startswith(PREFIX) and v != ""}
        sections: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
        top: dict[str, Any] = {}
        for key, raw in values.items():
            section = _SECTION_OF.get(key)
            if section is not None:
                sections[section][_FIELD_ALIASES.get(key, key)] = raw
            elif key in _TOP_FIELDS:
                top[key] = raw
            else:
                warnings.warn(f"unknown setting {PREFIX}{key.upper()} is ignored", UnknownSetting, stacklevel=2)
        try:
            return msgspec.convert({**top, **sections}, cls, strict=False, dec_hook=_decode_path)
        except msgspec.ValidationError as exc:
            raise ValueError(_explain(exc)) from exc


def redacted_url(url: str | None) -> str:
    """``url`` fit for a log line or a terminal: its password replaced by ``***``."""
    if not url:
        return "(unset)"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class UnknownSetting(UserWarning):
    """An ``INFERQ_*`` variable that no setting reads."""


def _explain(exc: msgspec.ValidationError) -> str:
    """msgspec's message with its ``$.section.field`` path replaced by the variable's name."""
    text = str(exc)
    path = text.rpartition("`$.")[2].rstrip("`")
    field = path.rpartition(".")[2]
    name = _ENV_NAME.get(field, field).upper()
    return f"invalid {PREFIX}{name}: {text.partition(' - at ')[0]}"


def _decode_path(type_: type, obj: Any) -> Any:
    if type_ is Path and isinstance(obj, str):
        return Path(obj)
    raise NotImplementedError


# Environment names that differ from their field names (the design's public names).
_FIELD_ALIASES = {
    "engine_threads": "intra_op_threads",
    "engine_inter_op_threads": "inter_op_threads",
    "model_cache_size": "cache_size",
}
_SECTION_OF: dict[str, str] = {
    **{name: "services" for name in ServiceSettings.__struct_fields__},
    **{name: "engine" for name in ("model_root", "max_model_bytes")},
    **{alias: "engine" for alias in _FIELD_ALIASES},
    **{name: "queue" for name in QueueSettings.__struct_fields__},
    **{name: "api" for name in ApiSettings.__struct_fields__},
    **{name: "jobs" for name in JobsSettings.__struct_fields__},
    **{name: "auth" for name in AuthSettings.__struct_fields__},
    **{name: "prediction_log" for name in PredictionLogSettings.__struct_fields__},
}
_SECTIONS = ("services", "engine", "queue", "api", "jobs", "auth", "prediction_log")
_ENV_NAME = {field: alias for alias, field in _FIELD_ALIASES.items()}
_TOP_FIELDS = frozenset(set(Settings.__struct_fields__) - set(_SECTIONS))
