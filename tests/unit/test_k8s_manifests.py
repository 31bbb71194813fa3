"""ops/k8s checked offline: the real files pass every checker (tests/unit/k8s_checks.py), and mutated
copies — a typo'd field, a wrong selector, a grace period shorter than the drain, an unknown INFERQ_
variable, a missing secret key, … — are rejected by the same checkers, in their words."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from .k8s_checks import (
    CHECKERS,
    KEDA_SCHEMA,
    Bundle,
    Obj,
    command_problems,
    container_of,
    containers,
    env_problems,
    grace_problems,
    kustomization_problems,
    load,
    metrics_problems,
    parse_command,
    pod_of,
    probe_problems,
    scaling_problems,
    schema_problems,
    security_problems,
    selector_problems,
)

# --- the real files ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load()


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
def test_the_manifests_pass(bundle: Bundle, checker: Callable[[Bundle], list[str]]) -> None:
    assert checker(bundle) == []


def test_the_keda_schema_is_a_closed_json_schema() -> None:
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    objects = [d for d in schema["$defs"].values() if d.get("type") == "object" and "properties" in d]
    assert objects
    assert all(d["additionalProperties"] is False for d in objects)


def test_the_issue_asks_for_every_piece(bundle: Bundle) -> None:
    present = {(o.kind, o.name) for o in bundle.objs if o.kind != "Kustomization"}
    assert present == {
        ("Namespace", "inferq"),
        ("ConfigMap", "inferq-config"),
        ("Secret", "inferq-secrets"),
        ("Job", "inferq-migrate"),
        ("Deployment", "inferq-api"),
        ("Service", "inferq-api"),
        ("PodDisruptionBudget", "inferq-api"),
        ("Deployment", "inferq-worker"),
        ("PodDisruptionBudget", "inferq-worker"),
        ("ScaledObject", "inferq-worker"),
        ("Deployment", "inferq-tasks"),
        ("Deployment", "inferq-worker-wine-2"),
        ("PodDisruptionBudget", "inferq-worker-wine-2"),
        ("ScaledObject", "inferq-worker-wine-2"),
        ("TriggerAuthentication", "inferq-redis"),
    }
    api, worker = bundle.find("PodDisruptionBudget", "inferq-api"), bundle.find("PodDisruptionBudget", "inferq-worker")
    assert api is not None
    assert api.doc["spec"]["minAvailable"] == 1
    assert worker is not None
    assert worker.doc["spec"]["maxUnavailable"] == 1
    pool = bundle.find("ScaledObject", "inferq-worker-wine-2")
    assert pool is not None
    assert pool.example
    assert pool.doc["spec"]["minReplicaCount"] == 0


def test_the_commands_are_the_documented_ones(bundle: Bundle) -> None:
    commands = {obj.name: vars(parse_command(c)) for obj, _, c in containers(bundle)}
    assert commands["inferq-api"] == {"command": "serve", "host": None, "port": None, "workers": 2}
    assert commands["inferq-worker"] == {"command": "worker", "all": True, "models": None, "processes": 1}
    assert commands["inferq-worker-wine-2"]["models"] == "wine@2"
    assert commands["inferq-tasks"] == {"command": "tasks"}
    assert commands["inferq-migrate"] == {"command": "migrate"}


# --- bad input: mutated copies are rejected by the same checkers --------------------------------------


def mutate(bundle: Bundle, kind: str, name: str, change: Callable[[dict[str, Any]], object]) -> Bundle:
    objs = []
    for obj in bundle.objs:
        doc = copy.deepcopy(obj.doc)
        if obj.kind == kind and obj.name == name:
            change(doc)
        objs.append(Obj(obj.file, doc))
    return dataclasses.replace(bundle, objs=tuple(objs))


def set_env(doc: dict[str, Any], name: str, value: str) -> None:
    env = [e for e in container_of(doc)["env"] if e["name"] != name]
    container_of(doc)["env"] = [*env, {"name": name, "value": value}]


def drop_env(doc: dict[str, Any], name: str) -> None:
    container_of(doc)["env"] = [e for e in container_of(doc)["env"] if e["name"] != name]


def first_trigger(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["triggers"][0]["metadata"]


# One case per two lines, a table: (kind, name, the change, the checker that must catch it, in its words).
# fmt: off
BAD = [
    # typo'd or misplaced fields: the schemas
    ("Deployment", "inferq-api", lambda d: container_of(d).update(imagePullPolicyy="Always"), schema_problems,
     "'imagePullPolicyy' was unexpected"),
    ("Deployment", "inferq-worker", lambda d: pod_of(d).update(terminationGracePeriodSecond=75), schema_problems,
     "'terminationGracePeriodSecond' was unexpected"),
    ("PodDisruptionBudget", "inferq-api", lambda d: d["spec"].update(minAvailible=1), schema_problems,
     "'minAvailible' was unexpected"),
    ("ScaledObject", "inferq-worker", lambda d: d["spec"].update(minReplicasCount=1), schema_problems,
     "'minReplicasCount' was unexpected"),
    ("ScaledObject", "inferq-worker", lambda d: first_trigger(d).update(valuelocation="total"), schema_problems,
     "'valuelocation' was unexpected"),
    ("ScaledObject", "inferq-worker", lambda d: first_trigger(d).update(targetValue=200), schema_problems,
     "200 is not of type 'string'"),
    ("ScaledObject", "inferq-worker", lambda d: d["spec"]["triggers"][0].update(type="metric-api"), schema_problems,
     "'metric-api' is not one of"),
    ("ScaledObject", "inferq-worker-wine-2", lambda d: first_trigger(d).pop("activationLagCount"), schema_problems,
     "'activationLagCount' is a dependency of 'lagCount'"),
    ("TriggerAuthentication", "inferq-redis", lambda d: d["spec"].update(secretTargetRefs=[]), schema_problems,
     "'secretTargetRefs' was unexpected"),
    # commands
    ("Deployment", "inferq-worker", lambda d: container_of(d).update(args=["worker", "--alll"]), command_problems,
     "one of the arguments --all --models is required"),
    ("Deployment", "inferq-api", lambda d: container_of(d).update(args=["serve", "--workers", "two"]),
     command_problems, "invalid int value: 'two'"),
    ("Deployment", "inferq-tasks", lambda d: container_of(d).update(command=["python", "-m", "inferq"]),
     command_problems, "not the inferq entrypoint"),
    # settings and secrets
    ("ConfigMap", "inferq-config", lambda d: d["data"].update(INFERQ_REDIS_ULR="redis://r:6379"), env_problems,
     "unknown setting INFERQ_REDIS_ULR"),
    ("Deployment", "inferq-worker", lambda d: set_env(d, "INFERQ_SHUTDOWN_GRACE", "60"), env_problems,
     "unknown setting INFERQ_SHUTDOWN_GRACE"),
    ("Deployment", "inferq-api", lambda d: set_env(d, "INFERQ_PORT", "eighty"), env_problems, "invalid INFERQ_PORT"),
    ("Deployment", "inferq-api", lambda d: set_env(d, "REDIS_URL", "redis://r"), env_problems,
     "REDIS_URL is not an inferq setting"),
    ("Deployment", "inferq-api", lambda d: container_of(d)["env"][0]["valueFrom"]["secretKeyRef"].update(
        key="databse-url"), env_problems, "has no key 'databse-url'"),
    ("Deployment", "inferq-tasks", lambda d: container_of(d)["env"][1]["valueFrom"]["secretKeyRef"].update(
        optional=True), env_problems, "optional secret key"),
    ("TriggerAuthentication", "inferq-redis", lambda d: d["spec"]["secretTargetRef"][0].update(key="redis-pass"),
     env_problems, "has no key 'redis-pass'"),
    ("Deployment", "inferq-worker", lambda d: drop_env(d, "INFERQ_REDIS_URL"), env_problems,
     "INFERQ_REDIS_URL must come from a Secret"),
    ("Deployment", "inferq-worker", lambda d: container_of(d)["envFrom"][0]["configMapRef"].update(name="inferq"),
     env_problems, "envFrom names no ConfigMap"),
    # selectors and ports
    ("Service", "inferq-api", lambda d: d["spec"]["selector"].update({"app.kubernetes.io/component": "apii"}),
     selector_problems, "matches no Deployment"),
    ("Service", "inferq-api", lambda d: d["spec"]["ports"][0].update(targetPort="htp"), selector_problems,
     "targetPort 'htp'"),
    ("PodDisruptionBudget", "inferq-worker", lambda d: d["spec"]["selector"]["matchLabels"].update(
        {"app.kubernetes.io/component": "workers"}), selector_problems, "not exactly one Deployment"),
    ("PodDisruptionBudget", "inferq-api", lambda d: d["spec"].update(minAvailable=2), selector_problems,
     "a node drain would never finish"),
    ("Deployment", "inferq-worker-wine-2", lambda d: d["spec"]["template"]["metadata"]["labels"].update(
        {"app.kubernetes.io/component": "worker"}), selector_problems, "its selector matches the pods of"),
    # probes
    ("Deployment", "inferq-api", lambda d: container_of(d)["readinessProbe"]["httpGet"].update(path="/healthz"),
     probe_problems, "/healthz is not a GET route"),
    ("Deployment", "inferq-api", lambda d: container_of(d)["livenessProbe"]["httpGet"].update(port="metrics"),
     probe_problems, "livenessProbe must be an httpGet on a declared port"),
    ("Deployment", "inferq-api", lambda d: set_env(d, "INFERQ_PORT", "8080"), probe_problems,
     "serve listens on 0.0.0.0:8080"),
    ("Deployment", "inferq-api", lambda d: drop_env(d, "INFERQ_HOST"), probe_problems, "serve listens on 127.0.0.1"),
    # drain
    ("Deployment", "inferq-worker", lambda d: pod_of(d).update(terminationGracePeriodSeconds=45), grace_problems,
     "terminationGracePeriodSeconds 45 must exceed the 60 s drain"),
    ("Deployment", "inferq-worker", lambda d: set_env(d, "INFERQ_SHUTDOWN_GRACE_S", "90"), grace_problems,
     "terminationGracePeriodSeconds 75 must exceed the 90 s drain"),
    ("Deployment", "inferq-worker", lambda d: drop_env(d, "INFERQ_SHUTDOWN_GRACE_S"), grace_problems,
     "set INFERQ_SHUTDOWN_GRACE_S explicitly"),
    ("Deployment", "inferq-api", lambda d: set_env(d, "INFERQ_SHUTDOWN_TIMEOUT_S", "25"), grace_problems,
     "must exceed the 35 s drain"),
    ("Job", "inferq-migrate", lambda d: pod_of(d).pop("shareProcessNamespace"), grace_problems,
     "shareProcessNamespace"),
    ("Deployment", "inferq-tasks", lambda d: pod_of(d).pop("terminationGracePeriodSeconds"), grace_problems,
     "terminationGracePeriodSeconds None must exceed the 20 s drain"),
    # scaling
    ("ScaledObject", "inferq-worker", lambda d: d["spec"]["scaleTargetRef"].update(name="inferq-workers"),
     scaling_problems, "scaleTargetRef names no Deployment in its namespace"),
    ("ScaledObject", "inferq-worker", lambda d: d["spec"].pop("minReplicaCount"), scaling_problems,
     "the default pool must keep a replica"),
    ("Deployment", "inferq-worker", lambda d: d["spec"].update(replicas=3), scaling_problems, "KEDA owns the replica"),
    ("ScaledObject", "inferq-worker", lambda d: first_trigger(d).update(
        url="http://inferq-api.inferq.svc:8000/health/backlogs"), scaling_problems,
     "/health/backlogs is not a GET route"),
    ("ScaledObject", "inferq-worker", lambda d: first_trigger(d).update(
        url="http://inferq.inferq.svc:8000/health/backlog"), scaling_problems, "is not <service>.inferq.svc"),
    ("ScaledObject", "inferq-worker", lambda d: first_trigger(d).update(
        url="http://inferq-api.inferq.svc:80/health/backlog"), scaling_problems, "port 80 is not a port"),
    ("ScaledObject", "inferq-worker", lambda d: first_trigger(d).update(valueLocation="partitions"), scaling_problems,
     "valueLocation 'partitions' is not one of the backlog answer's numbers"),
    ("ScaledObject", "inferq-worker", lambda d: first_trigger(d).update(targetValue="1000"), scaling_problems,
     "< INFERQ_ADMISSION_LIMIT (1000)"),
    ("ScaledObject", "inferq-worker", lambda d: first_trigger(d).update(targetValue="64"), scaling_problems,
     ">= 2 x INFERQ_MAX_BATCH (64"),
    ("ScaledObject", "inferq-worker-wine-2", lambda d: first_trigger(d).update(stream="inferq:{wine@3}:bulk"),
     scaling_problems, "stream 'inferq:{wine@3}:bulk' is none of the pool's"),
    ("ScaledObject", "inferq-worker-wine-2", lambda d: first_trigger(d).update(stream="inferq:wine@2:bulk"),
     scaling_problems, "is none of the pool's"),
    ("ScaledObject", "inferq-worker-wine-2", lambda d: first_trigger(d).update(consumerGroup="worker"),
     scaling_problems, "consumerGroup 'worker' is not the workers' group"),
    ("Deployment", "inferq-worker-wine-2", lambda d: container_of(d).update(args=["worker", "--models", "wine"]),
     scaling_problems, "must pin versions"),
    ("ScaledObject", "inferq-worker-wine-2", lambda d: d["spec"]["triggers"][0]["authenticationRef"].update(
        name="redis"), scaling_problems, "names no TriggerAuthentication"),
    # security
    ("Deployment", "inferq-api", lambda d: container_of(d)["securityContext"].update(readOnlyRootFilesystem=False),
     security_problems, "readOnlyRootFilesystem true"),
    ("Deployment", "inferq-worker", lambda d: pod_of(d).pop("enableServiceLinks"), security_problems,
     "enableServiceLinks"),
    ("Deployment", "inferq-tasks", lambda d: container_of(d)["securityContext"]["capabilities"].update(drop=[]),
     security_problems, "drop ALL"),
    ("Deployment", "inferq-worker", lambda d: set_env(d, "INFERQ_MODEL_ROOT", "/models"), security_problems,
     "/models is written by inferq but on the read-only root"),
    ("Job", "inferq-migrate", lambda d: container_of(d).update(volumeMounts=[]), security_problems,
     "/tmp is written by inferq"),
    # metrics
    ("Deployment", "inferq-worker", lambda d: drop_env(d, "INFERQ_HOST"), metrics_problems,
     "worker listens on 127.0.0.1: set INFERQ_HOST 0.0.0.0"),
    ("Deployment", "inferq-worker", lambda d: set_env(d, "INFERQ_WORKER_METRICS_PORT", "9200"), metrics_problems,
     "prometheus.io/port '9101', but worker serves /metrics on 9200"),
    ("Deployment", "inferq-worker", lambda d: set_env(d, "INFERQ_WORKER_METRICS_PORT", "0"), metrics_problems,
     "its metrics are off (port 0)"),
    ("Deployment", "inferq-worker-wine-2", lambda d: container_of(d).pop("ports"), metrics_problems,
     "/metrics port 9101 is not a declared containerPort []"),
    ("Deployment", "inferq-tasks", lambda d: d["spec"]["template"]["metadata"].pop("annotations"), metrics_problems,
     'annotate the pod prometheus.io/scrape "true"'),
    ("Deployment", "inferq-tasks", lambda d: set_env(d, "INFERQ_TASKS_METRICS_PORT", "9101"), metrics_problems,
     "but tasks serves /metrics on 9101"),
    ("Deployment", "inferq-api", lambda d: d["spec"]["template"]["metadata"]["annotations"].update(
        {"prometheus.io/path": "/stats"}), metrics_problems, "metrics are at /metrics"),
    # kustomization
    ("Kustomization", "kustomization.yaml", lambda d: d["resources"].remove("tasks.yaml"), kustomization_problems,
     "does not list tasks.yaml"),
    ("Kustomization", "kustomization.yaml", lambda d: d["resources"].append("worker-pool.example.yaml"),
     kustomization_problems, "lists worker-pool.example.yaml, which is an example"),
    ("Kustomization", "kustomization.yaml", lambda d: d["images"][0].update(newTag="0.2.0"), kustomization_problems,
     "image inferq:0.1.0 disagrees"),
    ("Kustomization", "kustomization.yaml", lambda d: d.update(resource=[]), kustomization_problems,
     "unknown key 'resource'"),
    ("Deployment", "inferq-tasks", lambda d: d["metadata"].update(namespace="default"), kustomization_problems,
     "namespace 'default', not 'inferq'"),
]
# fmt: on


@pytest.mark.parametrize(("kind", "name", "change", "checker", "expected"), BAD, ids=[
    f"{i:02d}-{checker.__name__}" for i, (_, _, _, checker, _) in enumerate(BAD)
])  # fmt: skip
def test_a_broken_copy_is_rejected(
    bundle: Bundle,
    kind: str,
    name: str,
    change: Callable[[dict[str, Any]], object],
    checker: Callable[[Bundle], list[str]],
    expected: str,
) -> None:
    assert bundle.find(kind, name) is not None, "the mutation must hit a real object"
    problems = checker(mutate(bundle, kind, name, change))
    assert any(expected in p for p in problems), problems


def test_the_kustomization_sees_a_new_file(bundle: Bundle) -> None:
    with_extra = dataclasses.replace(bundle, files=bundle.files | {"ingress.yaml"})
    assert kustomization_problems(with_extra) == ["kustomization.yaml does not list ingress.yaml"]
