"""V2 tensors without sockets: JSON and binary inputs against a signature, binary framing both ways."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from typing import Any

import msgspec
import numpy as np
import pytest

from inferq.api.v2.framing import frame_response, split_request
from inferq.api.v2.schema import inline
from inferq.contracts.models import ModelSignature, TensorSpec
from inferq.contracts.v2 import InferBody, RequestInput
from inferq.errors import InvalidInput, MalformedRequest
from inferq.inputs import encode_tensors
from inferq.inputs.v2 import v2_feeds, v2_shape
from inferq.inputs.v2_binary import decode_binary, encode_binary

SIGNATURE = ModelSignature(
    inputs=(
        TensorSpec(name="x", dtype="float32", shape=(None, 2, 2)),
        TensorSpec(name="s", dtype="string", shape=(None,)),
        TensorSpec(name="b", dtype="bool", shape=(None,)),
    ),
    outputs=(TensorSpec(name="y", dtype="float32", shape=(None,)),),
)
X = np.arange(8, dtype=np.float32).reshape(2, 2, 2)


def strings(*values: str) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def tensor(name: str, shape: list[int], datatype: str, data: Any = None, **parameters: Any) -> RequestInput:
    return RequestInput(name=name, shape=tuple(shape), datatype=datatype, data=data, parameters=parameters)


def json_inputs(x: Any) -> list[RequestInput]:
    return [
        tensor("x", [2, 2, 2], "FP32", x),
        tensor("s", [2], "BYTES", ["a", "b"]),
        tensor("b", [2], "BOOL", [True, False]),
    ]


@pytest.mark.parametrize("data", [X.tolist(), X.ravel().tolist()], ids=["nested", "flat"])
def test_nested_and_flat_json_data_give_the_same_feeds(data: Any) -> None:
    feeds = v2_feeds(json_inputs(data), None, SIGNATURE, max_elements=100)
    assert np.array_equal(feeds["x"], X)
    assert feeds["x"].dtype == np.float32
    assert feeds["s"].tolist() == ["a", "b"]
    assert feeds["b"].tolist() == [True, False]


def test_binary_inputs_in_order_with_json_ones_between() -> None:
    raw = X.astype("<f4").tobytes() + bytes([1, 0])
    inputs = [
        tensor("x", [2, 2, 2], "FP32", binary_data_size=32),
        tensor("s", [2], "BYTES", ["é", ""]),
        tensor("b", [2], "BOOL", binary_data_size=2),
    ]
    feeds = v2_feeds(inputs, memoryview(raw), SIGNATURE, max_elements=100)
    assert np.array_equal(feeds["x"], X)
    assert feeds["s"].tolist() == ["é", ""]
    assert feeds["b"].tolist() == [True, False]


_X = ("x", [1, 2, 2], "FP32")
_S = ("s", [2], "BYTES")
PROBLEMS: dict[str, tuple[RequestInput, bytes | None, str]] = {
    "rank": (tensor("x", [2, 2], "FP32", [[1, 2], [3, 4]]), None, "shape [2, 2] does not match the model's [-1, 2, 2]"),
    "ragged": (tensor(*_X, [[[1, 2], [3]]]), None, "the list at [0, 1] should have 2 items, got 1 items"),
    "datatype": (tensor("x", [1, 2, 2], "INT64", [1, 2, 3, 4]), None, "datatype INT64; the model takes FP32"),
    "both": (tensor(*_X, [1, 2, 3, 4], binary_data_size=16), b"\0" * 16, "both data and binary_data_size"),
    "size type": (tensor(*_X, binary_data_size=True), b"", "binary_data_size must be a non-negative integer"),
    "shared memory": (tensor(*_X, shared_memory_region="r"), None, "shared memory is not supported"),
    "negative": (tensor("x", [1, -2, 2], "FP32", []), None, "has a negative dimension"),
    "cut length": (
        tensor(*_S, binary_data_size=7),
        strings("a") + b"\1\0",
        "inside an element's 4-byte length",
    ),
    "cut element": (
        tensor(*_S, binary_data_size=9),
        strings("a") + b"\x09\0\0\0",
        "says 9 bytes, only 0",
    ),
    "count": (tensor(*_S, binary_data_size=5), strings("a"), "holds 1 BYTES elements; shape [2] needs 2"),
    "utf-8": (tensor("s", [1], "BYTES", binary_data_size=5), b"\1\0\0\0\xff", "is not UTF-8 text"),
    "bool": (tensor("b", [2], "BOOL", binary_data_size=2), b"\1\2", "must be the bytes 0 or 1"),
}


@pytest.mark.parametrize("case", list(PROBLEMS))
def test_each_problem_is_named(case: str) -> None:
    item, binary, message = PROBLEMS[case]
    with pytest.raises(InvalidInput) as caught:
        v2_feeds([item], binary, SIGNATURE, max_elements=100)
    assert message in caught.value.message


def test_the_element_cap_counts_every_input() -> None:
    with pytest.raises(InvalidInput, match="too many values: 12 exceeds the limit of 10"):
        v2_feeds(json_inputs(X.tolist()), None, SIGNATURE, max_elements=10)


def test_bytes_and_numeric_binary_round_trip_through_wire_tensors() -> None:
    words = np.array(["a", "héllo", ""], dtype=object)
    numbers = np.array([[1.5, -2.0]], dtype=np.float64)
    word_tensor, number_tensor = encode_tensors({"w": words, "n": numbers})
    assert encode_binary(word_tensor) == strings("a", "héllo", "")
    assert encode_binary(number_tensor) == numbers.astype("<f8").tobytes()
    back = decode_binary(encode_binary(word_tensor), name="w", dtype="string", shape=(3,))
    assert back.tolist() == ["a", "héllo", ""]


def test_split_request_reads_the_header_length_and_compressed_bodies() -> None:
    head, binary = split_request(b'{"a":1}RAW', header_length="7", encoding=None, max_bytes=100)
    assert (head, bytes(binary or b"")) == (b'{"a":1}', b"RAW")
    assert split_request(b"{}", header_length=None, encoding=None, max_bytes=100) == (b"{}", None)
    assert split_request(gzip.compress(b"{}"), header_length=None, encoding="gzip", max_bytes=100)[0] == b"{}"
    assert split_request(zlib.compress(b"{}"), header_length=None, encoding="Deflate", max_bytes=100)[0] == b"{}"
    for length in ("-1", "0", "8", "1e2", " "):
        with pytest.raises(MalformedRequest, match="Inference-Header-Content-Length"):
            split_request(b'{"a":1}', header_length=length, encoding=None, max_bytes=100)
    with pytest.raises(MalformedRequest, match="over 10 bytes once decompressed"):
        split_request(gzip.compress(b"x" * 11), header_length=None, encoding="gzip", max_bytes=10)
    with pytest.raises(MalformedRequest, match="not supported"):
        split_request(b"{}", header_length=None, encoding="br", max_bytes=100)


def test_frame_response_puts_binary_outputs_after_the_header_in_output_order() -> None:
    tensors = encode_tensors({"a": np.array([1, 2], dtype=np.int64), "b": np.array([0.5], dtype=np.float32)})
    framed = frame_response(model="m", version=3, request_id="r", tensors=tensors, binary={"b": True})
    assert framed.header_length is not None
    header = json.loads(framed.content[: framed.header_length])
    assert header == {
        "model_name": "m",
        "model_version": "3",
        "id": "r",
        "outputs": [
            {"name": "a", "datatype": "INT64", "shape": [2], "data": [1, 2]},
            {"name": "b", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}},
        ],
    }
    assert framed.content[framed.header_length :] == np.float32(0.5).tobytes()
    plain = frame_response(model="m", version=3, request_id="r", tensors=tensors, binary={"b": False})
    assert plain.header_length is None
    assert json.loads(plain.content)["outputs"][1]["data"] == [0.5]


def test_metadata_shapes_and_the_documented_request_schema() -> None:
    assert v2_shape((None, 4, None)) == (-1, 4, -1)
    schema = inline(msgspec.json.schema(InferBody))
    assert "$ref" not in json.dumps(schema)
    assert schema["required"] == ["inputs"]
    assert schema["properties"]["inputs"]["items"]["required"] == ["name", "shape", "datatype"]
