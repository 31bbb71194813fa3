"""``validate_model`` and ``python -m inferq.engine.validate``: the upload validator's verdicts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from onnx import TensorProto, helper

from inferq.contracts.models import ModelSignature
from inferq.engine import read_signature
from inferq.engine.validate import validate_model
from inferq.errors import InvalidModel, ModelLoadFailed
from inferq.settings import EngineSettings

SETTINGS = EngineSettings()


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    signature: ModelSignature | None = None
    error: dict[str, str] | None = None


def run_validator(path: Path, **env: str) -> tuple[int, Verdict]:
    """Run the module in a child process, with no INFERQ_* variables but ``env``'s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")} | env
    done = subprocess.run(
        [sys.executable, "-m", "inferq.engine.validate", str(path)],
        capture_output=True, env=clean, timeout=60, check=False,
    )  # fmt: skip
    assert done.stderr == b""
    return done.returncode, msgspec.json.decode(done.stdout, type=Verdict)


def add_int_model(onnx_model: Any) -> bytes:
    """Passes ONNX's checker, fails ONNX Runtime's type check at load."""
    model: bytes = onnx_model(
        [("x", TensorProto.FLOAT, [None, 2])],
        [("y", TensorProto.FLOAT, [None, 2])],
        [
            helper.make_node("Constant", [], ["two"], value=helper.make_tensor("two", TensorProto.INT64, [], [2])),
            helper.make_node("Add", ["x", "two"], ["y"]),
        ],
    )
    return model


def test_a_good_model_returns_its_signature(iris_lr: Any) -> None:
    assert validate_model(iris_lr.onnx, settings=SETTINGS) == read_signature(iris_lr.onnx)


def test_bad_models_raise_typed_errors(iris_lr: Any, onnx_model: Any) -> None:
    with pytest.raises(InvalidModel, match=r"^not a valid ONNX model: "):
        validate_model(b"not onnx", settings=SETTINGS)
    with pytest.raises(InvalidModel, match=r"^the model is [\d,]+ bytes, over the limit of 100$"):
        validate_model(iris_lr.onnx, settings=EngineSettings(max_model_bytes=100))
    with pytest.raises(ModelLoadFailed, match=r"^ONNX Runtime could not load the model: .*Type Error"):
        validate_model(add_int_model(onnx_model), settings=SETTINGS)


def test_the_module_prints_the_signature_of_a_good_file(iris_lr: Any, tmp_path: Path) -> None:
    path = tmp_path / "iris.onnx"
    path.write_bytes(iris_lr.onnx)
    status, verdict = run_validator(path)
    assert status == 0
    assert verdict == Verdict(ok=True, signature=read_signature(iris_lr.onnx))


def test_the_module_prints_the_error_for_a_bad_file(onnx_model: Any, iris_lr: Any, tmp_path: Path) -> None:
    junk, ort = tmp_path / "junk.onnx", tmp_path / "ort.onnx"
    junk.write_bytes(b"sepal_length,sepal_width\n1,2\n")
    ort.write_bytes(add_int_model(onnx_model))
    status, verdict = run_validator(junk)
    assert status == 2
    assert verdict.ok is False
    assert verdict.error is not None
    assert verdict.error["code"] == "invalid_model"
    assert verdict.error["message"].startswith("not a valid ONNX model: ")
    status, verdict = run_validator(ort)
    assert (status, verdict.error and verdict.error["code"]) == (2, "model_load_failed")
    iris = tmp_path / "iris.onnx"
    iris.write_bytes(iris_lr.onnx)
    status, verdict = run_validator(iris, INFERQ_MAX_MODEL_BYTES="100")  # engine settings come from the environment
    assert status == 2
    assert verdict.error == {
        "code": "invalid_model",
        "message": f"the model is {len(iris_lr.onnx):,} bytes, over the limit of 100",
    }
