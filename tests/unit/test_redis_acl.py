"""The ACL file rendered from ops/redis/users.acl.template: users, hashed passwords, names that cannot widen a rule.

The rules themselves are proven against a real Redis in tests/e2e/test_redis_acl.py; here: the rendering, and
that the key names the code builds fall under the patterns meant for them (``fnmatchcase`` reads ``*`` as Redis
does; the patterns use no other glob syntax).
"""

from __future__ import annotations

import hashlib
import os
import stat
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

from inferq.cli.main import main
from inferq.contracts.names import Names
from inferq.errors import InvalidInput
from inferq.streams.acl import password_variable, render
from inferq.streams.replies import ReplyListener
from inferq.streams.tasks import delivery_job, queue_name

TEMPLATE = (Path(__file__).resolve().parents[2] / "ops" / "redis" / "users.acl.template").read_text()
PREFIX = "iq-unit"
NAMES = Names(PREFIX)
PART = NAMES.partition("wine", 2)
PASSWORDS = {
    "REDIS_ACL_PASSWORD_API": "api-secret-1",
    "REDIS_ACL_PASSWORD_WORKER": "worker-secret-1",
    "REDIS_ACL_PASSWORD_TASKS": "tasks-secret-1",
    "REDIS_ACL_PASSWORD_ADMIN": "admin-secret-1",
    "REDIS_ACL_PASSWORD_SCALER": "scaler-secret-1",
    "REDIS_ACL_PASSWORD_PRODUCER_BILLING": "billing-secret-1",
    "REDIS_ACL_PASSWORD_PRODUCER_FRAUD": "fraud-secret-1",
}


def sha(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def users(acl: str) -> dict[str, list[str]]:
    """``{user: its rule tokens}`` of a rendered file (selector parentheses kept on their tokens)."""
    lines = acl.splitlines()
    assert all(line.startswith("user ") for line in lines), lines
    return {line.split()[1]: line.split()[2:] for line in lines}


def rendered(producers: tuple[str, ...] = ("billing", "fraud"), **env: str) -> dict[str, list[str]]:
    return users(render(TEMPLATE, prefix=PREFIX, producers=producers, environ={**PASSWORDS, **env}))


def patterns(rules: list[str], kind: str) -> list[str]:
    """Key patterns a user may ``kind`` ("R" or "W") — ``~`` grants both — or channels (``kind`` "&")."""
    found = []
    for token in (t.strip("()") for t in rules):
        if kind == "&":
            found += [token[1:]] if token.startswith("&") else []
        elif token.startswith("~") or (token.startswith("%") and kind in token[1 : token.index("~")]):
            found.append(token.partition("~")[2])
    return found


def access(rules: list[str], name: str) -> str:
    """What a user may do to the key ``name``: "RW", "R", "W" or ""."""
    return "".join(kind for kind in "RW" if any(fnmatchcase(name, p) for p in patterns(rules, kind)))


def test_one_user_per_role_and_producer_each_starting_from_nothing() -> None:
    acl = render(TEMPLATE, prefix=PREFIX, producers=["billing", "fraud"], environ=PASSWORDS)
    found = users(acl)
    assert list(found) == ["default", "api", "worker", "tasks", "admin", "scaler", "producer-billing", "producer-fraud"]
    assert found["default"] == ["off", "resetpass", "resetkeys", "resetchannels", "-@all"]
    for user, rules in list(found.items())[1:]:
        first_grant = next(i for i, rule in enumerate(rules) if rule[0] in "+~%&(")
        assert rules[first_grant - 3 : first_grant] == ["resetkeys", "resetchannels", "-@all"], user
        assert not {"+@all", "allcommands", "allkeys", "allchannels", "~*", "&*", "nopass", "reset"} & set(rules), user
        assert not any(rule.startswith((">", "<")) for rule in rules), user  # no plain-text password
    assert all(password not in acl for password in PASSWORDS.values())
    assert "$" not in acl
    assert acl.endswith("\n")


@pytest.mark.parametrize(
    ("user", "variable"),
    [("api", "API"), ("worker", "WORKER"), ("tasks", "TASKS"), ("admin", "ADMIN"), ("scaler", "SCALER"),
     ("producer-billing", "PRODUCER_BILLING"), ("producer-fraud", "PRODUCER_FRAUD")],
)  # fmt: skip
def test_each_user_gets_its_own_password_as_a_sha256(user: str, variable: str) -> None:
    rules = rendered()[user]
    assert rules[:3] == ["on", "resetpass", sha(PASSWORDS[f"REDIS_ACL_PASSWORD_{variable}"])]
    assert [r for r in rules if r.startswith("#")] == [sha(PASSWORDS[f"REDIS_ACL_PASSWORD_{variable}"])]


def test_a_producer_may_add_to_its_ingress_and_read_its_replies_and_nothing_else() -> None:
    billing = rendered()["producer-billing"]
    assert billing[3:] == [
        "resetkeys", "resetchannels", "-@all", "+ping", "+select",
        f"(%W~{PREFIX}:ingress:billing", "-@all", "+xadd)",
        f"(~{PREFIX}:reply:billing", "-@all", "+xreadgroup", "+xack", "+xgroup|create)",
    ]  # fmt: skip
    keys = [NAMES.ingress_stream("billing"), NAMES.producer_replies("billing"), NAMES.ingress_stream("fraud"),
            NAMES.producer_replies("fraud"), f"{NAMES.ingress_stream('billing')}:dlq", NAMES.work_stream(PART),
            NAMES.bulk_stream(PART), NAMES.result("x")]  # fmt: skip
    assert [access(billing, k) for k in keys] == ["W", "RW", "", "", "", "", "", ""]
    assert patterns(billing, "&") == []


def test_the_names_the_code_uses_fall_under_their_roles_patterns() -> None:
    work, bulk, dlq = NAMES.work_stream(PART), NAMES.bulk_stream(PART), NAMES.dead_letters(PART)
    rate, alive, result, queue = NAMES.rate(PART), NAMES.alive(PART), NAMES.result("x"), queue_name(PREFIX)
    job, arq_result = job_key_prefix + delivery_job("d1", 1), result_key_prefix + delivery_job("d1", 1)
    ingress, replies = NAMES.ingress_stream("billing"), NAMES.producer_replies("billing")
    cache = NAMES.result_cache(PART, "default", "ab" * 32)
    expected = {
        "api": {work: "RW", bulk: "RW", dlq: "R", rate: "RW", f"{rate}:workers": "R", alive: "R", result: "RW",
                queue: "W", job: "RW", arq_result: "R", ingress: "", replies: "", f"{PREFIX}:reconciler:requeue": "",
                cache: "RW"},
        "worker": {work: "RW", bulk: "RW", dlq: "W", rate: "RW", f"{rate}:workers": "RW", alive: "RW",
                   f"{PREFIX}:{{{PART}}}:fwd:billing:1-1": "RW", result: "RW", ingress: "RW", f"{ingress}:dlq": "RW",
                   replies: "W", queue: "W", job: "RW", arq_result: "R", in_progress_key_prefix + "x": "", cache: "W"},
        "tasks": {queue: "RW", f"{queue}:health-check": "RW", job: "RW", in_progress_key_prefix + "x": "RW",
                  retry_key_prefix + "x": "RW", arq_result: "RW", abort_jobs_ss: "W",
                  f"{PREFIX}:reconciler:requeue": "RW", bulk: "RW", work: "", dlq: "", result: "", ingress: "",
                  cache: ""},
        "admin": {dlq: "RW", result: "RW", work: "W", bulk: "W", rate: "", ingress: "", queue: "", job: ""},
        "scaler": {work: "R", bulk: "R", dlq: "", rate: "", f"{rate}:workers": "", result: "", ingress: "", job: "",
                   cache: ""},
    }  # fmt: skip
    found = rendered()
    assert {user: {k: access(found[user], k) for k in keys} for user, keys in expected.items()} == expected
    channel = NAMES.reply_channel(ReplyListener.instance_name())  # what an API process subscribes
    replies, changes = NAMES.reply_channel("api-*"), NAMES.catalog_channel()  # changes: in a selector of its own
    assert patterns(found["api"], "&") == patterns(found["worker"], "&") == [replies, changes]
    assert {u: patterns(rules, "&") for u, rules in found.items() if patterns(rules, "&")} == {
        "api": [replies, changes], "worker": [replies, changes], "admin": [changes]
    }  # fmt: skip
    # Registry changes: announced by the API (model routes) and the operator (models import), read by workers.
    revision = {u: access(rules, NAMES.catalog_revision()) for u, rules in found.items()}
    assert {u: a for u, a in revision.items() if a} == {"api": "RW", "worker": "R", "admin": "RW"}
    assert fnmatchcase(channel, NAMES.reply_channel("api-*"))
    other = Names("other")  # another deployment on the same Redis: nothing of it
    foreign = [other.work_stream(PART), other.result("x"), other.ingress_stream("billing"), queue_name("other")]
    assert {u: [access(rules, k) for k in foreign] for u, rules in found.items()} == {u: [""] * 4 for u in found}
    channels = {
        u: [p for p in patterns(rules, "&") if fnmatchcase(other.reply_channel("api-1"), p)]
        for u, rules in found.items()
    }
    assert channels == {u: [] for u in found}


def test_a_rotation_accepts_the_previous_password_too() -> None:
    found = rendered(REDIS_ACL_PASSWORD_WORKER_PREVIOUS="worker-secret-0")
    assert found["worker"][2:4] == [sha("worker-secret-1"), sha("worker-secret-0")]
    assert [r for r in found["api"] if r.startswith("#")] == [sha("api-secret-1")]


def test_a_missing_password_is_refused_naming_its_variables() -> None:
    unset = ("REDIS_ACL_PASSWORD_WORKER", "REDIS_ACL_PASSWORD_PRODUCER_FRAUD")
    environ = {k: v for k, v in PASSWORDS.items() if k not in unset}
    environ["REDIS_ACL_PASSWORD_WORKER_PREVIOUS"] = "only the old one"  # not enough
    with pytest.raises(InvalidInput) as caught:
        render(TEMPLATE, prefix=PREFIX, producers=["billing", "fraud"], environ=environ)
    assert caught.value.message == (
        "no password in REDIS_ACL_PASSWORD_WORKER, REDIS_ACL_PASSWORD_PRODUCER_FRAUD: set it to render the ACL file"
    )
    with pytest.raises(InvalidInput, match="REDIS_ACL_PASSWORD_ADMIN"):
        render(TEMPLATE, prefix=PREFIX, producers=[], environ={**PASSWORDS, "REDIS_ACL_PASSWORD_ADMIN": ""})


def test_no_producers_no_producer_users() -> None:
    assert list(rendered(producers=())) == ["default", "api", "worker", "tasks", "admin", "scaler"]


def test_a_producer_named_star_would_widen_its_rule_and_is_refused() -> None:
    widened = NAMES.ingress_stream("*")  # the pattern a producer named "*" would get
    assert fnmatchcase(NAMES.ingress_stream("billing"), widened)  # the danger is real
    with pytest.raises(InvalidInput, match="producer name '\\*' is not allowed"):
        render(TEMPLATE, prefix=PREFIX, producers=["billing", "*"], environ=PASSWORDS)


@pytest.mark.parametrize(
    "name", ["*", "bill*", "b?", "[ab]", "a\\b", "a b", "a:b", "", "{x}", "-x", ".x", "x\n", "é", "x" * 65]
)
def test_producer_names_that_could_widen_or_break_a_rule_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="is not allowed"):
        rendered(producers=(name,))


@pytest.mark.parametrize("prefix", ["in*", "a?", "[a]", "a b", "{x}", "", "a\\b", ":x"])
def test_prefixes_that_could_widen_or_break_a_rule_are_refused(prefix: str) -> None:
    with pytest.raises(InvalidInput, match="cannot be used in ACL key patterns"):
        render(TEMPLATE, prefix=prefix, producers=[], environ=PASSWORDS)


def test_producers_listed_twice_or_sharing_a_variable_are_refused() -> None:
    with pytest.raises(InvalidInput, match="listed twice"):
        rendered(producers=("billing", "billing"))
    environ = {**PASSWORDS, password_variable("producer_a_b"): "x"}
    with pytest.raises(InvalidInput, match="one password variable"):
        render(TEMPLATE, prefix=PREFIX, producers=["a-b", "a_b"], environ=environ)


def test_template_mistakes_are_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown or malformed placeholder"):
        render("user x on ${nope}\n", prefix=PREFIX, producers=[], environ={})
    with pytest.raises(InvalidInput, match="not a user"):
        render("user x on\nacl x\n", prefix=PREFIX, producers=[], environ={})
    with pytest.raises(InvalidInput, match="REDIS_ACL_PASSWORD_OPS"):  # a new role's placeholder names its variable
        render("user ops on ${ops_passwords}\n", prefix=PREFIX, producers=[], environ={})
    assert render("# a comment\n\nuser ops on ${ops_passwords} ~${prefix}:*\n", prefix=PREFIX, producers=[],
                  environ={"REDIS_ACL_PASSWORD_OPS": "pw"}) == f"user ops on {sha('pw')} ~{PREFIX}:*\n"  # fmt: skip


# -- the command ------------------------------------------------------------------------------------------------


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith(("INFERQ_", "REDIS_ACL_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("INFERQ_KEY_PREFIX", PREFIX)
    for key, value in PASSWORDS.items():
        monkeypatch.setenv(key, value)


@pytest.mark.usefixtures("environment")
def test_command_writes_the_file_for_its_owner_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "users.acl"
    assert main(["redis", "acl", "--producers", "billing,fraud", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text() == render(TEMPLATE, prefix=PREFIX, producers=["billing", "fraud"], environ=PASSWORDS)
    assert f"wrote 8 Redis users to {out}" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["users.acl"]  # no temporary file left


@pytest.mark.usefixtures("environment")
def test_command_reads_the_producers_from_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INFERQ_PRODUCERS", "billing=acme, fraud")
    assert main(["redis", "acl"]) == 0
    assert list(users(capsys.readouterr().out))[-2:] == ["producer-billing", "producer-fraud"]
    assert main(["redis", "acl", "--producers", ""]) == 0  # none, whatever the settings say
    assert list(users(capsys.readouterr().out)) == ["default", "api", "worker", "tasks", "admin", "scaler"]


@pytest.mark.usefixtures("environment")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--producers", "billing,*"], "producer name '*' is not allowed"),
        (["--producers", "billing,audit"], "no password in REDIS_ACL_PASSWORD_PRODUCER_AUDIT"),
        (["--template", "/nonexistent/users.acl.template"], "cannot read the ACL template"),
        (["--out", "/nonexistent/dir/users.acl"], "cannot write /nonexistent/dir/users.acl"),
    ],
)
def test_command_refuses_with_a_clear_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["redis", "acl", *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_the_template_ships_in_the_package_and_ops_links_to_it() -> None:
    import tomllib

    from inferq.cli.redis import default_template

    shipped = default_template()
    assert shipped.is_file()
    assert (Path(__file__).resolve().parents[2] / "ops" / "redis" / "users.acl.template").resolve() == shipped
    package_data = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert "streams/users.acl.template" in package_data["tool"]["setuptools"]["package-data"]["inferq"]
