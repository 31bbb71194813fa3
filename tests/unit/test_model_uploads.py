"""Model uploads before the validator: pickles and joblib files known by their first bytes, the spool's cap,
the form's fields."""

from __future__ import annotations

import io
import pickle
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from inferq.api.model_uploads import UploadMetadata
from inferq.api.model_uploads.magic import HEAD_BYTES, identify, refuse_serialized
from inferq.api.model_uploads.spool import spool, workdir
from inferq.errors import InvalidInput, InvalidModel, MalformedRequest, PayloadTooLarge

ESTIMATOR = {"coef": np.arange(12, dtype=np.float64).reshape(3, 4), "classes": ["a", "b", "c"]}


def joblib_bytes(compress: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(ESTIMATOR, buffer, compress=compress)
    return buffer.getvalue()


def npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, coef=ESTIMATOR["coef"])
    return buffer.getvalue()


def npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, ESTIMATOR["coef"])
    return buffer.getvalue()


SERIALIZED = {
    **{f"pickle-{p}": pickle.dumps(ESTIMATOR, protocol=p) for p in (2, 3, 4, 5)},
    "joblib": joblib_bytes(0),
    "joblib-zlib": joblib_bytes(("zlib", 3)),
    "joblib-gzip": joblib_bytes(("gzip", 3)),
    "joblib-bz2": joblib_bytes(("bz2", 3)),
    "joblib-lzma": joblib_bytes(("lzma", 3)),
    "joblib-xz": joblib_bytes(("xz", 3)),
    "npz": npz_bytes(),
    "npy": npy_bytes(),
}


@pytest.mark.parametrize("kind", sorted(SERIALIZED))
def test_pickles_and_joblib_files_are_refused_by_their_first_bytes(kind: str) -> None:
    with pytest.raises(InvalidModel, match=r"not an ONNX model: .*`inferq models import FILE --name NAME`") as caught:
        refuse_serialized(SERIALIZED[kind][:HEAD_BYTES])
    assert caught.value.code == "invalid_model"
    assert caught.value.details["detected"] == identify(SERIALIZED[kind])


def test_the_detected_format_is_named() -> None:
    assert identify(SERIALIZED["pickle-4"]) == "a Python pickle (protocol 4; joblib writes these too)"
    assert identify(SERIALIZED["joblib-zlib"]) == "zlib-compressed data (a compressed joblib file)"
    assert identify(SERIALIZED["npz"]) == "a zip archive (a joblib/numpy .npz or a zipped pickle)"


def test_onnx_models_are_not_mistaken_for_pickles(
    iris_lr: Any, wine_rf: Any, diabetes_gbr: Any, identity_model: bytes
) -> None:
    for model in (iris_lr.onnx, wine_rf.onnx, diabetes_gbr.onnx, identity_model):
        assert identify(model[:HEAD_BYTES]) is None
        refuse_serialized(model[:HEAD_BYTES])


def test_old_pickle_protocols_are_left_to_the_onnx_parser() -> None:
    # NOTE: protocols 0 and 1 have no magic; they fail ONNX parsing, which never runs code.
    assert identify(pickle.dumps(ESTIMATOR, protocol=0)) is None
    assert identify(b"\x80\x01") is None


async def chunks_of(data: bytes, size: int, seen: list[int]) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        seen.append(start)
        yield data[start : start + size]


async def test_spool_writes_the_file_and_counts_its_bytes(identity_model: bytes) -> None:
    seen: list[int] = []
    with workdir() as tmp:
        size = await spool(chunks_of(identity_model, 3, seen), path=tmp / "m.onnx", max_bytes=len(identity_model))
        assert (tmp / "m.onnx").read_bytes() == identity_model
        assert tmp.stat().st_mode & 0o777 == 0o700
    assert size == len(identity_model)
    assert not tmp.exists()  # the upload's directory goes with everything in it


async def test_spool_refuses_a_pickle_before_reading_the_rest() -> None:
    seen: list[int] = []
    data = SERIALIZED["pickle-5"] + b"\0" * 10_000
    with workdir() as tmp, pytest.raises(InvalidModel, match="a Python pickle"):
        await spool(chunks_of(data, 3, seen), path=tmp / "m.onnx", max_bytes=1 << 20)
    assert seen == [0, 3, 6]  # head bytes split over three chunks: refused at the third


async def test_spool_refuses_a_file_over_the_cap_as_it_streams() -> None:
    seen: list[int] = []
    with workdir() as tmp, pytest.raises(PayloadTooLarge, match=r"over the limit of 1,000 bytes") as caught:
        await spool(chunks_of(b"\x08" * 5000, 400, seen), path=tmp / "m.onnx", max_bytes=1000)
    assert caught.value.details == {"max_bytes": 1000}
    assert seen == [0, 400, 800]  # the chunk that crossed the cap was the last one read


async def test_spool_refuses_empty_and_tiny_serialized_files() -> None:
    with workdir() as tmp:
        with pytest.raises(InvalidModel, match="the file is empty"):
            await spool(chunks_of(b"", 1, []), path=tmp / "m.onnx", max_bytes=100)
        with pytest.raises(InvalidModel, match="gzip"):
            await spool(chunks_of(b"\x1f\x8b", 1, []), path=tmp / "m.onnx", max_bytes=100)
        assert await spool(chunks_of(b"\x08\x07", 1, []), path=tmp / "m.onnx", max_bytes=100) == 2


def test_form_fields_are_decoded() -> None:
    meta = UploadMetadata.of(
        {
            "description": "iris, retrained",
            "feature_names": '["a", "b"]',
            "class_names": '["x", "y", "z"]',
            "overrides": '{"max_batch": 32, "max_batch_delay_ms": 2.5}',
        }
    )
    assert meta == UploadMetadata(
        description="iris, retrained",
        feature_names=("a", "b"),
        class_names=("x", "y", "z"),
        overrides={"max_batch": 32, "max_batch_delay_ms": 2.5},
    )
    assert UploadMetadata.of({}) == UploadMetadata()


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"model": "iris"}, MalformedRequest, r"unknown form fields: model \(known: description, feature_names"),
        ({"feature_names": "a,b"}, MalformedRequest, r"form field 'feature_names' must be a JSON array of strings"),
        ({"class_names": "[1, 2]"}, MalformedRequest, r"form field 'class_names' must be a JSON array of strings"),
        ({"overrides": "[]"}, MalformedRequest, r"form field 'overrides' must be a JSON object of numbers"),
        ({"overrides": '{"max_batch": true}'}, MalformedRequest, r"form field 'overrides'"),
        ({"overrides": '{"": 3}'}, InvalidInput, r"invalid serving override ''"),
    ],
)
def test_bad_form_fields_are_refused(fields: dict[str, str], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        UploadMetadata.of(fields)


def test_workdir_is_removed_on_error() -> None:
    kept: list[Path] = []

    def fail() -> None:
        with workdir() as tmp:
            kept.append(tmp)
            (tmp / "upload.onnx").write_bytes(b"x")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail()
    assert not kept[0].exists()
