"""``validate_model``: the upload validator; ``python -m inferq.engine.validate FILE`` runs it in a child process.

The command prints one JSON object on stdout and exits 0 (``{"ok": true, "signature": {...},
"sha256": ..., "size_bytes": ..., "peak_rss_bytes": ...}``) or 2 (``{"ok": false, "error": {"code":
..., "message": ...}}``); any other exit status (a traceback, a crash inside ONNX Runtime, a signal
from a resource limit) means the validator itself failed, not that it judged the model.

``--feature-names`` / ``--class-names`` (JSON lists of strings) are written into the model's
``inferq.*`` metadata props, so the stored artifact carries them: workers read names from the ONNX
file itself. The rewritten model goes to ``--out`` (required with either option); the signature,
sha256 and size printed are those of the rewritten file. ``--max-memory-bytes`` and ``--max-cpu-s``
set RLIMIT_AS and RLIMIT_CPU on this process before the file is read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import msgspec
import onnx

from inferq.contracts.models import ModelSignature
from inferq.contracts.uploads import Refusal, ValidationVerdict
from inferq.engine import metadata
from inferq.engine.runner import Runner
from inferq.engine.signature import first_line, load_proto
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


def with_names(
    model: bytes, *, feature_names: Sequence[str] | None = None, class_names: Sequence[str] | None = None
) -> bytes:
    """``model`` with ``inferq.feature_names`` / ``inferq.class_names`` set (replacing any it had).

    Only the metadata props change; whether the names fit the model is checked when it is validated.
    """
    proto = load_proto(model)
    props = {prop.key: prop.value for prop in proto.metadata_props}
    for key, names in ((metadata.FEATURE_NAMES, feature_names), (metadata.CLASS_NAMES, class_names)):
        if names is not None:
            props[key] = json.dumps(list(names))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    rewritten: bytes = proto.SerializeToString()
    return rewritten


def validate_upload(
    model: bytes,
    *,
    settings: EngineSettings,
    feature_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[bytes, ModelSignature]:
    """The bytes to store (``model`` with the names written in, when given) and their signature.

    Raises what ``validate_model`` raises; class names for a model that is not a classifier are
    ``InvalidModel`` too: nothing would ever show them.
    """
    if feature_names is not None or class_names is not None:
        model = with_names(model, feature_names=feature_names, class_names=class_names)
    signature = validate_model(model, settings=settings)
    if class_names is not None and signature.task != "classifier":
        raise InvalidModel(
            f"class names were given, but the model is a {signature.task} model: class names need a label "
            "output and a [None, n_classes] probabilities output"
        )
    return model, signature


def main(argv: Sequence[str] | None = None) -> int:
    """Validate one file with the engine settings from ``INFERQ_*``; print the verdict as JSON."""
    args = _parser().parse_args(argv)
    _limit(memory_bytes=args.max_memory_bytes, cpu_s=args.max_cpu_s)
    settings = Settings.from_env().engine
    try:
        model = _read(args.file, settings=settings)
        stored, signature = validate_upload(
            model,
            settings=settings,
            feature_names=_names(args.feature_names, "feature"),
            class_names=_names(args.class_names, "class"),
        )
        if stored is not model:
            _write(args.out, stored)
        verdict = ValidationVerdict(
            ok=True,
            signature=signature,
            sha256=hashlib.sha256(stored).hexdigest(),
            size_bytes=len(stored),
            peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        )
    except InferqError as exc:  # InvalidModel, ModelLoadFailed
        verdict = ValidationVerdict(ok=False, error=Refusal(code=exc.code, message=exc.message))
    except MemoryError:
        limit = f" of {args.max_memory_bytes:,} bytes" if args.max_memory_bytes else ""
        message = f"validating the model needs more memory than the validator's limit{limit}"
        verdict = ValidationVerdict(ok=False, error=Refusal(code=InvalidModel.code, message=message))
    except Exception as exc:  # numpy, onnx or ORT choking on this model's contents: the file is the problem
        traceback.print_exc()  # on stderr, which the API logs; the caller gets the first line
        message = f"the model could not be validated: {first_line(exc)}"
        verdict = ValidationVerdict(ok=False, error=Refusal(code=InvalidModel.code, message=message))
    sys.stdout.buffer.write(msgspec.json.encode(verdict) + b"\n")
    sys.stdout.flush()
    return 0 if verdict.ok else REJECTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inferq.engine.validate", description=__doc__)
    parser.add_argument("file", type=Path, help="the ONNX model to check")
    parser.add_argument("--feature-names", help="JSON list of strings, or @FILE: one name per input column")
    parser.add_argument("--class-names", help="JSON list of strings, or @FILE: one name per class, in class order")
    parser.add_argument("--out", type=Path, help="where the model with the names written in goes")
    parser.add_argument("--max-memory-bytes", type=int, default=0, help="RLIMIT_AS for this process (0: none)")
    parser.add_argument("--max-cpu-s", type=int, default=0, help="RLIMIT_CPU for this process (0: none)")
    return parser


def _limit(*, memory_bytes: int, cpu_s: int) -> None:
    """Cap this process: address space (allocations past it fail) and CPU time (SIGXCPU, then SIGKILL);
    no core file (SIGXCPU and a crash would otherwise dump one, as large as the address space)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if cpu_s > 0:
        # NOTE: the hard limit a little above the soft one: SIGXCPU first, SIGKILL if it is ignored.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 2))


def _names(raw: str | None, what: str) -> list[str] | None:
    """A JSON list of strings, given inline or as ``@FILE`` (long lists would overflow one argv string)."""
    if raw is None:
        return None
    try:
        names = json.loads(Path(raw[1:]).read_text(encoding="utf-8") if raw.startswith("@") else raw)
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InvalidModel(f"{what} names must be a JSON list of strings")
    return names


def _read(path: Path, *, settings: EngineSettings) -> bytes:
    try:
        size = path.stat().st_size
        if size > settings.max_model_bytes:  # refused before a byte is read
            raise InvalidModel(f"the model is {size:,} bytes, over the limit of {settings.max_model_bytes:,}")
        return path.read_bytes()
    except OSError as exc:
        raise InvalidModel(f"cannot read {path}: {exc.strerror or exc}") from None


def _write(path: Path | None, model: bytes) -> None:
    if path is None:
        raise InvalidModel("--out is required with --feature-names or --class-names")
    path.write_bytes(model)


if __name__ == "__main__":
    sys.exit(main())
