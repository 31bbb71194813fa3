"""The Redis ACL file: ``ops/redis/users.acl.template`` rendered for one prefix, its producers and their passwords.

The template names the users and their rules; this module fills in ``${prefix}``, one line per producer for
lines holding ``${producer}``, and each ``${<role>_passwords}`` from ``REDIS_ACL_PASSWORD_<ROLE>`` (and
``…_PREVIOUS`` while a password is being rotated), written as ``#<sha256>``, never in plain text.

NOTE: names end up inside Redis glob patterns, so a prefix or producer name holding ``*``, ``?``, ``[`` or ``\\``
would widen a rule (a producer named ``*`` could write every ingress stream): only ``[A-Za-z0-9_.-]`` are
accepted (and ``:`` in a prefix).
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping, Sequence

from inferq.errors import InvalidInput

PASSWORD_VARIABLE = "REDIS_ACL_PASSWORD_"
PREVIOUS = "_PREVIOUS"
PRODUCER_USER = "producer-"

_PRODUCER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_PASSWORDS = re.compile(r"(?P<role>[a-z][a-z0-9]*)_passwords")


def check_producer(name: str) -> str:
    """``name`` if it can be a producer (a user name and a literal part of its key patterns)."""
    if _PRODUCER.fullmatch(name) and password_variable(name).endswith(PREVIOUS):
        raise InvalidInput(
            f"producer name {name!r} is not allowed: its password variable would read as another producer's"
            " previous password during a rotation (a name may not end in 'previous')",
            field="producers",
        )
    if not _PRODUCER.fullmatch(name):
        raise InvalidInput(
            f"producer name {name!r} is not allowed: 1-64 of A-Z a-z 0-9 _ . - (no glob characters, spaces or"
            " colons: the name becomes part of the producer's key patterns)",
            field="producers",
        )
    return name


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can be written literally into key patterns (``INFERQ_KEY_PREFIX``)."""
    if not _PREFIX.fullmatch(prefix):
        raise InvalidInput(
            f"key prefix {prefix!r} cannot be used in ACL key patterns: 1-64 of A-Z a-z 0-9 _ . : - (no glob"
            " characters or braces)",
            field="INFERQ_KEY_PREFIX",
        )
    return prefix


def password_variable(role: str) -> str:
    """The environment variable holding a role's password: ``api`` → ``REDIS_ACL_PASSWORD_API``,
    producer ``billing-eu`` → ``REDIS_ACL_PASSWORD_PRODUCER_BILLING_EU``."""
    return PASSWORD_VARIABLE + re.sub(r"[^A-Za-z0-9]", "_", role).upper()


def hashed(password: str) -> str:
    """A password as an ACL file holds it: ``#`` and its SHA-256 in hex."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def render(template: str, *, prefix: str, producers: Sequence[str], environ: Mapping[str, str]) -> str:
    """The ACL file for ``prefix`` and ``producers``; ``InvalidInput`` for a bad name, an unknown
    placeholder or a missing password (every missing variable named at once)."""
    check_prefix(prefix)
    for name in producers:
        check_producer(name)
    if len(set(producers)) != len(producers):
        raise InvalidInput(f"a producer is listed twice: {', '.join(producers)}", field="producers")
    lines = [line for line in template.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    placeholders = {p for line in lines for p in string.Template(line).get_identifiers()}
    roles = sorted(role for p in placeholders if (role := _role(p)) is not None)
    variables = {role: password_variable(role) for role in roles} | {
        f"{PRODUCER_USER}{name}": password_variable(f"producer_{name}") for name in producers
    }
    if len(set(variables.values())) != len(variables):
        raise InvalidInput("two producer names map to one password variable (- and . read as _)", field="producers")
    missing = [v for v in variables.values() if not environ.get(v)]
    if missing:
        raise InvalidInput(f"no password in {', '.join(missing)}: set it to render the ACL file", missing=missing)
    values = {"prefix": prefix} | {f"{role}_passwords": _hashes(environ, variables[role]) for role in roles}
    rendered: list[str] = []
    for line in lines:
        template_line = string.Template(line)
        if "producer" not in template_line.get_identifiers():
            rendered.append(_substitute(template_line, values))
            continue
        for name in producers:
            own = {"producer": name, "producer_passwords": _hashes(environ, variables[PRODUCER_USER + name])}
            rendered.append(_substitute(template_line, values | own))
    stray = [line for line in rendered if not line.startswith("user ")]
    if stray:
        raise InvalidInput(f"the ACL template has a line that is not a user: {stray[0][:80]!r}")
    return "\n".join(rendered) + "\n"


def _role(placeholder: str) -> str | None:
    """The role whose passwords a placeholder stands for (``api_passwords`` → ``api``); producers apart."""
    match = _PASSWORDS.fullmatch(placeholder)
    if match is None or match["role"] == "producer":
        return None
    return match["role"]


def _hashes(environ: Mapping[str, str], variable: str) -> str:
    """``#<current>`` and, during a rotation, ``#<previous>``: either password is accepted."""
    passwords = [environ[variable], environ.get(variable + PREVIOUS, "")]
    return " ".join(hashed(p) for p in passwords if p)


def _substitute(line: string.Template, values: Mapping[str, str]) -> str:
    try:
        return line.substitute(values)
    except (KeyError, ValueError) as exc:
        raise InvalidInput(f"the ACL template has an unknown or malformed placeholder: {exc}") from None
