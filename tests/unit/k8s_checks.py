"""The checkers of ops/k8s (tests/unit/test_k8s_manifests.py runs them): API schemas, KEDA's objects,
and what inferq itself needs of its pods.

No cluster runs here, so every rule a cluster (or a first deploy) would teach us is a checker below:
Kubernetes objects against the API server's schemas with ``kubernetes-validate`` (strict: an unknown
field fails), KEDA's ``ScaledObject``/``TriggerAuthentication`` against ``data/keda.schema.json``, and
inferq's rules (commands parse with inferq's own CLI parser, ``INFERQ_*`` names are real settings, grace
periods outlast each process's drain, selectors/ports/routes exist, secrets are where they are looked
for, every process's ``/metrics`` is announced where it listens). Each checker returns its problems; the
bad-input tests feed it mutated copies of the real files.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import msgspec
import yaml

from inferq.api.app import create_app
from inferq.cli.main import build_parser
from inferq.contracts.models import ModelRef
from inferq.contracts.names import Names
from inferq.errors import InvalidInput
from inferq.settings import Settings, UnknownSetting
from inferq.streams.backlog import Backlog
from inferq.workers.tasks import SHUTDOWN_MARGIN_S

K8S = Path(__file__).resolve().parents[2] / "ops" / "k8s"
KEDA_SCHEMA = Path(__file__).parent / "data" / "keda.schema.json"
# The oldest Kubernetes the files target (the preStop `sleep` action is beta and on from 1.30) and the
# newest schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
ENTRYPOINT, CMD = ["inferq"], ["serve"]  # the image's
SECRET = "from-a-secret"  # what a value read from a Secret stands for when settings are parsed
ALLOWED_ENV = frozenset({"PROMETHEUS_MULTIPROC_DIR"})  # besides INFERQ_*: read by prometheus-client
SERVE_JOIN_MARGIN_S = 5  # inferq/cli/serve.py supervise(): children get shutdown_timeout_s + 5 s to exit
KUSTOMIZATION_KEYS = frozenset({"apiVersion", "kind", "namespace", "resources", "images"})
# Where each long-running command serves /metrics (docs/metrics.md): the API on its own port.
METRICS_PORTS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "serve": lambda args, s: args.port or s.port,
    "worker": lambda args, s: s.worker_metrics_port,
    "tasks": lambda args, s: s.tasks_metrics_port,
}


@dataclass(frozen=True)
class Obj:
    file: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind"))

    @property
    def name(self) -> str:
        return str(self.doc.get("metadata", {}).get("name") or self.file)

    @property
    def example(self) -> bool:
        return self.file.endswith(".example.yaml")

    def __str__(self) -> str:
        return f"{self.file} {self.kind}/{self.name}"


@dataclass(frozen=True)
class Bundle:
    """Every document of ops/k8s (kustomization.yaml and the examples included) and the file names."""

    objs: tuple[Obj, ...]
    files: frozenset[str]

    def of(self, kind: str) -> list[Obj]:
        return [o for o in self.objs if o.kind == kind]

    def find(self, kind: str, name: str) -> Obj | None:
        return next((o for o in self.of(kind) if o.name == name), None)


def load(directory: Path = K8S) -> Bundle:
    objs = [
        Obj(path.name, doc)
        for path in sorted(directory.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    return Bundle(tuple(objs), frozenset(p.name for p in directory.glob("*.y*ml")))


# --- what a pod runs ---------------------------------------------------------------------------------


def pod_of(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def container_of(doc: dict[str, Any]) -> dict[str, Any]:
    return pod_of(doc)["containers"][0]


def pods(bundle: Bundle) -> Iterator[tuple[Obj, dict[str, Any]]]:
    for obj in bundle.objs:
        if obj.kind in ("Deployment", "Job"):
            yield obj, obj.doc["spec"]["template"]


def containers(bundle: Bundle) -> Iterator[tuple[Obj, dict[str, Any], dict[str, Any]]]:
    for obj, template in pods(bundle):
        for container in template["spec"]["containers"]:
            yield obj, template["spec"], container


def parse_command(container: dict[str, Any]) -> argparse.Namespace:
    """The container's command line, as the image runs it, parsed by inferq's own parser (ValueError if not)."""
    command = container.get("command")
    argv = [*(command or ENTRYPOINT), *(container.get("args") or ([] if command else CMD))]
    if argv[:1] != ["inferq"]:
        raise ValueError(f"runs {argv[:1]}, not the inferq entrypoint")
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv[1:])
    except SystemExit:
        said = errors.getvalue().strip().splitlines() or ["no message"]
        raise ValueError(f"{' '.join(argv)!r}: {said[-1]}") from None


def command_of(container: dict[str, Any]) -> argparse.Namespace | None:
    """The parsed command, or None when it does not parse (``command_problems`` reports that)."""
    try:
        return parse_command(container)
    except ValueError:
        return None


def environment(bundle: Bundle, container: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The container's variables (ConfigMaps via envFrom, then env; secrets as ``SECRET``) and what is wrong."""
    env: dict[str, str] = {}
    problems: list[str] = []
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or {}
        found = bundle.find("ConfigMap", ref.get("name", ""))
        if found is None:
            problems.append(f"envFrom names no ConfigMap here: {source}")
        else:
            env.update({k: str(v) for k, v in found.doc.get("data", {}).items()})
    for item in container.get("env", []):
        source = item.get("valueFrom", {})
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "secretKeyRef" in source:
            problems += secret_ref_problems(bundle, source["secretKeyRef"], what=item["name"])
            env[item["name"]] = SECRET
        else:
            problems.append(f"{item['name']}: only values and secretKeyRef are used here, got {source}")
    return env, problems


def secret_ref_problems(bundle: Bundle, ref: dict[str, Any], *, what: str) -> list[str]:
    """A Secret key must be in secret.example.yaml (the shape operators copy) and not optional."""
    secret = bundle.find("Secret", ref.get("name", ""))
    keys = set() if secret is None else {*secret.doc.get("stringData", {}), *secret.doc.get("data", {})}
    problems = []
    if ref.get("key") not in keys:
        problems.append(f"{what}: secret {ref.get('name')!r} has no key {ref.get('key')!r}")
    if ref.get("optional"):
        problems.append(f"{what}: an optional secret key would let the pod start without it")
    return problems


def settings_of(bundle: Bundle, container: dict[str, Any]) -> Settings:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownSetting)
        return Settings.from_env(environment(bundle, container)[0])


@functools.cache
def get_routes() -> frozenset[str]:
    """Paths the API answers GET on (built, never started: no sockets)."""
    app = create_app(Settings())
    return frozenset(r.path for r in app.routes if "GET" in getattr(r, "methods", ()))


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if set(selector) - {"matchLabels"}:
        raise ValueError(f"only matchLabels selectors are checked here: {selector}")
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


# --- the checkers ------------------------------------------------------------------------------------


def schema_problems(bundle: Bundle) -> list[str]:
    """Core objects against every targeted Kubernetes version (strict); KEDA's against our schema."""
    keda = jsonschema.Draft202012Validator(json.loads(KEDA_SCHEMA.read_text()))
    problems = []
    for obj in bundle.objs:
        if obj.kind == "Kustomization":
            continue  # kustomize's own file: kustomization_problems
        if str(obj.doc.get("apiVersion", "")).startswith("keda.sh/"):
            errors = keda.iter_errors(obj.doc)
            problems += [f"{obj}: {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj.doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{obj} (k8s {version}): {'.'.join(map(str, exc.path))}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{obj}: {exc.message}")
    return problems


def command_problems(bundle: Bundle) -> list[str]:
    problems = []
    for obj, _, container in containers(bundle):
        try:
            parse_command(container)
        except ValueError as exc:
            problems.append(f"{obj}: {exc}")
    return problems


def env_problems(bundle: Bundle) -> list[str]:
    """Real settings only, well-formed, and both service URLs set (unset = embedded servers in the pod)."""
    problems = []
    for obj, _, container in containers(bundle):
        env, found = environment(bundle, container)
        problems += [f"{obj}: {p}" for p in found]
        foreign = [n for n in env if not n.startswith("INFERQ_") and n not in ALLOWED_ENV]
        problems += [f"{obj}: {n} is not an inferq setting" for n in foreign]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", UnknownSetting)
                Settings.from_env(env)
        except (UnknownSetting, ValueError) as exc:
            problems.append(f"{obj}: {exc}")
        args = command_of(container)
        migrate = args is not None and args.command == "migrate"
        for name in ("INFERQ_DATABASE_URL",) if migrate else ("INFERQ_DATABASE_URL", "INFERQ_REDIS_URL"):
            if env.get(name) != SECRET:
                problems.append(f"{obj}: {name} must come from a Secret (unset starts an embedded server)")
    for auth in bundle.of("TriggerAuthentication"):
        for ref in auth.doc["spec"].get("secretTargetRef", []):
            problems += [f"{auth}: {p}" for p in secret_ref_problems(bundle, ref, what=ref["parameter"])]
    return problems


def selector_problems(bundle: Bundle) -> list[str]:
    problems = []
    deployments = bundle.of("Deployment")
    pod_labels = {d.name: d.doc["spec"]["template"]["metadata"].get("labels", {}) for d in deployments}
    for d in deployments:
        owners = [o for o in deployments if matches(d.doc["spec"]["selector"], pod_labels[o.name])]
        if [o.name for o in owners] != [d.name]:
            problems.append(f"{d}: its selector matches the pods of {[o.name for o in owners]}")
    for pdb in bundle.of("PodDisruptionBudget"):
        owners = [d for d in deployments if matches(pdb.doc["spec"]["selector"], pod_labels[d.name])]
        if len(owners) != 1:
            problems.append(f"{pdb}: selects the pods of {[o.name for o in owners]}, not exactly one Deployment")
            continue
        replicas, keep = owners[0].doc["spec"].get("replicas"), pdb.doc["spec"].get("minAvailable", 0)
        if replicas is not None and keep >= replicas:
            problems.append(f"{pdb}: minAvailable >= the {replicas} replicas: a node drain would never finish")
    for svc in bundle.of("Service"):
        owners = [d for d in deployments if matches({"matchLabels": svc.doc["spec"]["selector"]}, pod_labels[d.name])]
        if not owners:
            problems.append(f"{svc}: its selector matches no Deployment's pods")
        for port in svc.doc["spec"]["ports"]:
            for d in owners:
                named = {p.get("name") for c in pod_of(d.doc)["containers"] for p in c.get("ports", [])}
                if port["targetPort"] not in named:
                    problems.append(f"{svc}: targetPort {port['targetPort']!r} is no named port of {d.name}")
    return problems


def probe_problems(bundle: Bundle) -> list[str]:
    """Probes reach a declared port on a GET route; the API listens where its port and probes say."""
    problems = []
    for obj, _, container in containers(bundle):
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(kind)
            if probe is None:
                continue
            get = probe.get("httpGet")
            if get is None or (get["port"] not in ports and get["port"] not in ports.values()):
                problems.append(f"{obj}: {kind} must be an httpGet on a declared port: {probe}")
            elif get["path"] not in get_routes():
                problems.append(f"{obj}: {kind} path {get['path']} is not a GET route of the API")
        args = command_of(container)
        if args is not None and args.command == "serve":
            settings = settings_of(bundle, container)
            host, port = args.host or settings.host, args.port or settings.port
            if port not in ports.values() or host != "0.0.0.0":
                problems.append(f"{obj}: serve listens on {host}:{port}, the container's ports are {ports}")
            if container.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/health/ready":
                problems.append(f"{obj}: the API's readiness must be /health/ready")
    return problems


def drain_budget_s(args: argparse.Namespace, settings: Settings, container: dict[str, Any]) -> float:
    """How long this process may take after SIGTERM before it has exited on its own."""
    if args.command == "worker":
        return settings.queue.shutdown_grace_s
    if args.command == "tasks":
        return settings.jobs.webhook_timeout_s + SHUTDOWN_MARGIN_S
    if args.command == "serve":
        pre_stop = container.get("lifecycle", {}).get("preStop")
        if pre_stop is not None and "sleep" not in pre_stop:
            raise ValueError(f"only a preStop sleep can be counted: {pre_stop}")
        sleep = pre_stop["sleep"]["seconds"] if pre_stop else 0
        return sleep + settings.api.shutdown_timeout_s + (SERVE_JOIN_MARGIN_S if args.workers > 1 else 0)
    return 0.0


def grace_problems(bundle: Bundle) -> list[str]:
    """terminationGracePeriodSeconds, set explicitly, outlasts the drain (else SIGKILL lands mid-batch)."""
    problems = []
    for obj, pod, container in containers(bundle):
        args = command_of(container)
        if args is None:
            continue
        env = environment(bundle, container)[0]
        if args.command == "worker" and "INFERQ_SHUTDOWN_GRACE_S" not in env:
            problems.append(f"{obj}: set INFERQ_SHUTDOWN_GRACE_S explicitly, next to the pod's grace period")
        if not pod.get("shareProcessNamespace"):
            problems.append(f"{obj}: shareProcessNamespace, so an init (the pause container) is PID 1, not inferq")
        if obj.kind == "Job":
            continue
        grace = pod.get("terminationGracePeriodSeconds")
        try:
            budget = drain_budget_s(args, settings_of(bundle, container), container)
        except ValueError as exc:
            problems.append(f"{obj}: {exc}")
            continue
        if grace is None or grace <= budget:
            problems.append(f"{obj}: terminationGracePeriodSeconds {grace} must exceed the {budget:g} s drain")
    return problems


def scaling_problems(bundle: Bundle) -> list[str]:
    problems = []
    for so in bundle.of("ScaledObject"):
        spec = so.doc["spec"]
        target = bundle.find(spec["scaleTargetRef"].get("kind", "Deployment"), spec["scaleTargetRef"]["name"])
        if target is None or target.doc["metadata"].get("namespace") != so.doc["metadata"].get("namespace"):
            problems.append(f"{so}: scaleTargetRef names no Deployment in its namespace")
            continue
        if "replicas" in target.doc["spec"]:
            problems.append(f"{target}: KEDA owns the replica count; an applied `replicas` resets it")
        args, settings = command_of(container_of(target.doc)), settings_of(bundle, container_of(target.doc))
        if args is None:
            continue
        if args.command == "worker" and args.all and spec.get("minReplicaCount", 0) < 1:
            problems.append(f"{so}: the default pool must keep a replica (a cold start outlasts sync waits)")
        for trigger in spec["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] == "metrics-api":
                problems += [f"{so}: {p}" for p in backlog_trigger_problems(bundle, so, meta, settings)]
            elif trigger["type"] == "redis-streams":
                problems += [f"{so}: {p}" for p in stream_trigger_problems(bundle, trigger, args, settings)]
    return problems


def backlog_trigger_problems(bundle: Bundle, so: Obj, meta: dict[str, str], settings: Settings) -> list[str]:
    url = urlsplit(meta["url"])
    service, _, rest = (url.hostname or "").partition(".")
    namespace, _, domain = rest.partition(".")
    svc, own = bundle.find("Service", service), so.doc["metadata"].get("namespace")
    problems = []
    if svc is None or namespace != own or domain not in ("svc", "svc.cluster.local"):
        problems.append(f"{meta['url']} is not <service>.{own}.svc of a Service here")
    elif url.port not in {p["port"] for p in svc.doc["spec"]["ports"]}:
        problems.append(f"{meta['url']}: port {url.port} is not a port of {svc}")
    if url.path not in get_routes():
        problems.append(f"{meta['url']}: {url.path} is not a GET route of the API")
    numbers = {f.name for f in msgspec.structs.fields(Backlog) if f.type in (int, float)}
    if meta["valueLocation"] not in numbers:
        problems.append(f"valueLocation {meta['valueLocation']!r} is not one of the backlog answer's numbers {numbers}")
    target = float(meta["targetValue"])
    if not 2 * settings.queue.max_batch <= target < settings.queue.admission_limit:
        problems.append(
            f"targetValue {target:g} must be >= 2 x INFERQ_MAX_BATCH ({settings.queue.max_batch}: a busy "
            f"worker's own pending) and < INFERQ_ADMISSION_LIMIT ({settings.queue.admission_limit})"
        )
    return problems


def stream_trigger_problems(
    bundle: Bundle, trigger: dict[str, Any], args: argparse.Namespace, settings: Settings
) -> list[str]:
    """The trigger watches a stream of a version the pool serves, in the group the workers read with."""
    names = Names(prefix=settings.services.key_prefix)
    try:
        refs = [ModelRef.parse(m) for m in (args.models or "").split(",") if m]
    except InvalidInput as exc:
        return [str(exc)]
    if not refs or any(r.version is None for r in refs):
        return [f"a redis-streams pool must pin versions with --models name@N (stream names), got {args.models}"]
    partitions = [names.partition(r.name, r.version) for r in refs if r.version is not None]
    meta, problems = trigger["metadata"], []
    streams = {s for p in partitions for s in (names.work_stream(p), names.bulk_stream(p))}
    if meta["stream"] not in streams:
        problems.append(f"stream {meta['stream']!r} is none of the pool's: {sorted(streams)}")
    if meta.get("consumerGroup") not in {names.group(p) for p in partitions}:
        problems.append(f"consumerGroup {meta.get('consumerGroup')!r} is not the workers' group")
    auth = trigger.get("authenticationRef")
    if auth is not None and bundle.find("TriggerAuthentication", auth["name"]) is None:
        problems.append(f"authenticationRef {auth['name']!r} names no TriggerAuthentication here")
    return problems


def security_problems(bundle: Bundle) -> list[str]:
    """Restricted pods on a read-only root: whatever inferq writes (/tmp, the model cache) is a volume."""
    problems = []
    for obj, pod, container in containers(bundle):
        pod_ctx, ctx = pod.get("securityContext", {}), container.get("securityContext", {})
        if not pod_ctx.get("runAsNonRoot") or pod_ctx.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{obj}: the pod must run as non-root with the RuntimeDefault seccomp profile")
        if pod.get("enableServiceLinks", True) or pod.get("automountServiceAccountToken", True):
            problems.append(f"{obj}: set enableServiceLinks and automountServiceAccountToken to false")
        if not ctx.get("readOnlyRootFilesystem") or ctx.get("allowPrivilegeEscalation", True):
            problems.append(f"{obj}: readOnlyRootFilesystem true and allowPrivilegeEscalation false, please")
        if "ALL" not in ctx.get("capabilities", {}).get("drop", []):
            problems.append(f"{obj}: drop ALL capabilities")
        volumes = {v["name"] for v in pod.get("volumes", [])}
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        problems += [f"{obj}: mount {m!r} has no volume" for m, v in mounts.items() if v not in volumes]
        env = environment(bundle, container)[0]
        writable = {"/tmp", env.get("INFERQ_MODEL_ROOT", ".inferq/models"), env.get("INFERQ_STATE_DIR", ".inferq")}
        for path in sorted(writable):
            if not any(PurePosixPath(path).is_relative_to(m) for m in mounts):
                problems.append(f"{obj}: {path} is written by inferq but on the read-only root filesystem")
    return problems


def metrics_problems(bundle: Bundle) -> list[str]:
    """Every Deployment's process announces its ``/metrics`` (the prometheus.io annotations on the pod) on the
    port it really serves them on, a declared container port, listening beyond the pod's loopback."""
    problems = []
    for obj, template in pods(bundle):
        container = template["spec"]["containers"][0]
        args = command_of(container)
        if obj.kind != "Deployment" or args is None or args.command not in METRICS_PORTS:
            continue
        notes = template.get("metadata", {}).get("annotations") or {}
        if notes.get("prometheus.io/scrape") != "true":
            problems.append(f'{obj}: annotate the pod prometheus.io/scrape "true": its /metrics goes unscraped')
            continue
        settings = settings_of(bundle, container)
        port, host = METRICS_PORTS[args.command](args, settings), getattr(args, "host", None) or settings.host
        declared = sorted(p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", []))
        if port == 0:
            problems.append(f"{obj}: annotated for scraping, but its metrics are off (port 0)")
        elif notes.get("prometheus.io/port") != str(port):
            problems.append(f"{obj}: prometheus.io/port {notes.get('prometheus.io/port')!r}, but {args.command} "
                            f"serves /metrics on {port}")  # fmt: skip
        if port and port not in declared:
            problems.append(f"{obj}: /metrics port {port} is not a declared containerPort {declared}")
        if notes.get("prometheus.io/path", "/metrics") != "/metrics":
            problems.append(f"{obj}: prometheus.io/path {notes['prometheus.io/path']!r}: metrics are at /metrics")
        if host != "0.0.0.0":
            problems.append(f"{obj}: {args.command} listens on {host}: set INFERQ_HOST 0.0.0.0 to be scraped")
    return problems


def kustomization_problems(bundle: Bundle) -> list[str]:
    """It applies every file but the examples, into the namespace the files name, with their image."""
    found = bundle.of("Kustomization")
    if len(found) != 1:
        return [f"expected one kustomization.yaml, found {len(found)}"]
    kust = found[0].doc
    problems = [f"kustomization.yaml: unknown key {k!r}" for k in set(kust) - KUSTOMIZATION_KEYS]
    listed = set(kust.get("resources", []))
    wanted = {f for f in bundle.files if f != found[0].file and not f.endswith(".example.yaml")}
    problems += [f"kustomization.yaml does not list {f}" for f in sorted(wanted - listed)]
    problems += [f"kustomization.yaml lists {f}, which is an example or no file" for f in sorted(listed - wanted)]
    applied = [o for o in bundle.objs if o.file in listed]
    namespace = kust.get("namespace")
    if namespace not in {o.name for o in applied if o.kind == "Namespace"}:
        problems.append(f"kustomization.yaml: namespace {namespace!r} is not created by a listed file")
    for obj in applied:
        if obj.kind != "Namespace" and obj.doc["metadata"].get("namespace") != namespace:
            problems.append(f"{obj}: namespace {obj.doc['metadata'].get('namespace')!r}, not {namespace!r}")
    images = {i["name"]: i.get("newTag") for i in kust.get("images", [])}
    for obj, _, container in containers(bundle):
        name, _, tag = container["image"].rpartition(":")
        if images.get(name) != tag:
            problems.append(f"{obj}: image {container['image']} disagrees with kustomization images {images}")
    return problems


CHECKERS: list[Callable[[Bundle], list[str]]] = [
    schema_problems,
    command_problems,
    env_problems,
    selector_problems,
    probe_problems,
    grace_problems,
    scaling_problems,
    security_problems,
    metrics_problems,
    kustomization_problems,
]
