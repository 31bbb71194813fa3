"""The checkers of docker-compose.yml and the observability files (tests/unit/test_compose.py runs them
against the real files and broken copies; no Docker engine here).

The compose file against the compose-spec JSON schema (the copy vendored in ``check-jsonschema``), then
what inferq needs of it: compose's own interpolation (a missing secret stops it), every inferq command
and ``INFERQ_*`` variable accepted by inferq itself, a Redis that cannot lose accepted work, the start
order, scaling and shutdown grace, health checks on real routes. Prometheus scrapes every inferq process
that serves metrics, on the port its settings give it. The Grafana dashboard's queries are parsed as PromQL
and may only use metrics and labels inferq exposes (the API, the worker supervisor, ``inferq tasks``). Each
checker is also fed broken copies, to show it rejects them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import io
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import jsonschema
import promql_parser
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inferq.api.metrics import Metrics
from inferq.cli.main import build_parser
from inferq.contracts.messages import InferResult, JobChunkRef, Timings
from inferq.contracts.names import Names
from inferq.settings import Settings, UnknownSetting
from inferq.streams.backlog import Backlog, LaneBacklog, PartitionBacklog
from inferq.streams.consumer import Entry
from inferq.streams.partition import Partition
from inferq.webhooks.sender import AttemptOutcome
from inferq.workers.metrics import WorkerMetrics
from inferq.workers.publisher import Outcome
from inferq.workers.supervisor_metrics import SupervisorGauges
from inferq.workers.task_metrics import TaskMetrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "ops" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA / "inferq.json"

ENV = {
    "POSTGRES_PASSWORD": "pg-secret",
    "REDIS_PASSWORD": "redis-secret",
    "INFERQ_API_KEY_PEPPER": "p" * 32,
}  # what an operator exports
COMMANDS = {"migrate": "migrate", "api": "serve", "worker": "worker", "webhooks": "tasks"}  # the image's services
OBSERVABILITY = {"prometheus", "grafana"}
SECRET = re.compile(r"PASSWORD|SECRET|TOKEN")
# Required only with the `observability` profile: compose interpolates the whole file before it picks
# services, so `:?` would make it required without the profile; the service refuses to start instead.
CHECKED_AT_START = {"GRAFANA_ADMIN_PASSWORD": "grafana"}
# The stream gauges the dashboard is built on (rendered by the API from a reading of Redis): name → labels.
STREAM_GAUGES = {
    "inferq_stream_backlog": {"partition", "lane"},
    "inferq_stream_pending": {"partition", "lane"},
    "inferq_stream_oldest_age_seconds": {"partition", "lane"},
    "inferq_stream_consumers": {"partition"},
    "inferq_stream_dead_letters": {"partition"},
}
# The services whose processes serve /metrics, and the port each listens on (from its settings).
METRICS_PORTS = {
    "api": lambda s: s.port,
    "worker": lambda s: s.worker_metrics_port,
    "webhooks": lambda s: s.tasks_metrics_port,
}
HINT = "(URL-safe, e.g. openssl rand -hex 24)"  # the `:?` message of the compose file's secrets
GRAFANA_VARIABLES = re.compile(r"\$__(rate_interval|interval|range)")


class ComposeError(Exception):
    """What is wrong with a compose file or an observability file."""


# --- interpolation, as compose does it ----------------------------------------------------------------------

_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<named>[A-Za-z_]\w*)|)"
)


def _substitute(match: re.Match[str], env: Mapping[str, str]) -> str:
    if match["escaped"]:
        return "$"
    name, op, arg = match["braced"] or match["named"], match["op"], match["arg"] or ""
    if name is None or "$" in arg:
        raise ComposeError(f"invalid (or nested) interpolation at {match.string!r}")
    value, present = env.get(name, ""), name in env
    if op in (":?", "?") and not (value if op == ":?" else present):
        raise ComposeError(f"required variable {name} is missing a value: {arg}")
    if op == ":-":
        return value or arg
    if op == "-":
        return value if present else arg
    if op in (":+", "+"):
        return arg if (value if op == ":+" else present) else ""
    return value


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """``node`` with every ``$VAR``/``${VAR…}`` in its string values replaced (``$$`` is a literal ``$``)."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if isinstance(node, str):
        return _REFERENCE.sub(lambda m: _substitute(m, env), node)
    return node


def references(node: Any) -> Iterator[tuple[str, str, str]]:
    """Every variable reference in ``node``'s string values: (name, operator or '', argument)."""
    if isinstance(node, dict):
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)
    elif isinstance(node, str):
        for match in _REFERENCE.finditer(node):
            if match["braced"] or match["named"]:
                yield match["braced"] or match["named"], match["op"] or "", match["arg"] or ""


def load(text: str, env: Mapping[str, str] = ENV) -> tuple[dict[str, Any], dict[str, Any]]:
    """The compose file as written and as compose would see it with ``env``."""
    raw = yaml.safe_load(text)
    return raw, interpolate(raw, env)


# --- checkers -----------------------------------------------------------------------------------------------


@functools.cache
def compose_schema() -> dict[str, Any]:
    """compose-spec's schema, as vendored by check-jsonschema (Apache-2.0, licenses/LICENSE.compose-spec)."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


def check_schema(doc: dict[str, Any]) -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(doc)]
    if errors:
        raise ComposeError("not a valid compose file:\n" + "\n".join(sorted(errors)))


def check_references(raw: dict[str, Any]) -> None:
    """Every variable says what happens when it is unset (a default, or ``:?``); secrets are required;
    no service carries a literal secret."""
    problems = []
    for name, op, arg in references(raw):
        if op == "":
            problems.append(f"${{{name}}} has no default and is not required: unset, it would be empty")
        elif SECRET.search(name) and name not in CHECKED_AT_START and (op != ":?" or not arg.strip()):
            problems.append(f"secret {name} must be required with ${{{name}:?message}}, not {op!r}")
    for service, spec in raw["services"].items():
        for key, value in environment(spec).items():
            if SECRET.search(key) and "${" not in value:
                problems.append(f"{service}: {key} is a literal; take it from the environment with :?")
            password = re.search(r"://[^/@\s]*:([^/@\s]+)@", re.sub(r"\$\{[^}]*\}", "\0", value))
            if password and password[1] != "\0":
                problems.append(f"{service}: {key} has a literal password in its URL")
    for name, service in CHECKED_AT_START.items():
        spec = raw["services"][service]
        entry = " ".join(spec.get("entrypoint", []))
        if not any(name in value for value in environment(spec).values()) or "test -n" not in entry:
            problems.append(f"{service} must refuse to start without {name} (its entrypoint checks it)")
    if problems:
        raise ComposeError("\n".join(problems))


def environment(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def inferq_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the inferq image (the ones built from this repository)."""
    return {name: spec for name, spec in doc["services"].items() if "build" in spec}


def check_commands(doc: dict[str, Any]) -> None:
    """Each inferq service's command is accepted by ``inferq`` and is the command that service is for."""
    problems = []
    services = inferq_services(doc)
    if set(services) != set(COMMANDS):
        problems.append(f"inferq services {sorted(services)}, expected {sorted(COMMANDS)}")
    for name, spec in services.items():
        argv = spec.get("command")
        if not isinstance(argv, list):
            problems.append(f"{name}: command must be a list (exec form), got {argv!r}")
            continue
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                command = build_parser().parse_args(argv).command
        except SystemExit:
            problems.append(f"{name}: inferq {' '.join(argv)}: {stderr.getvalue().strip()}")
            continue
        if command != COMMANDS.get(name, command):
            problems.append(f"{name} runs `inferq {command}`, expected `inferq {COMMANDS[name]}`")
    if problems:
        raise ComposeError("\n".join(problems))


def settings_of(spec: dict[str, Any]) -> Settings:
    """``Settings.from_env`` on a service's environment, an unknown ``INFERQ_*`` name being an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownSetting)
        try:
            return Settings.from_env(environment(spec))
        except (UnknownSetting, ValueError) as exc:
            raise ComposeError(str(exc)) from None


def check_settings(doc: dict[str, Any]) -> None:
    """Every inferq service's settings load; they name this file's Redis and Postgres (the image has no
    embedded services) and none of the development-only switches."""
    problems = []
    for name, spec in inferq_services(doc).items():
        try:
            settings = settings_of(spec)
        except ComposeError as exc:
            problems.append(f"{name}: {exc}")
            continue
        for url, service in ((settings.services.redis_url, "redis"), (settings.services.database_url, "postgres")):
            if url is None or urlsplit(url).hostname != service:
                problems.append(f"{name}: must connect to the {service} service, not {url!r}")
        if settings.webhook_allow_private or settings.dev:
            problems.append(f"{name}: INFERQ_WEBHOOK_ALLOW_PRIVATE and INFERQ_DEV are for development only")
    if problems:
        raise ComposeError("\n".join(problems))


def flags(argv: list[str]) -> dict[str, str]:
    """``--name value`` pairs of a command line."""
    return {argv[i][2:]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}


def check_redis(doc: dict[str, Any]) -> None:
    """Redis 7 that never evicts (an evicted stream loses accepted requests), with an fsynced AOF on a
    named volume, and a health check the others wait for."""
    spec = doc["services"]["redis"]
    problems = []
    if not re.fullmatch(r"redis:7\.[\w.-]+", spec.get("image", "")):
        problems.append(f"redis must be a 7.x image pinned by tag: {spec.get('image')}")
    config = flags(spec.get("command") or [])
    wanted = {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}
    problems += [f"redis needs --{k} {v}, has {config.get(k)!r}" for k, v in wanted.items() if config.get(k) != v]
    problems += _volume_problems(doc, "redis", "/data")
    if spec.get("healthcheck", {}).get("disable", not spec.get("healthcheck")):
        problems.append("redis needs a health check")
    if problems:
        raise ComposeError("\n".join(problems))


def check_postgres(doc: dict[str, Any]) -> None:
    spec = doc["services"]["postgres"]
    problems = []
    if not re.fullmatch(r"postgres:16[\w.-]*", spec.get("image", "")):
        problems.append(f"postgres must be a 16.x image: {spec.get('image')}")
    if "pg_isready" not in " ".join(spec.get("healthcheck", {}).get("test", [])):
        problems.append("postgres needs a pg_isready health check")
    problems += _volume_problems(doc, "postgres", "/var/lib/postgresql/data")
    if problems:
        raise ComposeError("\n".join(problems))


def _volume_problems(doc: dict[str, Any], service: str, target: str) -> list[str]:
    mounts = {m.split(":")[1]: m.split(":")[0] for m in doc["services"][service].get("volumes", []) if ":" in m}
    source = mounts.get(target, "")
    if source not in (doc.get("volumes") or {}):
        return [f"{service} must keep {target} on a named volume declared under volumes:, has {source!r}"]
    return []


def dependencies(spec: dict[str, Any]) -> dict[str, str]:
    """depends_on as {service: condition} (the short list form means service_started)."""
    found = spec.get("depends_on") or {}
    if isinstance(found, list):
        return dict.fromkeys(found, "service_started")
    return {name: (dep or {}).get("condition", "service_started") for name, dep in found.items()}


def health_enabled(spec: dict[str, Any]) -> bool:
    check = spec.get("healthcheck")
    return bool(check) and not check.get("disable", False) and check.get("test") != ["NONE"]


def check_order(doc: dict[str, Any]) -> None:
    """migrate runs once on a healthy Postgres; api, worker and webhooks start after it succeeded and on
    a healthy Redis; every waited-for health check exists; nothing always-on waits for a profiled service."""
    services = doc["services"]
    problems = []
    if dependencies(services["migrate"]).get("postgres") != "service_healthy":
        problems.append("migrate must wait for postgres: service_healthy")
    if services["migrate"].get("restart", "no") != "no":
        problems.append("migrate is one-shot: restart: 'no'")
    for name in ("api", "worker", "webhooks"):
        deps = dependencies(services[name])
        if deps.get("migrate") != "service_completed_successfully" or deps.get("redis") != "service_healthy":
            problems.append(f"{name} must wait for migrate to complete successfully and for a healthy redis")
    for name, spec in services.items():
        for dep, condition in dependencies(spec).items():
            if dep not in services:
                problems.append(f"{name} depends on unknown service {dep}")
            elif condition == "service_healthy" and not health_enabled(services[dep]):
                problems.append(f"{name} waits for {dep} to be healthy, but {dep} has no health check")
            elif services[dep].get("profiles") and not spec.get("profiles"):
                problems.append(f"{name} (always on) depends on {dep}, which only runs with a profile")
    if problems:
        raise ComposeError("\n".join(problems))


def seconds(duration: str) -> float:
    """A compose duration (``1m30s``, ``75s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    if not parts or "".join(a + u for a, u in parts) != duration:
        raise ComposeError(f"not a duration: {duration!r}")
    return sum(float(amount) * units[unit] for amount, unit in parts)


def check_lifecycle(doc: dict[str, Any]) -> None:
    """Workers scale (no fixed name or port); each service's stop_grace_period outlasts its own drain, read
    from its settings, so Docker's SIGKILL never cuts a drain short."""
    problems = []
    services = inferq_services(doc)
    for name, spec in services.items():
        if "container_name" in spec:
            problems.append(f"{name}: container_name prevents --scale")
    if "ports" in services.get("worker", {}):
        problems.append("worker: published ports prevent --scale worker=N (and workers serve no HTTP)")
    drains = {
        "api": lambda s: s.api.shutdown_timeout_s + 5,  # the supervisor's join of its servers
        "worker": lambda s: s.queue.shutdown_grace_s,
        "webhooks": lambda s: s.jobs.webhook_timeout_s + 5,  # running deliveries' last attempt
    }
    for name, drain in drains.items():
        spec = services.get(name, {})
        needed = drain(settings_of(spec))
        grace = seconds(str(spec.get("stop_grace_period", "10s")))
        if grace <= needed:
            problems.append(f"{name}: stop_grace_period {grace:g}s must exceed its drain, {needed:g}s")
    if problems:
        raise ComposeError("\n".join(problems))


def check_api(doc: dict[str, Any]) -> None:
    """Two server processes with their metrics summed through a writable multiprocess directory."""
    spec = doc["services"]["api"]
    problems = []
    processes = int(flags(spec.get("command", [])).get("workers", "1"))
    if processes < 2:
        problems.append(f"api must run at least 2 processes, runs {processes}")
    directory = environment(spec).get("PROMETHEUS_MULTIPROC_DIR", "")
    mounted = [entry.split(":")[0] for entry in spec.get("tmpfs", [])]
    mounted += [entry.split(":")[1] for entry in spec.get("volumes", []) if ":" in entry]
    if not directory or directory not in mounted:
        problems.append(f"api: PROMETHEUS_MULTIPROC_DIR ({directory or 'unset'}) must be a tmpfs or volume")
    if problems:
        raise ComposeError("\n".join(problems))


@functools.cache
def app_paths() -> frozenset[str]:
    """Every route path of the API app (built, not started: nothing is opened)."""
    from inferq.api import create_app

    return frozenset(route.path for route in create_app(Settings()).routes)


def check_health(doc: dict[str, Any]) -> None:
    """Only ``serve`` keeps the image's HTTP health check; any HTTP check probes a route the API has."""
    problems = []
    for name, spec in inferq_services(doc).items():
        serves = spec.get("command", [None])[0] == "serve"
        check = spec.get("healthcheck") or {}
        if not serves and not check.get("disable"):
            problems.append(f"{name} serves no API (at most /metrics): it must disable the image's health check")
        if serves and check.get("disable"):
            problems.append(f"{name} serves the API: keep its health check")
    for name, spec in doc["services"].items():
        probe = " ".join(spec.get("healthcheck", {}).get("test", []))
        for path in re.findall(r"https?://[^/\s'\"]+(/[^\s'\"]*)", probe):
            if name in inferq_services(doc) and path not in app_paths():
                problems.append(f"{name}: its health check probes {path}, which the API does not serve")
    if problems:
        raise ComposeError("\n".join(problems))


def check_observability(doc: dict[str, Any]) -> None:
    """Prometheus and Grafana only with the profile; every file they mount exists in the repository."""
    problems = []
    for name in OBSERVABILITY:
        spec = doc["services"].get(name, {})
        if spec.get("profiles") != ["observability"]:
            problems.append(f"{name} must run only with the observability profile")
        for mount in spec.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith(".") and not (ROOT / source).exists():
                problems.append(f"{name} mounts {source}, which does not exist")
    if problems:
        raise ComposeError("\n".join(problems))


def check_all(text: str, env: Mapping[str, str] = ENV) -> None:
    raw, doc = load(text, env)
    check_schema(raw)
    check_schema(doc)
    check_references(raw)
    for checker in (check_commands, check_settings, check_redis, check_postgres, check_order, check_lifecycle):
        checker(doc)
    for checker in (check_api, check_health, check_observability):
        checker(doc)


# --- Prometheus and Grafana ---------------------------------------------------------------------------------


def mount_target(doc: dict[str, Any], service: str, source: str) -> str:
    for mount in doc["services"][service].get("volumes", []):
        parts = mount.split(":")
        if parts[0] == source:
            return parts[1]
    raise ComposeError(f"{service} does not mount {source}")


def check_prometheus(config: dict[str, Any], doc: dict[str, Any]) -> None:
    """Prometheus scrapes every service that serves metrics (api, worker, webhooks), each on the port its
    settings say and at its metrics route; the worker and webhooks processes listen beyond localhost."""
    problems = []
    jobs = config.get("scrape_configs") or []
    if not jobs:
        problems.append("no scrape_configs")
    scraped = set()
    for job in jobs:
        name, path = job.get("job_name"), job.get("metrics_path", "/metrics")
        targets = [(n, sd.get("port")) for sd in job.get("dns_sd_configs", []) for n in sd.get("names", [])]
        for static in job.get("static_configs", []):
            targets += [(t.partition(":")[0], int(t.partition(":")[2] or 80)) for t in static.get("targets", [])]
        services = {host for host, _ in targets}
        if len(services) != 1 or not services <= set(METRICS_PORTS):
            problems.append(f"{name}: must scrape one of {sorted(METRICS_PORTS)} (one job each), scrapes {targets}")
            continue
        (service,) = services
        scraped.add(service)
        settings = settings_of(doc["services"][service])
        port = METRICS_PORTS[service](settings)
        if any(target_port != port for _, target_port in targets):
            problems.append(f"{name}: must scrape {service}:{port}, scrapes {targets}")
        if service == "api" and path not in app_paths():
            problems.append(f"{name}: the API serves no {path}")
        if service != "api" and path != "/metrics":
            problems.append(f"{name}: {service} serves its metrics at /metrics, not {path}")
        if service != "api" and settings.host != "0.0.0.0":
            problems.append(f"{name}: {service} listens on {settings.host}: set INFERQ_HOST 0.0.0.0 (network only)")
    problems += [f"nothing scrapes {service}" for service in sorted(set(METRICS_PORTS) - scraped)]
    if problems:
        raise ComposeError("\n".join(problems))


def check_grafana(datasources: dict[str, Any], providers: dict[str, Any], dashboard: dict[str, Any],
                  doc: dict[str, Any]) -> None:  # fmt: skip
    """The datasource reaches the prometheus service; the provider loads the directory the dashboard is
    mounted in; every panel and query uses the provisioned datasource."""
    problems = []
    uids = set()
    for source in datasources.get("datasources", []):
        uids.add(source.get("uid"))
        url = urlsplit(source.get("url", ""))
        if source.get("type") != "prometheus" or (url.hostname, url.port) != ("prometheus", 9090):
            problems.append(f"datasource {source.get('name')} must be prometheus at http://prometheus:9090")
    mounted = PurePosixPath(mount_target(doc, "grafana", "./ops/grafana/inferq.json")).parent
    paths = [PurePosixPath(p["options"]["path"]) for p in providers.get("providers", [])]
    if mounted not in paths:
        problems.append(f"no dashboard provider reads {mounted} (providers read {paths})")
    for panel in dashboard["panels"]:
        for ref in [panel.get("datasource"), *(t.get("datasource") for t in panel.get("targets", []))]:
            if ref is not None and ref.get("uid") not in uids:
                problems.append(f"panel {panel.get('title')!r} uses datasource {ref}, not one of {uids}")
    if problems:
        raise ComposeError("\n".join(problems))


@functools.cache
def exposed_metrics() -> dict[str, frozenset[str]]:
    """The sample names and labels inferq's ``/metrics`` endpoints render: the API's (each instrument used
    once, one partition's streams and the jobs table read: those gauges are readings, not instruments), the
    worker supervisor's (a batch of every kind observed, its own gauges) and ``inferq tasks``' (an attempt)."""
    metrics = Metrics()
    metrics.count_request(route="/v1/models", method="GET", status=200, seconds=0.01)
    metrics.count_prediction(model="iris", version=1, outcome="succeeded")
    metrics.observe_prediction(model="iris", version=1, seconds=0.002)
    metrics.held.inc()
    metrics.count_shadow(model="iris", version=2, outcome="sent")
    metrics.count_cache(model="iris", version=1, hit=True)
    metrics.count_fallback(model="iris", from_version=2, to_version=1, reason="not_ready")
    lane = LaneBacklog(lane="interactive", backlog=2, pending=1, oldest_age_s=0.5)
    part = PartitionBacklog(
        partition="iris@1", backlog=2, pending=1, consumers=0, oldest_age_s=0.5, dead_letters=0, lanes=(lane,)
    )
    with mock.patch.dict(os.environ):
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # this app's registry, not a directory's
        text = metrics.render(Backlog(total=3, partitions=(part,)), {"queued": 1}).decode()
    text += _worker_text() + TaskMetrics().render().decode()
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in found.items()}


class _Supervised:
    def __init__(self) -> None:
        self.pids = [1, 2]
        self.restarts = 0


def _worker_text() -> str:
    """What a worker supervisor renders after its children settled one request, one job chunk, one dead letter."""
    worker = WorkerMetrics(CollectorRegistry())
    timings = Timings(queue_ms=1.0, inference_ms=1.0, batch_rows=1)
    done = InferResult(id="r", tenant="t", model="iris", version=1, status="succeeded", timings=timings)
    worker.observe(
        Partition.of(Names("inferq"), model="iris", version=1),
        [
            Outcome(Entry(lane="interactive", id="1-0", message=b""), done),
            Outcome(Entry(lane="bulk", id="2-0", message=b""), None, job=JobChunkRef(job_id="j", seq=0), rows=256),
            Outcome(Entry(lane="interactive", id="3-0", message=b""), None, dead_reason="undecodable message: x"),
        ],
    )
    own = CollectorRegistry(auto_describe=False)
    own.register(SupervisorGauges(_Supervised()))
    tasks = TaskMetrics()
    tasks.count_attempt(AttemptOutcome(status=204, ok=True), retry_in_s=None)
    return (generate_latest(worker.registry) + generate_latest(own) + tasks.render()).decode()


def query_problems(expr: str, known: Mapping[str, frozenset[str]]) -> list[str]:
    """A dashboard query must parse as PromQL and use only metrics inferq exposes, with their labels."""
    try:
        parsed = promql_parser.parse(GRAFANA_VARIABLES.sub("5m", expr))
    except Exception as exc:  # the parser raises plain exceptions with its message
        return [f"{expr!r} is not PromQL: {exc}"]
    names: set[str] = set()
    labels: set[str] = set()

    def visit(node: Any) -> bool:
        kind = type(node).__name__
        if kind == "VectorSelector":
            names.add(node.name)
            labels.update(m.name for m in node.matchers.matchers)
        elif kind == "AggregateExpr" and node.modifier is not None:
            labels.update(node.modifier.labels)
        elif kind == "BinaryExpr" and node.modifier is not None and node.modifier.matching is not None:
            labels.update(node.modifier.matching.labels)
        return True

    promql_parser.walk(parsed, visit)
    found = [f"{expr!r} queries {name}, which inferq does not expose" for name in sorted(names - known.keys())]
    allowed = set().union(*(known.get(name, frozenset()) for name in names)) | {"__name__", "instance", "job"}
    found += [f"{expr!r} uses label {label!r}, which its metrics do not have" for label in sorted(labels - allowed)]
    return found


def check_dashboard(dashboard: dict[str, Any], known: Mapping[str, frozenset[str]]) -> None:
    problems = []
    if not dashboard.get("uid") or not dashboard.get("title"):
        problems.append("the dashboard needs a uid and a title (provisioning keys on the uid)")
    ids = [panel.get("id") for panel in dashboard.get("panels", [])]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append(f"panel ids must be present and unique: {ids}")
    queries = [t["expr"] for p in dashboard.get("panels", []) for t in p.get("targets", [])]
    if not queries:
        problems.append("the dashboard has no queries")
    for expr in queries:
        problems += query_problems(expr, known)
    if problems:
        raise ComposeError("\n".join(problems))
