"""``inferq predict``: raw input → pipeline → output, in this process, with no server."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec

from inferq.cli.output import emit
from inferq.cli.runtime import Runtime, opened
from inferq.contracts.models import ModelRef
from inferq.errors import InvalidInput
from inferq.settings import Settings


async def predict(settings: Settings, *, model: str, raw_input: str) -> int:
    """Resolve ``model`` (or load an ``.onnx`` path), run the inputs, print the predictions."""
    from inferq.engine import ModelCache, Runner
    from inferq.engine import predict as engine_predict

    payload = parse_input(raw_input)
    local = Path(model)
    if local.suffix == ".onnx" and local.is_file():
        runner = Runner.load(local.read_bytes(), settings=settings.engine)
        try:
            predictions = engine_predict(runner, payload)
        finally:
            runner.close()
        emit({"model": str(local), "predictions": predictions})
        return 0
    ref = ModelRef.parse(model)
    async with opened(settings) as rt:
        version = await rt.registry.resolve(ref)
        onnx = await _artifact(rt, version.sha256)
    cache = ModelCache(settings=settings.engine)
    runner = cache.get(version.sha256, lambda: onnx)
    emit({"model": version.model, "version": version.version, "predictions": engine_predict(runner, payload)})
    return 0


def parse_input(raw: str) -> Any:
    """The ``--input`` value: JSON text, ``@FILE`` holding JSON, or ``@-`` for stdin."""
    if raw.startswith("@"):
        source = raw[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot read input file {source!r}: {exc.strerror}", field="input") from None
        except UnicodeDecodeError:
            raise InvalidInput(f"input file {source!r} is not UTF-8 text", field="input") from None
    else:
        text = raw
    try:
        data = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"--input is not valid JSON: {exc}", field="input") from None
    except RecursionError:
        raise InvalidInput("--input nests too deeply", field="input") from None
    if isinstance(data, dict) and set(data) == {"inputs"}:
        return data["inputs"]  # the HTTP body shape {"inputs": [...]} works here too
    return data


async def _artifact(rt: Runtime, sha256: str) -> bytes:
    from inferq.store.artifacts import fetch

    return await fetch(rt.sessions, rt.artifacts, sha256)
