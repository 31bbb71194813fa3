"""docker-compose.yml and the observability files, checked offline (no Docker engine here): the real
files pass every checker in tests/unit/compose_checks.py, and broken copies are rejected in its words."""

from __future__ import annotations

import copy
import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from .compose_checks import (
    COMMANDS,
    COMPOSE,
    DASHBOARD,
    ENV,
    GRAFANA,
    HINT,
    PROMETHEUS,
    STREAM_GAUGES,
    ComposeError,
    check_all,
    check_api,
    check_commands,
    check_dashboard,
    check_grafana,
    check_health,
    check_lifecycle,
    check_observability,
    check_order,
    check_postgres,
    check_prometheus,
    check_redis,
    check_references,
    check_schema,
    check_settings,
    compose_schema,
    environment,
    exposed_metrics,
    flags,
    interpolate,
    load,
    mount_target,
    settings_of,
)

# --- the real files -----------------------------------------------------------------------------------------


def compose_text() -> str:
    return COMPOSE.read_text()


def test_the_compose_file_passes_every_check() -> None:
    check_all(compose_text())


def test_the_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    raw, doc = load(compose_text())
    check_schema(raw)
    check_schema(doc)
    assert "$defs" in compose_schema()  # the vendored schema is the current (2020-12) compose-spec


def test_a_missing_secret_stops_compose_before_anything_starts() -> None:
    for name in ENV:
        with pytest.raises(ComposeError, match=f"required variable {name} is missing"):
            load(compose_text(), {k: v for k, v in ENV.items() if k != name})
    with pytest.raises(ComposeError, match="POSTGRES_PASSWORD is missing"):
        load(compose_text(), {**ENV, "POSTGRES_PASSWORD": ""})  # `:?` refuses an empty value too


def test_the_secrets_reach_the_services_that_need_them() -> None:
    _, doc = load(compose_text())
    services = doc["services"]
    assert environment(services["postgres"])["POSTGRES_PASSWORD"] == "pg-secret"
    assert environment(services["redis"])["REDISCLI_AUTH"] == "redis-secret"
    assert flags(services["redis"]["command"])["requirepass"] == "redis-secret"
    for name in COMMANDS:
        settings = settings_of(services[name])
        assert urlsplit(settings.services.database_url or "").password == "pg-secret"
        assert urlsplit(settings.services.redis_url or "").password == "redis-secret"


def test_interpolation_follows_compose() -> None:
    env = {"SET": "v", "EMPTY": ""}
    cases = {
        "${SET}": "v", "${UNSET}": "", "$SET/x": "v/x", "$$SET": "$SET", "$${SET}": "${SET}",
        "${UNSET:-d}": "d", "${EMPTY:-d}": "d", "${EMPTY-d}": "", "${UNSET-d}": "d",
        "${SET:+alt}": "alt", "${EMPTY:+alt}": "", "${EMPTY+alt}": "alt", "${EMPTY?e}": "",
    }  # fmt: skip
    assert {text: interpolate(text, env) for text in cases} == cases
    for bad in ("${UNSET:?needed}", "${EMPTY:?needed}", "${UNSET?needed}"):
        with pytest.raises(ComposeError, match="missing"):
            interpolate(bad, env)
    with pytest.raises(ComposeError, match="invalid"):
        interpolate("${A:-${B}}", env)


def test_prometheus_scrapes_the_api() -> None:
    _, doc = load(compose_text())
    assert mount_target(doc, "prometheus", "./ops/prometheus/prometheus.yml") == "/etc/prometheus/prometheus.yml"
    check_prometheus(yaml.safe_load(PROMETHEUS.read_text()), doc)


def grafana_files() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    provisioning = GRAFANA / "provisioning"
    return (
        yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text()),
        yaml.safe_load((provisioning / "dashboards" / "inferq.yml").read_text()),
        json.loads(DASHBOARD.read_text()),
    )


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    _, doc = load(compose_text())
    assert mount_target(doc, "grafana", "./ops/grafana/provisioning") == "/etc/grafana/provisioning"
    check_grafana(*grafana_files(), doc)


def test_the_dashboard_queries_only_what_the_api_exposes() -> None:
    check_dashboard(json.loads(DASHBOARD.read_text()), exposed_metrics())


def test_the_dashboard_shows_every_api_metric_and_stream_gauge() -> None:
    dashboard = json.dumps(json.loads(DASHBOARD.read_text()))
    wanted = {"inferq_api_requests_total", "inferq_api_request_duration_seconds_bucket",
              "inferq_api_predictions_total", "inferq_api_held_requests", *STREAM_GAUGES}  # fmt: skip
    assert {name for name in wanted if name not in dashboard} == set()


# The worker supervisor's, `inferq tasks`' and the API's jobs gauge: what docs/metrics.md lists, name → labels.
PROCESS_METRICS = {
    "inferq_worker_results_total": {"model", "version", "lane", "outcome"},
    "inferq_worker_queue_wait_seconds_bucket": {"model", "version", "lane", "le"},
    "inferq_worker_inference_seconds_bucket": {"model", "version", "le"},
    "inferq_worker_batch_rows_bucket": {"model", "version", "le"},
    "inferq_worker_job_chunk_rows_bucket": {"model", "version", "le"},
    "inferq_worker_dead_letters_total": {"partition", "reason"},
    "inferq_worker_processes": set(),
    "inferq_worker_restarts_total": set(),
    "inferq_webhook_attempts_total": {"outcome"},
    "inferq_webhook_attempt_duration_seconds_bucket": {"le"},
    "inferq_jobs": {"status"},
}


def test_inferq_exposes_the_process_metrics_the_dashboard_expects() -> None:
    exposed = exposed_metrics()
    assert {name: exposed.get(name) for name in PROCESS_METRICS} == PROCESS_METRICS


def test_the_dashboard_shows_the_workers_webhooks_and_jobs() -> None:
    dashboard = json.dumps(json.loads(DASHBOARD.read_text()))
    assert {name for name in PROCESS_METRICS if name.removesuffix("_bucket") not in dashboard} == set()


def test_the_api_exposes_the_stream_gauges_the_dashboard_expects() -> None:
    exposed = exposed_metrics()
    assert {name: exposed.get(name) for name in STREAM_GAUGES} == STREAM_GAUGES


def test_the_dashboard_flags_backlog_without_workers() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    flagged = [
        p for p in panels
        for t in p.get("targets", [])
        if "inferq_stream_backlog" in t["expr"] and "inferq_stream_consumers" in t["expr"] and "== 0" in t["expr"]
    ]  # fmt: skip
    assert {p["type"] for p in flagged} == {"stat", "table"}
    stat = next(p for p in flagged if p["type"] == "stat")
    assert stat["fieldConfig"]["defaults"]["thresholds"]["steps"][-1] == {"color": "red", "value": 1}


# --- broken copies are rejected -----------------------------------------------------------------------------


def edited(change: Any) -> dict[str, Any]:
    """The interpolated compose file after ``change(doc)``."""
    _, doc = load(compose_text())
    doc = copy.deepcopy(doc)
    change(doc)
    return doc


def svc(doc: dict[str, Any], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = doc["services"][name]
    return spec


def test_the_schema_rejects_a_misspelt_key() -> None:
    doc = edited(lambda d: svc(d, "worker").update(stop_grace_perod="75s"))
    with pytest.raises(ComposeError, match="stop_grace_perod"):
        check_schema(doc)


def test_the_schema_rejects_a_wrong_type() -> None:
    doc = edited(lambda d: svc(d, "api").update(ports="8000:8000"))
    with pytest.raises(ComposeError, match="services/api/ports"):
        check_schema(doc)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        pytest.param("${POSTGRES_PASSWORD:?", "${POSTGRES_PASSWORD:-postgres", "secret POSTGRES_PASSWORD must be",
                     id="secret-with-default"),
        pytest.param(f"${{REDIS_PASSWORD:?set REDIS_PASSWORD {HINT}}}", "${REDIS_PASSWORD:?}",
                     "secret REDIS_PASSWORD must be", id="secret-without-message"),
        pytest.param("${POSTGRES_USER:-inferq}", "${POSTGRES_USER}", "has no default", id="bare-variable"),
        pytest.param(f"POSTGRES_PASSWORD: ${{POSTGRES_PASSWORD:?set POSTGRES_PASSWORD {HINT}}}",
                     "POSTGRES_PASSWORD: hunter2", "POSTGRES_PASSWORD is a literal", id="literal-secret"),
        pytest.param(f"redis://:${{REDIS_PASSWORD:?set REDIS_PASSWORD {HINT}}}@",
                     "redis://default:hunter2@", "literal password in its URL", id="literal-url-password"),
        pytest.param("test -n", "true ||", "grafana must refuse to start", id="grafana-unguarded"),
    ],
)  # fmt: skip
def test_the_reference_check_rejects_unsafe_secrets(old: str, new: str, problem: str) -> None:
    text = compose_text()
    assert old in text
    with pytest.raises(ComposeError, match=re.escape(problem)):
        check_references(yaml.safe_load(text.replace(old, new, 1)))


def _set_env(service: str, **values: str) -> Any:
    return lambda d: svc(d, service)["environment"].update(values)


def _pop(service: str, key: str) -> Any:
    return lambda d: svc(d, service).pop(key)


@pytest.mark.parametrize(
    ("checker", "change", "problem"),
    [
        (check_commands, lambda d: svc(d, "worker").update(command=["worker"]), "one of the arguments --all --models"),
        (check_commands, lambda d: svc(d, "api").update(command=["serve", "--wrokers", "2"]), "unrecognized arguments"),
        (check_commands, lambda d: svc(d, "webhooks").update(command=["migrate"]), "expected `inferq tasks`"),
        (check_commands, lambda d: svc(d, "api").update(command="serve --workers 2"), "must be a list"),
        (check_commands, lambda d: d["services"].update(extra={"build": "."}), "inferq services"),
        (check_settings, _set_env("worker", INFERQ_REDIS_ULR="redis://redis/0"), "unknown setting INFERQ_REDIS_ULR"),
        (check_settings, _set_env("api", INFERQ_SHUTDOWN_TIMEOUT_S="soon"), "invalid INFERQ_SHUTDOWN_TIMEOUT_S"),
        (check_settings, _set_env("webhooks", INFERQ_WEBHOOK_ALLOW_PRIVATE="true"), "development only"),
        (check_settings, _set_env("api", INFERQ_REDIS_URL="redis://127.0.0.1:6379/0"), "connect to the redis service"),
        (check_settings, lambda d: svc(d, "migrate")["environment"].pop("INFERQ_DATABASE_URL"), "postgres service"),
        (check_redis, lambda d: svc(d, "redis")["command"].__setitem__(-3, "allkeys-lru"), "noeviction"),
        (check_redis, lambda d: svc(d, "redis").update(command=["redis-server"]), "--appendonly yes"),
        (check_redis, lambda d: svc(d, "redis")["command"].__setitem__(4, "always"), "--appendfsync everysec"),
        (check_redis, lambda d: svc(d, "redis").update(image="redis:6.2"), "7.x image"),
        (check_redis, lambda d: svc(d, "redis").update(volumes=["/tmp/redis:/data"]), "named volume"),
        (check_redis, _pop("redis", "healthcheck"), "health check"),
        (check_postgres, lambda d: d.pop("volumes"), "named volume"),
        (check_postgres, _pop("postgres", "healthcheck"), "pg_isready"),
        (check_order, lambda d: svc(d, "migrate").update(depends_on=["postgres"]), "migrate must wait"),
        (check_order, lambda d: svc(d, "migrate").update(restart="on-failure"), "one-shot"),
        (check_order, lambda d: svc(d, "worker")["depends_on"].update(migrate={"condition": "service_started"}),
         "worker must wait for migrate"),
        (check_order, lambda d: svc(d, "redis").update(healthcheck={"disable": True}), "redis has no health check"),
        (check_order, lambda d: svc(d, "api").update(depends_on={"prometheus": {"condition": "service_started"}}),
         "only runs with a profile"),
        (check_lifecycle, lambda d: svc(d, "worker").update(container_name="inferq-worker"), "prevents --scale"),
        (check_lifecycle, lambda d: svc(d, "worker").update(ports=["9000:9000"]), "published ports"),
        (check_lifecycle, lambda d: svc(d, "worker").update(stop_grace_period="30s"), "worker: stop_grace_period 30s"),
        (check_lifecycle, _set_env("worker", INFERQ_SHUTDOWN_GRACE_S="120"), "exceed its drain, 120s"),
        (check_lifecycle, _pop("webhooks", "stop_grace_period"), "webhooks: stop_grace_period 10s"),
        (check_api, lambda d: svc(d, "api").update(command=["serve"]), "at least 2 processes"),
        (check_api, _pop("api", "tmpfs"), "PROMETHEUS_MULTIPROC_DIR"),
        (check_health, _pop("worker", "healthcheck"), "worker serves no API"),
        (check_health, lambda d: svc(d, "api").update(healthcheck={"disable": True}), "keep its health check"),
        (check_health, lambda d: svc(d, "api").update(
            healthcheck={"test": ["CMD", "python", "-c", "get('http://127.0.0.1:8000/healthz')"]}), "/healthz"),
        (check_observability, _pop("grafana", "profiles"), "grafana must run only with the observability"),
        (check_observability, lambda d: svc(d, "prometheus")["volumes"].__setitem__(
            0, "./ops/prometheus/prom.yml:/etc/prometheus/prometheus.yml:ro"), "does not exist"),
    ],
)  # fmt: skip
def test_each_check_rejects_a_broken_compose_file(checker: Any, change: Any, problem: str) -> None:
    doc = edited(change)
    with pytest.raises(ComposeError, match=re.escape(problem)):
        checker(doc)


def test_the_prometheus_check_rejects_a_wrong_target() -> None:
    _, doc = load(compose_text())
    config = yaml.safe_load(PROMETHEUS.read_text())
    wrong_port = copy.deepcopy(config)
    wrong_port["scrape_configs"][0]["dns_sd_configs"][0]["port"] = 9000
    wrong_path = copy.deepcopy(config)
    wrong_path["scrape_configs"][0]["metrics_path"] = "/prometheus"
    for broken, problem in ((wrong_port, "must scrape api:8000"), (wrong_path, "serves no /prometheus")):
        with pytest.raises(ComposeError, match=re.escape(problem)):
            check_prometheus(broken, doc)


def _job(config: dict[str, Any], name: str) -> dict[str, Any]:
    job: dict[str, Any] = next(j for j in config["scrape_configs"] if j["job_name"] == name)
    return job


@pytest.mark.parametrize(
    ("change", "compose_change", "problem"),
    [
        (lambda c: _job(c, "inferq-worker")["dns_sd_configs"][0].update(port=9100), None, "must scrape worker:9101"),
        (lambda c: _job(c, "inferq-tasks")["dns_sd_configs"][0].update(port=9101), None, "must scrape webhooks:9102"),
        (lambda c: c["scrape_configs"].remove(_job(c, "inferq-tasks")), None, "nothing scrapes webhooks"),
        (lambda c: _job(c, "inferq-worker").update(metrics_path="/stats"), None, "at /metrics, not /stats"),
        (lambda c: _job(c, "inferq-worker")["dns_sd_configs"][0]["names"].append("webhooks"), None, "one job each"),
        (lambda c: None, lambda d: svc(d, "worker")["environment"].pop("INFERQ_HOST"), "worker listens on 127.0.0.1"),
        (lambda c: None, _set_env("webhooks", INFERQ_TASKS_METRICS_PORT="9200"), "must scrape webhooks:9200"),
    ],
)  # fmt: skip
def test_the_prometheus_check_wants_every_metrics_port(change: Any, compose_change: Any, problem: str) -> None:
    config = copy.deepcopy(yaml.safe_load(PROMETHEUS.read_text()))
    change(config)
    doc = edited(compose_change or (lambda d: None))
    with pytest.raises(ComposeError, match=re.escape(problem)):
        check_prometheus(config, doc)


def test_the_grafana_check_rejects_a_disconnected_setup() -> None:
    _, doc = load(compose_text())
    datasources, providers, dashboard = grafana_files()
    wrong_uid = copy.deepcopy(datasources)
    wrong_uid["datasources"][0]["uid"] = "prom"
    wrong_path = copy.deepcopy(providers)
    wrong_path["providers"][0]["options"]["path"] = "/var/lib/grafana/dashboards"
    wrong_url = copy.deepcopy(datasources)
    wrong_url["datasources"][0]["url"] = "http://localhost:9090"
    cases = [
        ((wrong_uid, providers, dashboard), "uses datasource"),
        ((datasources, wrong_path, dashboard), "no dashboard provider reads /etc/grafana/dashboards"),
        ((wrong_url, providers, dashboard), "must be prometheus at http://prometheus:9090"),
    ]
    for files, problem in cases:
        with pytest.raises(ComposeError, match=re.escape(problem)):
            check_grafana(*files, doc)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("sum(rate(inferq_api_request_total[$__rate_interval]))", "queries inferq_api_request_total"),
        ("sum by (stauts) (rate(inferq_api_requests_total[5m]))", "label 'stauts'"),
        ('inferq_stream_backlog{model="iris"}', "label 'model'"),
        ("max by (partition) (inferq_stream_consumers) and on (lane) inferq_stream_dead_letters", "label 'lane'"),
        ("histogram_quantile(0.99, sum by (le) (rate(inferq_api_request_duration_seconds[5m]))",
         "is not PromQL"),
        ("histogram_quantile(0.99, sum by (le) (rate(inferq_api_request_duration_seconds[5m])))",
         "queries inferq_api_request_duration_seconds,"),
    ],
)  # fmt: skip
def test_the_dashboard_check_rejects_a_bad_query(expr: str, problem: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    dashboard["panels"][1]["targets"][0]["expr"] = expr
    with pytest.raises(ComposeError, match=re.escape(problem)):
        check_dashboard(dashboard, exposed_metrics())


def test_the_dashboard_check_rejects_duplicate_panel_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    dashboard["panels"][2]["id"] = dashboard["panels"][1]["id"]
    with pytest.raises(ComposeError, match="unique"):
        check_dashboard(dashboard, exposed_metrics())
