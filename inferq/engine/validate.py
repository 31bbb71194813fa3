"""``validate_model``: the upload validator; ``python -m inferq.engine.validate FILE`` runs it in a child process.

The command prints one JSON object on stdout and exits 0 (``{"ok": true, "signature": {...}}``)
or 2 (``{"ok": false, "error": {"code": ..., "message": ...}}``); any other exit status (a
traceback, a crash inside ONNX Runtime) means the validator itself failed, not the model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from inferq.contracts.models import ModelSignature
from inferq.engine.runner import Runner
from inferq.errors import InferqError, InvalidModel
from inferq.settings import EngineSettings, Settings

REJECTED = 2


def validate_model(model: bytes, *, settings: EngineSettings) -> ModelSignature:
    """Check that ``model`` can be registered: its signature, then a real load and warm-up run.

    Raises ``InvalidModel`` (oversized, not ONNX, unsupported signature, external data, custom
    operators) or ``ModelLoadFailed`` (ONNX Runtime cannot load it or its batch-1 warm-up fails).
    """
    runner = Runner.load(model, settings=settings)
    try:
        return runner.signature
    finally:
        runner.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Validate one file with the engine settings from ``INFERQ_*``; print the verdict as JSON."""
    parser = argparse.ArgumentParser(prog="python -m inferq.engine.validate", description=__doc__)
    parser.add_argument("file", type=Path, help="the ONNX model to check")
    args = parser.parse_args(argv)
    settings = Settings.from_env().engine
    try:
        model = _read(args.file)
        verdict: dict[str, object] = {"ok": True, "signature": validate_model(model, settings=settings)}
    except InferqError as exc:
        verdict = {"ok": False, "error": {"code": exc.code, "message": exc.message}}
    sys.stdout.buffer.write(msgspec.json.encode(verdict) + b"\n")
    sys.stdout.flush()
    return 0 if verdict["ok"] else REJECTED


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidModel(f"cannot read {path}: {exc.strerror or exc}") from None


if __name__ == "__main__":
    sys.exit(main())
