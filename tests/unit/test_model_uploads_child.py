"""The validator child as the API runs it: names written into the stored model, bad models refused, and its
memory, CPU and wall-clock limits (a model that would take 2.4 GB or run forever is refused)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest

from inferq.api.model_uploads.child import ChildLimits, run_validator
from inferq.engine import read_signature
from inferq.errors import InferqError, InvalidModel, ServiceUnavailable

from . import upload_models as models

MB = 1024 * 1024
LIMITS = ChildLimits(timeout_s=120, cpu_s=60, memory_bytes=ChildLimits.default_memory(MB), max_model_bytes=MB)


def write(tmp_path: Path, data: bytes, name: str = "upload.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def test_names_are_written_into_the_stored_model(tmp_path: Path) -> None:
    source, out = write(tmp_path, models.unnamed_classifier()), tmp_path / "stored.onnx"
    features, classes = ["sl", "sw", "pl", "pw"], ["setosa", "versicolor", "virginica"]
    accepted = await run_validator(source, limits=LIMITS, feature_names=features, class_names=classes, out=out)
    assert (accepted.signature.feature_names, accepted.signature.class_names) == (
        ("sl", "sw", "pl", "pw"),
        ("setosa", "versicolor", "virginica"),
    )
    stored = out.read_bytes()
    assert read_signature(stored) == accepted.signature  # what a worker reads from the artifact
    assert accepted.size_bytes == len(stored)
    props = {p.key: p.value for p in onnx.load_model_from_string(stored).metadata_props}
    assert props["inferq.class_names"] == '["setosa", "versicolor", "virginica"]'
    assert accepted.signature.classes == (0, 1, 2)


async def test_without_names_the_file_is_not_rewritten(tmp_path: Path) -> None:
    import hashlib

    data = models.unnamed_classifier()
    accepted = await run_validator(write(tmp_path, data), limits=LIMITS)
    assert accepted.sha256 == hashlib.sha256(data).hexdigest()
    assert accepted.signature.class_names is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload.onnx"]


@pytest.mark.parametrize(
    ("build", "names", "message"),
    [
        (lambda: models.truncated(models.unnamed_classifier()), {}, r"^not a valid ONNX model: "),
        (models.fixed_batch, {}, r"^input 'x' has no dynamic batch dimension \(shape \[1, 4\]\)"),
        (models.external_data, {}, r"^initializer 'w' uses external data; embed the weights instead$"),
        (models.custom_domain, {}, r"^custom operator domain 'com.evil' is not supported$"),
        (lambda: b"\x08\x07" + b"\xff" * 30, {}, r"^not a valid ONNX model: "),
        (models.unnamed_classifier, {"feature_names": ["a", "b"]}, r"has 2 names but input 'input' has 4 columns"),
        (models.unnamed_classifier, {"class_names": ["a", "b"]}, r"class_names has 2 names for 3 classes"),
        (models.identity, {"class_names": ["a"]}, r"^class names were given, but the model is a regressor model"),
        (models.unnamed_classifier, {"class_names": ["a", "a", "b"]}, r"class_names has duplicate names: 'a'"),
    ],
)
async def test_bad_models_are_refused_with_the_reason(
    tmp_path: Path, build: Any, names: dict[str, list[str]], message: str
) -> None:
    out = tmp_path / "stored.onnx" if names else None
    with pytest.raises(InvalidModel, match=message) as caught:
        await run_validator(write(tmp_path, build()), limits=LIMITS, out=out, **names)
    assert caught.value.code == "invalid_model"


async def test_a_model_over_the_size_cap_is_refused_by_the_child_too(tmp_path: Path) -> None:
    data = models.big_initializer(2 * MB)
    with pytest.raises(InvalidModel, match=r"^the model is [\d,]+ bytes, over the limit of 1,048,576$"):
        await run_validator(write(tmp_path, data), limits=LIMITS)


async def test_a_model_that_needs_more_memory_than_the_limit_is_refused(tmp_path: Path) -> None:
    # NOTE: 2.4 GB at the warm-up run (accepted, at 2.6 GB peak RSS, when the child has no limit);
    # the default limit for a 1 MB cap is 1 GiB + 6 MB of address space.
    with pytest.raises(InvalidModel, match=r"Failed to allocate memory|more memory than|crashed") as caught:
        await run_validator(write(tmp_path, models.memory_bomb()), limits=LIMITS)
    assert caught.value.code == "invalid_model"


async def test_a_model_that_runs_past_the_cpu_limit_is_refused(tmp_path: Path) -> None:
    limits = ChildLimits(timeout_s=300, cpu_s=3, memory_bytes=LIMITS.memory_bytes, max_model_bytes=MB)
    with pytest.raises(InvalidModel, match=r"^validating the model took more than 3 s of CPU time") as caught:
        await run_validator(write(tmp_path, models.cpu_bomb()), limits=limits)
    assert caught.value.details == {"signal": "SIGXCPU"}


async def test_a_validator_past_its_timeout_is_killed_with_its_process_group(tmp_path: Path) -> None:
    limits = ChildLimits(timeout_s=1.0, cpu_s=60, memory_bytes=LIMITS.memory_bytes, max_model_bytes=MB)
    source = write(tmp_path, models.cpu_bomb())
    with pytest.raises(ServiceUnavailable, match=r"^the model validator did not finish within 1 s") as caught:
        await run_validator(source, limits=limits)
    assert caught.value.details == {"retry_after_s": 1.0}
    assert _processes_with(str(source)) == []  # killed and reaped: nothing keeps running


async def test_a_crash_is_refused_and_a_broken_validator_is_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path, models.identity())
    crash = _script(tmp_path / "crash", "kill -SEGV $$")
    monkeypatch.setattr(sys, "executable", str(crash))
    with pytest.raises(InvalidModel, match=r"^the model crashed ONNX Runtime in the validator \(SIGSEGV\)"):
        await run_validator(source, limits=LIMITS)
    monkeypatch.setattr(sys, "executable", str(_script(tmp_path / "broken", "echo Traceback >&2; exit 1")))
    with pytest.raises(InferqError, match=r"^the model validator failed \(exit status 1\)") as caught:
        await run_validator(source, limits=LIMITS)
    assert caught.value.code == "internal_error"


async def test_the_child_gets_no_secrets_and_its_own_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "seen"
    refuse = '{"ok": false, "error": {"code": "invalid_model", "message": "nope"}}'
    spy = _script(tmp_path / "spy", f"env > {seen}/env; pwd > {seen}/pwd; echo '{refuse}'; exit 2")
    seen.mkdir()
    (tmp_path / "work").mkdir()
    source = write(tmp_path / "work", models.identity())
    monkeypatch.setenv("INFERQ_DATABASE_URL", "postgresql://inferq:s3cret@db/inferq")
    monkeypatch.setenv("INFERQ_API_KEY_PEPPER", "pepper-" + "x" * 40)
    monkeypatch.setattr(sys, "executable", str(spy))
    with pytest.raises(InvalidModel, match=r"^nope$"):
        await run_validator(source, limits=LIMITS)
    env = dict(line.split("=", 1) for line in (seen / "env").read_text().splitlines() if "=" in line)
    assert {k for k in env if k.startswith("INFERQ_")} == {
        "INFERQ_MAX_MODEL_BYTES",
        "INFERQ_ENGINE_THREADS",
        "INFERQ_ENGINE_INTER_OP_THREADS",
    }
    assert env["INFERQ_MAX_MODEL_BYTES"] == str(MB)
    assert "s3cret" not in (seen / "env").read_text()
    assert (seen / "pwd").read_text().strip() == str(tmp_path / "work")


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o700)
    return path


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found
