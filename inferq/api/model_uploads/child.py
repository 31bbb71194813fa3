"""Run ``python -m inferq.engine.validate`` in a child process: limited, timed, never blocking the loop.

The API never imports the engine (ONNX and ONNX Runtime stay out of its process): an uploaded file
is parsed and loaded only in a child with its own address-space and CPU limits (RLIMIT_AS and
RLIMIT_CPU, set by the child on itself before it reads the file), in its own session so a timeout
kills its whole process group, in a private working directory, and with an environment holding
nothing but what it needs (no database URL, no pepper).

    outcome                                  error               status
    verdict ok                               (the signature)
    verdict refused (bad ONNX, load fails)   invalid_model       422   the same file fails every time
    killed by its CPU or memory limit,       invalid_model       422   the model is too heavy to accept
      or a crash (signal) inside ORT
    wall-clock timeout                       service_unavailable 503   CPU time was left: the machine was busy
    exit status without a verdict            internal_error      500   the validator itself is broken
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import structlog

from inferq.contracts.models import ModelSignature
from inferq.contracts.uploads import ValidationVerdict
from inferq.errors import InferqError, InvalidModel, ServiceUnavailable

log = structlog.get_logger(__name__)

GIB = 1024**3
# The directory holding the ``inferq`` package: the child imports the same code as this process.
_PACKAGE_ROOT = Path(__file__).resolve().parents[3]
_PASSED_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "HOME", "SYSTEMROOT")
_verdict = msgspec.json.Decoder(ValidationVerdict)


@dataclass(frozen=True)
class Accepted:
    """The validator accepted the file: what to register, and the sha256 of the bytes it checked."""

    signature: ModelSignature
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ChildLimits:
    """The validator child's limits, and the engine settings it validates with."""

    timeout_s: float
    cpu_s: int
    memory_bytes: int
    max_model_bytes: int
    intra_op_threads: int = 1
    inter_op_threads: int = 1

    @staticmethod
    def default_memory(max_model_bytes: int) -> int:
        """Room for the interpreter and ONNX Runtime (~0.5 GiB virtual) and a few copies of the model:
        the bytes read, the parsed protobuf, the checker's copy, the session's initializers."""
        return GIB + 6 * max_model_bytes


async def run_validator(
    model: Path,
    *,
    limits: ChildLimits,
    feature_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    out: Path | None = None,
) -> Accepted:
    """The child's verdict on ``model`` when it accepts it; else the error the table above names."""
    # NOTE: -P: the upload's directory (the child's cwd) never goes on sys.path.
    argv = [sys.executable, "-P", "-m", "inferq.engine.validate", str(model),
            "--max-memory-bytes", str(limits.memory_bytes), "--max-cpu-s", str(limits.cpu_s)]  # fmt: skip
    for option, names in (("feature", feature_names), ("class", class_names)):
        if names is not None:  # NOTE: in a file: one argv string is capped at 128 KiB, escaped names grow 2-6x
            listed = model.parent / f"{option}_names.json"
            listed.write_text(json.dumps(list(names)), encoding="utf-8")
            argv += [f"--{option}-names", f"@{listed}"]
    if out is not None:
        argv += ["--out", str(out)]
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=model.parent,
        env=_environment(limits),
        start_new_session=True,  # its own process group: a timeout kills whatever it started too
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=limits.timeout_s)
    except TimeoutError:
        log.warning("model.validate_timeout", timeout_s=limits.timeout_s, pid=proc.pid)
        raise ServiceUnavailable(
            f"the model validator did not finish within {limits.timeout_s:g} s (INFERQ_MODEL_VALIDATE_TIMEOUT_S) "
            "while it still had CPU time left: the server is busy; try again later",
            retry_after_s=max(1.0, limits.timeout_s / 4),
        ) from None
    finally:
        if proc.returncode is None:  # timed out, or the request was cancelled: no orphan keeps running
            _kill_group(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    status = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    return _judge(status, stdout, stderr, limits=limits, elapsed_ms=elapsed_ms)


def _judge(status: int, stdout: bytes, stderr: bytes, *, limits: ChildLimits, elapsed_ms: float) -> Accepted:
    tail = stderr[-2000:].decode(errors="replace").strip()
    if status in (0, 2):
        try:
            verdict = _verdict.decode(stdout.strip().splitlines()[-1] if stdout.strip() else b"")
        except (msgspec.DecodeError, IndexError):
            verdict = None
        if verdict is not None and verdict.ok and verdict.signature and verdict.sha256 and verdict.size_bytes:
            log.info("model.validated", elapsed_ms=elapsed_ms, peak_rss_bytes=verdict.peak_rss_bytes)
            return Accepted(signature=verdict.signature, sha256=verdict.sha256, size_bytes=verdict.size_bytes)
        if verdict is not None and verdict.error is not None:
            log.info("model.refused", code=verdict.error.code, error=verdict.error.message, elapsed_ms=elapsed_ms)
            raise InvalidModel(verdict.error.message, validator_code=verdict.error.code)
    if status < 0:
        log.warning("model.validator_killed", signal=_signal_name(-status), stderr=tail, elapsed_ms=elapsed_ms)
        raise InvalidModel(_killed_message(-status, limits), signal=_signal_name(-status))
    log.error("model.validator_failed", status=status, stderr=tail, stdout=stdout[-500:].decode(errors="replace"))
    raise InferqError(f"the model validator failed (exit status {status}); the server log has its output")


def _killed_message(signum: int, limits: ChildLimits) -> str:
    if signum == signal.SIGXCPU:
        return (
            f"validating the model took more than {limits.cpu_s} s of CPU time (INFERQ_MODEL_VALIDATE_CPU_S); "
            "a model this slow to load is refused"
        )
    if signum == signal.SIGKILL:
        return (
            f"the validator was killed while loading the model: it needs more than {limits.cpu_s} s of CPU time "
            f"or more memory than {limits.memory_bytes:,} bytes (INFERQ_MODEL_VALIDATE_MEMORY_BYTES)"
        )
    return (
        f"the model crashed ONNX Runtime in the validator ({_signal_name(signum)}), with a memory limit of "
        f"{limits.memory_bytes:,} bytes; it cannot be served"
    )


def _environment(limits: ChildLimits) -> dict[str, str]:
    """What the child may see: paths and locale, and the engine settings it validates with."""
    env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    env["INFERQ_MAX_MODEL_BYTES"] = str(limits.max_model_bytes)
    env["INFERQ_ENGINE_THREADS"] = str(limits.intra_op_threads)
    env["INFERQ_ENGINE_INTER_OP_THREADS"] = str(limits.inter_op_threads)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
