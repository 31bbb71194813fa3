"""``inferq dev``: the whole system on one machine, with demo models, until Ctrl-C."""

from __future__ import annotations

import asyncio
import shlex
import signal

from sqlalchemy import text

from inferq.cli import demo
from inferq.cli.models import cache_locally
from inferq.cli.output import say
from inferq.cli.runtime import Runtime, opened
from inferq.errors import ModelNotFound
from inferq.settings import Settings

SEED_LOCK = 0x696E666572710001  # "inferq" + 1: serialises concurrent `inferq dev` seeding
EXAMPLE_WINE = (
    '[{"alcohol": 13.2, "malic_acid": 1.78, "ash": 2.14, "alcalinity_of_ash": 11.2, "magnesium": 100, '
    '"total_phenols": 2.65, "flavanoids": 2.76, "nonflavanoid_phenols": 0.26, "proanthocyanins": 1.28, '
    '"color_intensity": 4.38, "hue": 1.05, "od280_od315_of_diluted_wines": 3.4, "proline": 1050}]'
)


async def run_dev(settings: Settings, *, exit_after_setup: bool = False) -> int:
    """Start services (embedded when unset), migrate, seed the demo models, print a tour, wait."""
    async with opened(settings, redis=True) as rt:
        await seed_demo_models(rt)
        await _print_tour(rt)
        if exit_after_setup:
            return 0
        say("inferq dev is running; Ctrl-C stops everything.")
        await _wait_for_signal()
    return 0


async def seed_demo_models(rt: Runtime) -> None:
    """Register every demo version that is missing (idempotent; one seeder at a time)."""
    async with rt.engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SEED_LOCK})
        try:
            await _seed(rt)
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SEED_LOCK})


async def _seed(rt: Runtime) -> None:
    root = rt.artifacts.root / "demo"
    root.mkdir(parents=True, exist_ok=True)
    for name, version in demo.DEMO_MODELS:
        if await _has_version(rt, name, version):
            continue
        say(f"training demo model {name}@{version} …")
        model = demo.build(name, version)
        (root / f"{name}-{version}.onnx").write_bytes(model.onnx)
        from inferq.engine import read_signature

        registered = await rt.registry.register(
            name=name,
            model=model.onnx,
            signature=read_signature(model.onnx),
            description=model.description,
            aliases=model.aliases,
        )
        cache_locally(rt, registered.sha256, model.onnx)
        if registered.version != version:
            say(f"note: {name} already had other versions; demo {name}@{version} is {registered.key}")


async def _has_version(rt: Runtime, name: str, version: int) -> bool:
    try:
        info = await rt.registry.get_model(name)
    except ModelNotFound:
        return False
    return any(v.version == version for v in info.versions)


async def _print_tour(rt: Runtime) -> None:
    say("\nregistered models:")
    for model in await rt.registry.list_models():
        aliases = ", ".join(f"@{a.name}→{_weights(a.weights)}" for a in model.aliases)
        versions = ", ".join(f"{v.version} ({v.signature.task}, {v.status})" for v in model.versions)
        say(f"  {model.name:<10} versions {versions}; aliases {aliases}")
    say(f"\nservices: redis {rt.services.redis_url}\n          postgres {rt.services.database_url}")
    say("\ntry, in another terminal:")
    say(f"  .venv/bin/inferq predict wine@2 --input {shlex.quote(EXAMPLE_WINE)}")
    say("  .venv/bin/inferq predict iris --input '[[5.1, 3.5, 1.4, 0.2]]'")
    say("  .venv/bin/inferq models show wine\n")


def _weights(weights: dict[int, int]) -> str:
    if len(weights) == 1:
        return str(next(iter(weights)))
    return "{" + ", ".join(f"{v}: {w}%" for v, w in sorted(weights.items())) + "}"


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
