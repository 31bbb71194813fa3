"""``inferq models upload | promote | rollback | archive``: model management over the HTTP API (admin key).

Like ``inferq jobs submit``: ``--url`` (default ``http://INFERQ_HOST:INFERQ_PORT``), ``--key`` (default
``INFERQ_API_KEY``); the result as JSON on stdout, progress on stderr, an API problem as the error.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferq.cli.output import emit, say
from inferq.errors import Conflict, InferqError, InvalidInput, MalformedRequest
from inferq.settings import Settings

if TYPE_CHECKING:
    from inferq.cli.admin_client import AdminClient

VERBS = ("upload", "promote", "rollback", "archive")
TOTAL = 100


def add_commands(models: Any) -> None:
    """Add the four verbs to ``inferq models``'s subparsers."""
    upload = models.add_parser("upload", help="upload an ONNX file to the API as the model's next version")
    upload.add_argument("file", help="an ONNX file (pickle/joblib files: use `inferq models import`)")
    upload.add_argument("--name", required=True, help="model name (the server assigns the next version)")
    upload.add_argument("--description", help="free text kept with the version")
    upload.add_argument("--feature-names", help="comma-separated feature names, written into the stored model")
    upload.add_argument("--class-names", help="comma-separated class names, in class order")
    upload.add_argument("--alias", help="then route this alias to the new version (pinned, unless --weight)")
    upload.add_argument("--weight", type=int, help="the new version's share of --alias in percent (1-100); "
                        "the alias's other versions keep their proportions in the rest")  # fmt: skip
    promote = models.add_parser("promote", help="pin an alias to a version (100%% of its traffic)")
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    promote.add_argument("--alias", default="default", help="the alias (default: default)")
    rollback = models.add_parser("rollback", help="restore an alias's weights from before its last change")
    rollback.add_argument("name")
    rollback.add_argument("--alias", default="default", help="the alias (default: default)")
    archive = models.add_parser("archive", help="archive a version: no new traffic, artifact kept")
    archive.add_argument("name")
    archive.add_argument("version", type=int)
    for command in (upload, promote, rollback, archive):
        command.add_argument("--url", help="the API's base URL (default http://INFERQ_HOST:INFERQ_PORT)")
        command.add_argument("--key", help="API key with the 'admin' scope (default: INFERQ_API_KEY)")


async def run(args: argparse.Namespace, settings: Settings, *, transport: Any = None) -> int:
    """Run one verb; exit status 0 when the API did what was asked (``transport``: tests' stand-in API)."""
    from inferq.cli.admin_client import AdminClient  # httpx: imported only when a verb runs

    key = args.key or settings.api_key
    if not key:
        raise MalformedRequest("no API key: pass --key or set INFERQ_API_KEY (a key with the 'admin' scope)")
    async with AdminClient(args.url or f"http://{settings.host}:{settings.port}", key=key, transport=transport) as api:
        if args.models_command == "upload":
            emit(await upload(api, args))
        elif args.models_command == "promote":
            emit(await api.put_alias(args.name, args.alias, {"version": args.version}))
            say(f"{args.name}@{args.alias} → version {args.version} (100%)")
        elif args.models_command == "rollback":
            emit(await rollback(api, name=args.name, alias=args.alias))
        else:
            emit(await api.patch_version(args.name, args.version, {"status": "archived"}))
            say(f"{args.name}@{args.version} archived")
    return 0


async def upload(api: AdminClient, args: argparse.Namespace) -> dict[str, Any]:
    """Upload, then route ``--alias`` to the new version; the new version (and the alias) as JSON."""
    file = Path(args.file)
    if not file.is_file():
        raise MalformedRequest(f"no such file: {file}")
    weight = args.weight
    if weight is not None and args.alias is None:
        raise InvalidInput("--weight needs --alias: the alias whose traffic the new version gets a share of")
    if weight is not None and not 1 <= weight <= TOTAL:
        raise InvalidInput(f"--weight must be 1 to {TOTAL} (percent), got {weight}", field="weight")
    if weight is not None and weight < TOTAL:
        await api.get_alias(args.name, args.alias)  # a missing alias fails here, before anything is uploaded
    fields = {"description": args.description}
    for field, raw in (("feature_names", args.feature_names), ("class_names", args.class_names)):
        if raw is not None:
            fields[field] = json.dumps([part.strip() for part in raw.split(",")])
    say(f"uploading {file} ({file.stat().st_size:,} bytes) as the next version of {args.name}")
    version: dict[str, Any] = await api.upload(args.name, file, {k: v for k, v in fields.items() if v is not None})
    number = int(version["version"])
    say(f"registered {args.name}@{number} (sha256 {version['sha256'][:12]}…)")
    if args.alias is None:
        return version
    if weight is None or weight == TOTAL:
        body: dict[str, Any] = {"version": number}
    else:
        current = await api.get_alias(args.name, args.alias)  # read again: the freshest weights to scale
        body = {"weights": {str(v): w for v, w in share(weights_of(current), new=number, weight=weight).items()}}
    try:
        alias = await api.put_alias(args.name, args.alias, body)
    except InferqError as exc:  # the version is registered: a script must still learn its number
        exc.details.setdefault("version", number)
        say(f"{args.name}@{number} is registered, but moving {args.alias!r} to it was refused")
        raise
    say(f"{args.name}@{args.alias} → {json.dumps(alias.get('weights'))}")
    return {**version, "alias": alias}


async def rollback(api: AdminClient, *, name: str, alias: str) -> dict[str, Any]:
    """Put back the weights the alias had before its last change."""
    current = await api.get_alias(name, alias)
    previous = current.get("previous")
    if not previous:
        raise Conflict(f"alias {alias!r} of model {name!r} has no previous weights to roll back to", alias=alias)
    restored: dict[str, Any] = await api.put_alias(name, alias, {"weights": previous})
    say(f"{name}@{alias}: {json.dumps(current.get('weights'))} → {json.dumps(restored.get('weights'))}")
    return restored


def share(others: Mapping[int, int], *, new: int, weight: int) -> dict[int, int]:
    """``new`` gets ``weight`` percent; ``others`` share the rest in their proportions, rounded to whole
    percents by largest remainder (ties: the higher version); a version rounded to 0 leaves the alias."""
    if weight >= TOTAL:
        return {new: TOTAL}
    current = {v: w for v, w in others.items() if v != new and w > 0}
    if not current:
        raise InvalidInput(f"the alias routes no traffic yet: give the new version --weight {TOTAL}", field="weight")
    rest, total = TOTAL - weight, sum(current.values())
    exact = {v: divmod(rest * w, total) for v, w in current.items()}  # integers: remainders compare exactly
    scaled = {v: quotient for v, (quotient, _) in exact.items()}
    by_remainder = sorted(current, key=lambda v: (exact[v][1], v), reverse=True)
    for v in by_remainder[: rest - sum(scaled.values())]:
        scaled[v] += 1
    return {**{v: w for v, w in sorted(scaled.items()) if w > 0}, new: weight}


def weights_of(alias: Mapping[str, Any]) -> dict[int, int]:
    """An alias body's ``weights`` (JSON object keys are strings) by version number."""
    return {int(v): int(w) for v, w in (alias.get("weights") or {}).items()}
