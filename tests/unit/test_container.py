"""The Dockerfile and .dockerignore, checked offline (no Docker engine here): hadolint, and what inferq needs
of its image — two stages on one base, a non-root user, nothing installed in the final stage, the core
wheel only, a health check on a real route, every ``INFERQ_*`` a real setting, a build context that holds
the package and nothing else. Each checker is also fed broken copies, to show it rejects them."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import shlex
import subprocess
import sys
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from inferq.cli.main import build_parser
from inferq.settings import Settings, UnknownSetting

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT = Path(sys.executable).with_name("hadolint")
BASE = "python:3.11-slim-bookworm"
VENV = "/opt/venv"
# Package installs or compilers: the final stage must have neither (it only receives the builder's venv).
INSTALLS = re.compile(r"\b(apt-get\s+install|apt\s+install|apk\s+add|pip\s+install|gcc|g\+\+|clang|build-essential)\b")


class DockerfileError(Exception):
    """What is wrong with a Dockerfile, one problem per line."""


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse(text: str) -> list[list[Instruction]]:
    """The instructions of each stage (continuation lines joined, comments dropped)."""
    stages: list[list[Instruction]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, inside a continuation too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stages.append([])
        if not stages:
            raise DockerfileError(f"{keyword} before the first FROM")
        stages[-1].append(Instruction(keyword.upper(), args.strip()))
    return stages


def exec_form(args: str) -> list[str]:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DockerfileError(f"not an exec-form (JSON list) instruction: {args}")
    return value


def env_of(stage: list[Instruction]) -> dict[str, str]:
    """``ENV`` in ``KEY=value`` form (the legacy ``ENV KEY value`` form is refused by hadolint's DL3044 too)."""
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for pair in shlex.split(ins.args):
                key, sep, value = pair.partition("=")
                if not sep:
                    raise DockerfileError(f"ENV without '=': {ins.args}")
                env[key] = value
    return env


@functools.cache
def app_paths() -> frozenset[str]:
    """Every route path of the API app (built, not started: nothing is opened)."""
    from inferq.api import create_app

    return frozenset(route.path for route in create_app(Settings()).routes)


def check_settings(env: dict[str, str]) -> Settings:
    """``Settings.from_env`` as a process would run it, with an unknown ``INFERQ_*`` name an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownSetting)
        try:
            return Settings.from_env(env)
        except (UnknownSetting, ValueError) as exc:
            raise DockerfileError(str(exc)) from None


def check_command(argv: list[str]) -> str:
    """The inferq subcommand ``argv`` runs; an error when ``inferq`` would refuse the arguments."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return str(build_parser().parse_args(argv).command)
    except SystemExit:
        raise DockerfileError(f"inferq {' '.join(argv)}: {stderr.getvalue().strip()}") from None


def check_dockerfile(text: str) -> None:
    """Raise ``DockerfileError`` listing every way ``text`` breaks the image's contract."""
    stages = parse(text)
    problems: list[str] = []
    if len(stages) < 2:
        problems.append("not multi-stage: the final stage must only receive the builder's venv")
    bases = [stage[0].args.split()[0] for stage in stages]
    if any(base != BASE for base in bases):
        problems.append(f"every stage must be FROM {BASE} (the venv links to its python): {bases}")
    builder, final = stages[0], stages[-1]
    problems += _builder_problems(builder)
    problems += _final_problems(final)
    if problems:
        raise DockerfileError("\n".join(problems))


def _builder_problems(builder: list[Instruction]) -> list[str]:
    runs = " && ".join(ins.args for ins in builder if ins.keyword == "RUN")
    installs = re.findall(r"pip(?:\s+--python\s+\S+)?\s+install\s+([^&]*)", runs)
    found = []
    if not installs or not all(re.search(r"/wheels/inferq-\*\.whl(\s|$)", args) for args in installs):
        found.append(f"the builder must install only the inferq wheel, no extras: {installs}")
    if not all("--only-binary=:all:" in args for args in installs):
        found.append("pip install without --only-binary=:all: may build from source (a compiler)")
    if "wheel --no-cache-dir --no-deps" not in runs and "wheel --no-deps" not in runs:
        found.append("the inferq wheel must be built with --no-deps")
    return found


def _final_problems(final: list[Instruction]) -> list[str]:
    found = []
    for ins in final:
        if ins.keyword == "RUN" and INSTALLS.search(ins.args):
            found.append(f"the final stage installs or compiles: RUN {ins.args}")
        if ins.keyword == "COPY" and ins.args.startswith("--from=") and ins.args.split()[1:] != [VENV, VENV]:
            found.append(f"the final stage takes only the venv from the builder: COPY {ins.args}")
    users = [ins.args for ins in final if ins.keyword == "USER"]
    uid = users[-1].partition(":")[0] if users else ""
    if not uid.isdigit() or int(uid) == 0:
        found.append(f"the final USER must be a numeric, non-root uid: {users}")
    env = env_of(final)
    try:
        settings = check_settings(env)
    except DockerfileError as exc:
        return [*found, f"ENV: {exc}"]
    if settings.host != "0.0.0.0" or not {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"} <= env.keys():
        found.append("ENV needs INFERQ_HOST=0.0.0.0, PYTHONDONTWRITEBYTECODE and PYTHONUNBUFFERED")
    model_root = env.get("INFERQ_MODEL_ROOT", "")
    runs = " ".join(ins.args for ins in final if ins.keyword == "RUN")
    owned = re.findall(r"chown -R \S+ (\S+)", runs)
    if f"mkdir -p {model_root}" not in runs or not any(model_root.startswith(path) for path in owned):
        found.append(f"INFERQ_MODEL_ROOT ({model_root or 'unset'}) must be created and owned by the user")
    exposed = [ins.args for ins in final if ins.keyword == "EXPOSE"]
    if exposed != [str(settings.port)]:
        found.append(f"EXPOSE {exposed} is not INFERQ_PORT {settings.port}")
    found += _entry_problems(final)
    return found


def _entry_problems(final: list[Instruction]) -> list[str]:
    found = []
    last = {ins.keyword: ins.args for ins in final}
    try:
        if exec_form(last.get("ENTRYPOINT", "")) != ["inferq"]:
            found.append(f'ENTRYPOINT must be ["inferq"]: {last.get("ENTRYPOINT")}')
        if check_command(exec_form(last.get("CMD", ""))) != "serve":
            found.append(f"CMD must run serve: {last.get('CMD')}")
        check = last.get("HEALTHCHECK", "")
        probe = " ".join(exec_form(check.partition("CMD ")[2]))
    except DockerfileError as exc:
        return [*found, str(exc)]
    paths = re.findall(r"['\"](/[\w./-]*)['\"]", probe)
    if not paths or not set(paths) <= app_paths():
        found.append(f"HEALTHCHECK must probe a route the API serves: {paths}")
    return found


def hadolint(text: str) -> list[str]:
    """hadolint's findings as ``CODE line: message`` (an empty list is a clean Dockerfile)."""
    done = subprocess.run(
        [str(HADOLINT), "--no-color", "--format", "json", "-"], input=text, capture_output=True, text=True, check=False
    )
    findings = json.loads(done.stdout or "[]")
    if done.returncode not in (0, 1) or (done.returncode == 1 and not findings):
        raise RuntimeError(f"hadolint failed: {done.stderr}")
    return [f"{f['code']} {f['line']}: {f['message']}" for f in findings]


# --- .dockerignore ------------------------------------------------------------------------------------------


_GLOB = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def ignore_rules(text: str) -> list[tuple[re.Pattern[str], bool]]:
    """(pattern, is_exception) in file order, as Docker reads them (``**`` any depth, ``*`` within a part)."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        parts = re.split(r"(\*\*/?|\*|\?|\[[^\]]*\])", pattern)
        regex = "".join(_GLOB.get(part, part if part.startswith("[") else re.escape(part)) for part in parts)
        rules.append((re.compile(regex), exception))
    return rules


def ignored(path: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Whether Docker leaves ``path`` out of the context: the last rule matching it or a parent decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for regex, exception in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not exception
    return verdict


def check_context(dockerignore: str, dockerfile: str) -> None:
    """The context must hold every file the builder COPYs (the whole package, the wheel's readme) and
    none of the repository's secrets, state, VCS data, virtualenvs, tests or build outputs."""
    rules = ignore_rules(dockerignore)
    problems = []
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    copied = [src for ins in parse(dockerfile)[0] if ins.keyword == "COPY" for src in ins.args.split()[:-1]]
    if readme not in copied:
        problems.append(f"the builder does not COPY {readme}, which pyproject.toml names as the readme")
    needed = [*copied]
    for src in copied:
        if (ROOT / src).is_dir():
            needed += [
                str(p.relative_to(ROOT))
                for p in (ROOT / src).rglob("*")
                if p.is_file() and "__pycache__" not in p.parts
            ]
    problems += [f"COPY needs {path}, which .dockerignore leaves out" for path in needed if ignored(path, rules)]
    kept_out = [".git/HEAD", ".venv/bin/python", ".inferq/redis/dump.rdb", ".env", "tests/unit/test_container.py",
                ".pytest_cache/v/x", "bench/out/result.json", "build/lib/inferq/x.py", "dist/inferq.whl",
                "inferq.egg-info/PKG-INFO", "inferq/__pycache__/settings.cpython-311.pyc", "docs/settings.md",
                "model.onnx", "inferq/model.onnx"]  # fmt: skip
    problems += [f".dockerignore lets {path} into the build context" for path in kept_out if not ignored(path, rules)]
    if problems:
        raise DockerfileError("\n".join(problems))


# --- the real files -----------------------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    assert hadolint(DOCKERFILE.read_text()) == []


def test_the_dockerfile_keeps_the_image_contract() -> None:
    check_dockerfile(DOCKERFILE.read_text())


def test_the_build_context_is_the_package_and_nothing_else() -> None:
    check_context(DOCKERIGNORE.read_text(), DOCKERFILE.read_text())


def test_the_health_check_probes_liveness_not_readiness() -> None:
    """Liveness: a Redis outage must not make Docker report every API container unhealthy."""
    check = next(ins.args for ins in parse(DOCKERFILE.read_text())[-1] if ins.keyword == "HEALTHCHECK")
    assert "/health/live" in check
    assert "/health/live" in app_paths()


# --- broken copies are rejected -----------------------------------------------------------------------------


def mutated(old: str, new: str, text: str | None = None) -> str:
    original = DOCKERFILE.read_text() if text is None else text
    assert old in original, f"the mutation's anchor {old!r} is not in the file"
    return original.replace(old, new, 1)


FINAL_FROM = "FROM python:3.11-slim-bookworm\n"


@pytest.mark.parametrize(
    ("old", "new", "codes"),
    [
        pytest.param(FINAL_FROM, "FROM python:latest\n", {"DL3007"}, id="latest-tag"),
        pytest.param(
            "USER 10001:10001\n", "RUN apt-get update && apt-get install -y curl\nUSER 10001:10001\n",
            {"DL3008", "DL3009", "DL3015"}, id="unpinned-apt-install",
        ),
        pytest.param("USER 10001:10001\n", "USER root\n", {"DL3002"}, id="root-user"),
        pytest.param("--from=builder", "--from=buildr", {"DL3022"}, id="unknown-stage"),
    ],
)  # fmt: skip
def test_hadolint_rejects_a_broken_dockerfile(old: str, new: str, codes: set[str]) -> None:
    findings = hadolint(mutated(old, new))
    assert codes <= {finding.split()[0] for finding in findings}, findings


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        pytest.param(FINAL_FROM, "FROM python:3.12-slim-bookworm\n", "every stage must be FROM", id="other-base"),
        pytest.param("USER 10001:10001\n", "", "numeric, non-root uid", id="no-user"),
        pytest.param("USER 10001:10001\n", "USER 0\n", "numeric, non-root uid", id="root-uid"),
        pytest.param(
            "COPY --from=builder /opt/venv /opt/venv\n",
            "COPY --from=builder /opt/venv /opt/venv\nRUN apt-get install -y --no-install-recommends gcc=4:12.2.0-3\n",
            "installs or compiles", id="compiler-in-final",
        ),
        pytest.param(
            "COPY --from=builder /opt/venv /opt/venv\n",
            "COPY --from=builder /opt/venv /opt/venv\nCOPY --from=builder /src /src\n",
            "only the venv", id="sources-copied",
        ),
        pytest.param("/wheels/inferq-*.whl\n", "'/wheels/inferq-*.whl[convert]'\n", "no extras", id="extra-installed"),
        pytest.param("--only-binary=:all: ", "", "--only-binary", id="may-compile"),
        pytest.param('ENTRYPOINT ["inferq"]', 'ENTRYPOINT ["python"]', "ENTRYPOINT", id="entrypoint"),
        pytest.param('CMD ["serve"]', 'CMD ["serve", "--wrokers", "2"]', "unrecognized arguments", id="bad-cmd"),
        pytest.param('CMD ["serve"]', 'CMD ["tasks"]', "CMD must run serve", id="cmd-not-serve"),
        pytest.param("/health/live", "/healthz", "HEALTHCHECK must probe a route", id="no-such-route"),
        pytest.param("INFERQ_HOST=0.0.0.0", "INFERQ_HOTS=0.0.0.0", "unknown setting INFERQ_HOTS", id="unknown-env"),
        pytest.param("INFERQ_PORT=8000", "INFERQ_PORT=eighty", "invalid INFERQ_PORT", id="bad-env-value"),
        pytest.param("INFERQ_HOST=0.0.0.0", "INFERQ_HOST=127.0.0.1", "INFERQ_HOST=0.0.0.0", id="loopback-only"),
        pytest.param("EXPOSE 8000", "EXPOSE 8080", "is not INFERQ_PORT", id="expose-mismatch"),
        pytest.param("mkdir -p /var/lib/inferq/models", "mkdir -p /var/lib/inferq", "INFERQ_MODEL_ROOT",
                     id="model-root-not-created"),
    ],
)  # fmt: skip
def test_the_contract_check_rejects_a_broken_dockerfile(old: str, new: str, problem: str) -> None:
    with pytest.raises(DockerfileError, match=re.escape(problem)):
        check_dockerfile(mutated(old, new))


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        pytest.param("!README.md\n", "", "COPY needs README.md", id="readme-left-out"),
        pytest.param("!inferq/\n", "!inferq/*.py\n", "COPY needs inferq/store/migrations", id="package-data-left-out"),
        pytest.param("*\n!pyproject.toml", "!pyproject.toml", "lets .git/HEAD into", id="no-allow-list"),
        pytest.param("**/*.onnx\n", "", "lets inferq/model.onnx into", id="models-kept"),
    ],
)  # fmt: skip
def test_the_context_check_rejects_a_broken_dockerignore(old: str, new: str, problem: str) -> None:
    with pytest.raises(DockerfileError, match=re.escape(problem)):
        check_context(mutated(old, new, DOCKERIGNORE.read_text()), DOCKERFILE.read_text())


def test_the_ignore_matcher_follows_dockers_rules() -> None:
    """Last match wins, a directory's rule covers its files, ``**`` spans directories."""
    rules = ignore_rules("*\n!keep/\nkeep/**/*.tmp\n!keep/ok.tmp\n**/*.py[co]\n")
    paths = ("a.txt", "keep/x.py", "keep/d/e.tmp", "keep/ok.tmp", "keep/x.tmp", "keep/d/x.pyc", "keep/x.pyd")
    assert [ignored(p, rules) for p in paths] == [True, False, True, False, True, True, False]
