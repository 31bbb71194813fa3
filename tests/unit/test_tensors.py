"""Wire tensors: exact round trips for every dtype, and typed errors for bad bytes."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from inferq.contracts.predictions import Tensor
from inferq.errors import InvalidInput
from inferq.inputs import decode_tensors, encode_tensors

ARRAYS = {
    "f32": np.array([[1.5, -0.0, np.nan], [np.inf, -np.inf, 3.4e38]], dtype=np.float32),
    "f64": np.array([1e-300, np.pi], dtype=np.float64),
    "i32": np.array([[[-(2**31), 2**31 - 1]]], dtype=np.int32),
    "i64": np.array([-(2**63), 0, 2**63 - 1], dtype=np.int64),
    "flag": np.array([True, False, True]),
    "word": np.array([["a", "é"], ["", "long " * 10]], dtype=object),
    "empty": np.zeros((0, 4), dtype=np.float32),
}


def test_round_trip_is_exact_for_every_dtype() -> None:
    tensors = encode_tensors(ARRAYS)
    assert [(t.name, t.dtype, t.shape) for t in tensors] == [
        ("f32", "float32", (2, 3)),
        ("f64", "float64", (2,)),
        ("i32", "int32", (1, 1, 2)),
        ("i64", "int64", (3,)),
        ("flag", "bool", (3,)),
        ("word", "string", (2, 2)),
        ("empty", "float32", (0, 4)),
    ]
    decoded = decode_tensors(tensors)
    assert list(decoded) == list(ARRAYS)
    for name, array in ARRAYS.items():
        assert decoded[name].dtype == array.dtype, name
        assert decoded[name].shape == array.shape, name
        if array.dtype == object:
            assert decoded[name].tolist() == array.tolist()
        else:  # bit-exact, NaN payloads included
            assert decoded[name].tobytes() == array.tobytes(), name


def test_round_trip_through_msgpack() -> None:
    wire = msgspec.msgpack.encode(encode_tensors(ARRAYS))
    decoded = decode_tensors(msgspec.msgpack.decode(wire, type=tuple[Tensor, ...]))
    np.testing.assert_array_equal(decoded["i64"], ARRAYS["i64"])
    assert decoded["word"].tolist() == ARRAYS["word"].tolist()


def test_raw_bytes_are_little_endian_c_order() -> None:
    array = np.arange(6, dtype=">i4").reshape(2, 3).T  # big-endian and not C-contiguous
    (tensor,) = encode_tensors({"x": array})
    assert tensor.shape == (3, 2)
    assert tensor.data == np.array([[0, 3], [1, 4], [2, 5]], dtype="<i4").tobytes()
    np.testing.assert_array_equal(decode_tensors([tensor])["x"], array)


def test_unicode_numpy_strings_encode_as_strings() -> None:
    (tensor,) = encode_tensors({"s": np.array(["x", "yz"])})
    assert tensor.dtype == "string"
    assert decode_tensors([tensor])["s"].tolist() == ["x", "yz"]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (Tensor(name="x", dtype="float32", shape=(2, 3), data=bytes(20)),
         "tensor 'x': 20 bytes do not match shape [2, 3] of float32 (24 bytes)"),
        (Tensor(name="x", dtype="int64", shape=(1,), data=bytes(9)),
         "tensor 'x': 9 bytes do not match shape [1] of int64 (8 bytes)"),
        (Tensor(name="x", dtype="float16", shape=(1,), data=bytes(2)),  # type: ignore[arg-type]
         "tensor 'x': unknown dtype 'float16'"),
        (Tensor(name="x", dtype="float32", shape=(-1,), data=b""),
         "tensor 'x': invalid shape [-1]"),
        (Tensor(name="x", dtype="bool", shape=(2,), data=b"\x01\x02"),
         "tensor 'x': bool data must be bytes 0 or 1"),
        (Tensor(name="x", dtype="string", shape=(3,), data=msgspec.msgpack.encode(["a", "b"])),
         "tensor 'x': 2 strings do not match shape [3] (3 values)"),
        (Tensor(name="x", dtype="string", shape=(1,), data=msgspec.msgpack.encode([1])),
         "tensor 'x': string data is not a msgpack list of str"),
    ],
    ids=["short float32", "long int64", "unknown dtype", "negative dim", "bool byte", "string count", "not strings"],
)  # fmt: skip
def test_bad_tensor_is_invalid_input(tensor: Tensor, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_tensors([tensor])
    assert caught.value.code == "invalid_input"
    assert message in caught.value.message


def test_duplicate_tensor_names_are_rejected() -> None:
    (tensor,) = encode_tensors({"x": np.zeros(1, np.float32)})
    with pytest.raises(InvalidInput, match="tensor 'x' appears twice"):
        decode_tensors([tensor, tensor])


def test_unsupported_array_dtypes_are_rejected_on_encode() -> None:
    with pytest.raises(InvalidInput, match="tensor 'h': unsupported dtype float16"):
        encode_tensors({"h": np.zeros(2, np.float16)})
    with pytest.raises(InvalidInput, match="tensor 'o': an object array must hold only strings"):
        encode_tensors({"o": np.array([1, "a"], dtype=object)})
