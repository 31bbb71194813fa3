"""``inferq redis acl [--producers a,b] [--template FILE] [--out FILE]``: render Redis's ACL file (docs/redis.md)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from inferq.cli.output import say
from inferq.errors import InvalidInput
from inferq.settings import Settings
from inferq.streams.acl import render


def default_template() -> Path:
    """The template shipped in the package (``ops/redis/users.acl.template`` in a checkout links to it),
    so the command renders from a wheel or the container image too."""
    return Path(__file__).resolve().parent.parent / "streams" / "users.acl.template"


def render_acl(settings: Settings, *, producers: list[str] | None, template: Path | None, out: Path | None) -> int:
    """Render the ACL file for ``INFERQ_KEY_PREFIX`` and the producers (``--producers``, else those of
    ``INFERQ_PRODUCERS``), passwords from ``REDIS_ACL_PASSWORD_*``, to ``out`` (mode 0600) or stdout; 0."""
    path = template or default_template()
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the ACL template {path}: {exc.strerror}",
            field="template",
        ) from None
    names = producers if producers is not None else list(settings.queue.producer_tenants())
    acl = render(
        text,
        prefix=settings.services.key_prefix,
        producers=[n.partition("=")[0].strip() for n in names],
        environ=os.environ,
    )
    if out is None:
        print(acl, end="")
        return 0
    try:
        _write_private(out, acl)
    except OSError as exc:
        raise InvalidInput(f"cannot write {out}: {exc.strerror}", field="out") from None
    say(f"wrote {len(acl.splitlines())} Redis users to {out}: load them with ACL LOAD (docs/redis.md)")
    return 0


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, replacing the file in one step."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as sink:
            sink.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
