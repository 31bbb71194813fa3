"""Entry point: parse the command line, read Settings once, run one command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from inferq.cli.output import fail, say
from inferq.errors import InferqError
from inferq.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferq", description="Queue-first inference backend.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("migrate", help="upgrade the Postgres schema to the latest revision")

    serve = commands.add_parser("serve", help="run the HTTP API (Litestar on uvicorn)")
    serve.add_argument("--host", help="bind address (default INFERQ_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default INFERQ_PORT, 8000)")
    serve.add_argument("--workers", type=int, default=1, help="API processes")

    worker = commands.add_parser("worker", help="run inference workers for some or all model versions")
    chosen = worker.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--all", action="store_true", help="every active version; picks up new ones")
    chosen.add_argument("--models", help="comma-separated model@version list, e.g. wine@2,iris@1")
    worker.add_argument("--processes", type=int, default=1, help="worker processes (supervised)")

    dlq = commands.add_parser("dlq", help="dead-lettered requests").add_subparsers(
        dest="dlq_command", required=True, metavar="SUBCOMMAND"
    )
    for verb, text in (("list", "list entries"), ("inspect", "show one entry"), ("replay", "re-enqueue"),
                       ("purge", "delete")):  # fmt: skip
        cmd = dlq.add_parser(verb, help=f"{text} of a partition's dead-letter stream")
        cmd.add_argument("partition", help="model@version")
        if verb in ("inspect", "replay", "purge"):
            cmd.add_argument("ids", nargs="*", help="entry ids (replay/purge: none = all)")

    commands.add_parser("tasks", help="run the task worker: webhook deliveries, the reconciler, retention")
    webhooks = commands.add_parser("webhooks", help="webhook signing secrets").add_subparsers(
        dest="webhooks_command", required=True, metavar="SUBCOMMAND"
    )
    secret = webhooks.add_parser("secret", help="print a tenant's signing secret as JSON (made on first use)")
    secret.add_argument("--tenant", default="default", help="tenant id (default: default)")
    secret.add_argument("--rotate", action="store_true", help="a new secret; the old one keeps signing for a day")

    jobs = commands.add_parser("jobs", help="batch jobs over the HTTP API").add_subparsers(
        dest="jobs_command", required=True, metavar="SUBCOMMAND"
    )
    submit = jobs.add_parser("submit", help="upload a JSONL or CSV file as a batch job (streamed)")
    submit.add_argument(
        "file", help='JSONL ({"custom_id", "inputs"} per line) or CSV (header; custom_id column optional)'
    )
    submit.add_argument("--model", required=True, help="name, name@VERSION or name@ALIAS")
    submit.add_argument("--wait", action="store_true", help="follow the job (progress on stderr) until it ends")
    submit.add_argument("--url", help="the API's base URL (default http://INFERQ_HOST:INFERQ_PORT)")
    submit.add_argument("--key", help="API key with the 'jobs' scope (default: INFERQ_API_KEY)")
    submit.add_argument("--idempotency-key", help="a retried submission with the same key is the same job")
    submit.add_argument("--webhook", help="URL to notify when the job ends (signed, retried)")
    submit.add_argument("--completion-window", help="the job's deadline: seconds or 30m / 24h / 7d")

    keys = commands.add_parser("keys", help="API keys (Postgres; the server's pepper)").add_subparsers(
        dest="keys_command", required=True, metavar="SUBCOMMAND"
    )
    create = keys.add_parser("create", help="make a key and print it as JSON (its secret is shown only here)")
    create.add_argument("--tenant", required=True, help="tenant id (created when new)")
    create.add_argument("--scopes", required=True, help="comma-separated: predict, jobs, admin")
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--expires-in", help="the key expires after: seconds or 30m / 24h / 90d")
    listing = keys.add_parser("list", help="keys as JSON (never their secrets)")
    listing.add_argument("--tenant", help="one tenant's keys")
    revoke = keys.add_parser("revoke", help="revoke a key now (refused everywhere within INFERQ_KEY_CACHE_S)")
    revoke.add_argument("id", help="the key's id (the 16 hex after iq_)")
    rotate = keys.add_parser("rotate", help="a new key like this one; the old one works for --grace more")
    rotate.add_argument("id", help="the key's id")
    rotate.add_argument("--grace", default="24h", help="how long the old key keeps working (default 24h)")
    tenants = commands.add_parser("tenants", help="tenants' limits").add_subparsers(
        dest="tenants_command", required=True, metavar="SUBCOMMAND"
    )
    limits = tenants.add_parser("limits", help="show a tenant's limits, or set them (per API key)")
    limits.add_argument("tenant")
    limits.add_argument("--rate-per-s", type=float, help="sustained requests per second")
    limits.add_argument("--burst", type=int, help="requests at once above the rate")
    limits.add_argument("--concurrency", type=int, help="predictions in flight")
    limits.add_argument("--max-rows", type=int, help="rows per prediction request")
    limits.add_argument("--max-elements", type=int, help="values per prediction request")
    limits.add_argument("--reset", action="store_true", help="back to the server's defaults (then apply the rest)")

    redis = commands.add_parser("redis", help="Redis configuration").add_subparsers(
        dest="redis_command", required=True, metavar="SUBCOMMAND"
    )
    acl = redis.add_parser("acl", help="render the ACL file: one Redis user per role (docs/redis.md)")
    acl.add_argument("--producers", help="comma-separated direct producers (default: those of INFERQ_PRODUCERS)")
    acl.add_argument("--template", help="the template (default: ops/redis/users.acl.template)")
    acl.add_argument("--out", help="write here (mode 0600) instead of stdout")

    dev = commands.add_parser("dev", help="run the whole system locally with demo models")
    dev.add_argument("--exit", action="store_true", help="set everything up, print the tour, then exit")

    predict = commands.add_parser("predict", help="run a prediction in-process (no server)")
    predict.add_argument("model", help="name, name@VERSION, name@ALIAS, or a path to an .onnx file")
    predict.add_argument("--input", required=True, help="JSON inputs, or @FILE to read them from a file")

    models = commands.add_parser("models", help="manage registered models").add_subparsers(
        dest="models_command", required=True, metavar="SUBCOMMAND"
    )
    imp = models.add_parser("import", help="register a local .onnx or scikit-learn joblib/pickle file")
    imp.add_argument("file", help="an ONNX file, or a fitted scikit-learn estimator saved with joblib/pickle")
    imp.add_argument("--name", required=True, help="model name (the server assigns the next version)")
    imp.add_argument("--alias", action="append", default=[], help="point this alias at the new version")
    imp.add_argument("--description", help="free text kept with the version")
    imp.add_argument("--feature-names", help="comma-separated feature names (scikit-learn files)")
    imp.add_argument("--class-names", help="comma-separated class names (scikit-learn classifiers)")
    models.add_parser("list", help="list models, versions and aliases")
    show = models.add_parser("show", help="one model with its versions, signatures and aliases")
    show.add_argument("name")
    from inferq.cli import model_admin

    model_admin.add_commands(models)  # upload, promote, rollback, archive: over HTTP
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``inferq`` command; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        say(f"inferq: {exc}")
        return 2
    try:
        if args.command == "serve":  # uvicorn runs its own event loop (uvloop), in one or more processes
            from inferq.cli.serve import run_serve

            return run_serve(settings, host=args.host, port=args.port, processes=args.workers)
        return asyncio.run(_dispatch(args, settings))
    except InferqError as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return 130


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    # Commands import their own modules so `inferq --help` stays fast and light.
    if args.command == "migrate":
        from inferq.cli.runtime import migrate

        return await migrate(settings)
    if args.command == "dev":
        from inferq.cli.dev import run_dev

        return await run_dev(settings, exit_after_setup=args.exit)
    if args.command == "worker":
        from inferq.cli.worker import run_worker

        return await run_worker(settings, all_models=args.all, models=_split(args.models), processes=args.processes)
    if args.command == "dlq":
        from inferq.cli.dlq import run_dlq

        return await run_dlq(settings, verb=args.dlq_command, partition=args.partition, ids=getattr(args, "ids", []))
    if args.command == "tasks":
        from inferq.cli.tasks import run_tasks_command

        return await run_tasks_command(settings)
    if args.command == "webhooks":
        from inferq.cli.tasks import print_secret

        return await print_secret(settings, tenant=args.tenant, rotate=args.rotate)
    if args.command == "redis":
        from pathlib import Path

        from inferq.cli.redis import render_acl

        producers = None if args.producers is None else [p for p in args.producers.split(",") if p.strip()]
        return render_acl(
            settings,
            producers=producers,
            template=Path(args.template) if args.template else None,
            out=Path(args.out) if args.out else None,
        )
    if args.command == "jobs":
        from pathlib import Path

        from inferq.cli.jobs import submit

        return await submit(
            url=args.url or f"http://{settings.host}:{settings.port}",
            key=args.key or settings.api_key,
            file=Path(args.file),
            model=args.model,
            wait=args.wait,
            idempotency_key=args.idempotency_key,
            webhook=args.webhook,
            completion_window=args.completion_window,
        )
    if args.command == "keys":
        from inferq.cli import keys as key_commands

        if args.keys_command == "create":
            return await key_commands.create_key(
                settings,
                tenant=args.tenant,
                scopes=_split(args.scopes) or [],
                name=args.name,
                expires_in=args.expires_in,
            )
        if args.keys_command == "list":
            return await key_commands.list_keys(settings, tenant=args.tenant)
        if args.keys_command == "revoke":
            return await key_commands.revoke_key(settings, key_id=args.id)
        return await key_commands.rotate_key(settings, key_id=args.id, grace=args.grace)
    if args.command == "tenants":
        from inferq.cli.keys import tenant_limits

        changes = {f: getattr(args, f) for f in ("rate_per_s", "burst", "concurrency", "max_rows", "max_elements")}
        return await tenant_limits(settings, tenant=args.tenant, changes=changes, reset=args.reset)
    if args.command == "predict":
        from inferq.cli.predict import predict

        return await predict(settings, model=args.model, raw_input=args.input)
    from inferq.cli import model_admin, models

    if args.models_command in model_admin.VERBS:
        return await model_admin.run(args, settings)
    if args.models_command == "import":
        return await models.import_file(
            settings,
            path=args.file,
            name=args.name,
            aliases=args.alias,
            description=args.description,
            feature_names=_split(args.feature_names),
            class_names=_split(args.class_names),
        )
    if args.models_command == "list":
        return await models.list_models(settings)
    return await models.show_model(settings, name=args.name)


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",")] if value else None


if __name__ == "__main__":
    sys.exit(main())
