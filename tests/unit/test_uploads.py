"""Job uploads: JSONL and CSV bytes split anywhere give the same rows; bad lines are reported, good ones kept."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from inferq.contracts.models import ModelSignature, TensorSpec
from inferq.errors import InvalidInput, MalformedRequest, PayloadTooLarge
from inferq.inputs.uploads import UploadParser, UploadRow, check_rows, upload_format, upload_parser

MB = 1024 * 1024
LONG_ID = "i" * 257
JSONL = (
    '\ufeff{"custom_id": "café-1", "inputs": {"a": 1.5, "b": 2, "c": -3}}\n'
    '{"inputs": [4, 5, 6]}\r\n'
    "\n"
    "   \n"
    '{"custom_id": "☃", "inputs": [7, 8, 9]}\n'
    '{"inputs": [1, 2, 3], "extra": 1}\n'
    "not json\n"
    '{"custom_id": "x"}\n'
    "[1, 2]\n"
    '{"custom_id": 5, "inputs": [1]}\n'
    '{"inputs": 3}\n'
    '{"inputs": [1\n'
    '{"custom_id": "' + LONG_ID + '", "inputs": [1]}\n'
    '{"custom_id": "last", "inputs": {"a": 0}}\n'
).encode() + b'{"custom_id": "\xff", "inputs": [1]}\n{"inputs": [1]} {"inputs": [2]}'
JSONL_ROWS = [
    UploadRow(line=1, custom_id="café-1", inputs={"a": 1.5, "b": 2, "c": -3}),
    UploadRow(line=2, inputs=[4, 5, 6]),
    UploadRow(line=5, custom_id="☃", inputs=[7, 8, 9]),
    UploadRow(line=6, error='unknown key \'extra\': a line has only "custom_id" and "inputs"'),
    UploadRow(line=7, error="invalid JSON: invalid character (byte 4)"),
    UploadRow(line=8, custom_id="x", error='missing "inputs"'),
    UploadRow(line=9, error='expected an object {"custom_id", "inputs"}, got a list'),
    UploadRow(line=10, error='"custom_id" must be a string, got a number (5)'),
    UploadRow(line=11, error='"inputs" must be one record (an object) or one row (a list), got a number (3)'),
    UploadRow(line=12, error="invalid JSON: truncated"),
    UploadRow(line=13, error='"custom_id" is longer than 256 characters'),
    UploadRow(line=14, custom_id="last", inputs={"a": 0}),
    UploadRow(line=15, error="not valid UTF-8 (byte 16)"),
    UploadRow(line=16, error="invalid JSON: trailing characters (byte 17)"),
]
CSV = (
    "\ufeffcustom_id,a,b,c\r\n"
    "r1,1.5,2,-3\r\n"
    '"r,2",4,5,6\n'
    "\n"
    "r3,7,8\n"
    "r4,1,,3\n"
    "r5,1,x,3\n"
    'r6,"1"2,3,4\n'
    'r7,"1\n'
    "r8,1_0,2,3\n"
    "r9,1,2,3,4\n"
    ",1,2,3\n"
    '"r10",1e3,  2 ,-0.5'
).encode()
CSV_ROWS = [
    UploadRow(line=2, custom_id="r1", inputs={"a": 1.5, "b": 2.0, "c": -3.0}),
    UploadRow(line=3, custom_id="r,2", inputs={"a": 4.0, "b": 5.0, "c": 6.0}),
    UploadRow(line=5, custom_id="r3", error="expected 4 columns, got 3"),
    UploadRow(line=6, custom_id="r4", error="column 'b': empty value"),
    UploadRow(line=7, custom_id="r5", error="column 'b': expected a number, got a string ('x')"),
    UploadRow(line=8, error="malformed CSV: ',' expected after '\"'"),
    UploadRow(line=9, error="a quoted field does not end on its line (quoted newlines are not supported)"),
    UploadRow(line=10, custom_id="r8", error="column 'a': expected a number, got a string ('1_0')"),
    UploadRow(line=11, custom_id="r9", error="expected 4 columns, got 5"),
    UploadRow(line=12, inputs={"a": 1.0, "b": 2.0, "c": 3.0}),
    UploadRow(line=13, custom_id="r10", inputs={"a": 1000.0, "b": 2.0, "c": -0.5}),
]


def parse(fmt: Any, chunks: list[bytes], **limits: Any) -> list[UploadRow]:
    parser = upload_parser(fmt, max_bytes=MB, **limits)
    rows = [row for chunk in chunks for row in parser.feed(chunk)]
    return rows + parser.close()


@pytest.mark.parametrize(("fmt", "data", "expected"), [("jsonl", JSONL, JSONL_ROWS), ("csv", CSV, CSV_ROWS)])
def test_every_split_gives_the_same_rows(fmt: str, data: bytes, expected: list[UploadRow]) -> None:
    assert parse(fmt, [data]) == expected
    for at in range(len(data) + 1):  # mid-line, mid-"\r\n", mid-BOM and mid-UTF-8 character included
        assert parse(fmt, [data[:at], data[at:]]) == expected, at
    assert parse(fmt, [data[i : i + 1] for i in range(len(data))]) == expected


def test_rows_come_out_as_their_lines_complete() -> None:
    parser = upload_parser("jsonl", max_bytes=MB)
    assert parser.feed(b'{"inputs": [1]}\n{"inputs"') == [UploadRow(line=1, inputs=[1])]
    assert parser.feed(b": [2]}") == []
    assert parser.feed(b"\n") == [UploadRow(line=2, inputs=[2])]
    assert parser.close() == []


def test_a_line_over_the_cap_is_an_error_and_the_next_lines_still_run() -> None:
    long_line = b'{"inputs": [' + b"1, " * 40 + b"1]}\n"
    data = b'{"inputs": [0]}\n' + long_line + b'{"inputs": [2]}\n' + long_line.rstrip(b"\n")
    expected = [
        UploadRow(line=1, inputs=[0]),
        UploadRow(line=2, error="the line is longer than 64 bytes"),
        UploadRow(line=3, inputs=[2]),
        UploadRow(line=4, error="the line is longer than 64 bytes"),
    ]
    for size in (1, 7, 64, len(data)):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert parse("jsonl", chunks, max_line_bytes=64) == expected, size
        assert parse("csv", [b"a\n", *chunks], max_line_bytes=64)[1].error == "the line is longer than 64 bytes"


def test_a_long_line_is_skipped_without_buffering_it() -> None:
    parser = upload_parser("jsonl", max_bytes=100 * MB, max_line_bytes=MB)
    chunk = b"x" * 65536
    tracemalloc.start()
    try:
        for _ in range(30 * MB // len(chunk)):  # one 30 MiB line
            assert parser.feed(chunk) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MB
    assert parser.feed(b'x\n{"inputs": [1]}\n') == [
        UploadRow(line=1, error="the line is longer than 1,048,576 bytes"),
        UploadRow(line=2, inputs=[1]),
    ]


def test_csv_header_without_a_model_feature_is_one_file_level_error() -> None:
    parser = upload_parser("csv", max_bytes=MB, expected_columns=["a", "b", "c"])
    with pytest.raises(InvalidInput) as caught:
        parser.feed(b"custom_id,a,b\n1,2,3\n")
    assert caught.value.message == (
        "the CSV header lacks the model's features 'c'; "
        "the columns must be the model's features ('a', 'b', 'c') and optionally 'custom_id'"
    )
    assert caught.value.details == {"missing": ["c"], "unknown": []}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"a,b,d\n", "the CSV header lacks the model's features 'c' and has columns the model does not take: 'd'"),
        (b"c,b,a,label\n", "the CSV header has columns the model does not take: 'label'"),
        (b"a,,b\n", "the CSV header has no name for column 2"),
        (b"a,b,a\n", "the CSV header names 'a' more than once"),
        (b"custom_id\n", "the CSV header has no feature columns"),
        (b'a,"b\n', "the CSV header (line 1) cannot be read: a quoted field does not end on its line"),
        (b"a,b\xff\n", "the CSV header (line 1) cannot be read: not valid UTF-8 (byte 4)"),
    ],
)
def test_bad_csv_headers(header: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        upload_parser("csv", max_bytes=MB, expected_columns=["a", "b", "c"]).feed(header)
    assert caught.value.message.startswith(message)


def test_csv_columns_in_any_order_without_custom_id() -> None:
    rows = parse("csv", [b"c, b ,a\n3,2,1\n"], expected_columns=["a", "b", "c"])
    assert rows == [UploadRow(line=2, inputs={"c": 3.0, "b": 2.0, "a": 1.0})]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("data", [b"", b"\n\n  \r\n", b"\xef\xbb\xbf"])
def test_an_upload_without_rows_is_an_error(fmt: str, data: bytes) -> None:
    parser = upload_parser(fmt, max_bytes=MB)
    assert parser.feed(data) == []
    with pytest.raises(InvalidInput) as caught:
        parser.close()
    assert caught.value.message == "the upload has no rows"


def test_a_csv_with_only_a_header_has_no_rows() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse("csv", [b"custom_id,a,b\n"])
    assert caught.value.message == "the upload has no rows"


def test_an_upload_of_only_bad_lines_still_has_rows() -> None:
    assert parse("jsonl", [b"{nope}"]) == [
        UploadRow(line=1, error="invalid JSON: object keys must be strings (byte 1)")
    ]


class Source:
    """Chunks that would add up to ``total`` bytes, counting how many were taken."""

    def __init__(self, total: int, *, chunk: bytes) -> None:
        self.total, self.chunk, self.taken = total, chunk, 0

    def __iter__(self) -> Iterator[bytes]:
        while self.taken + len(self.chunk) <= self.total:
            self.taken += len(self.chunk)
            yield self.chunk


def feed_all(parser: UploadParser, source: Source, rows: list[UploadRow]) -> None:
    for chunk in source:
        rows += parser.feed(chunk)


def test_an_upload_over_the_byte_cap_stops_as_soon_as_it_passes_it() -> None:
    source = Source(201 * MB, chunk=b"y" * 65536)
    with pytest.raises(PayloadTooLarge) as caught:
        feed_all(upload_parser("jsonl", max_bytes=200 * MB), source, [])
    assert caught.value.message == "the upload is over the limit of 209,715,200 bytes"
    assert source.taken == 200 * MB + 65536


def test_rows_before_the_byte_cap_come_out_before_the_error() -> None:
    source = Source(201 * MB, chunk=b'{"inputs": [1, 2, 3]}\n' * 10)  # 220 bytes a chunk
    rows: list[UploadRow] = []
    with pytest.raises(PayloadTooLarge) as caught:
        feed_all(upload_parser("jsonl", max_bytes=1000), source, rows)
    assert len(rows) == 40  # 4 chunks fit in 1000 bytes
    assert source.taken == 5 * 220
    assert caught.value.details == {"limit": 1000}


def test_an_upload_over_the_row_cap_is_too_large() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        parse("csv", [b"a\n1\n2\n3\n4\n"], max_rows=3)
    assert caught.value.message == "the upload has more than 3 rows"
    assert len(parse("csv", [b"a\n1\n2\n3\n"], max_rows=3)) == 3


@pytest.mark.parametrize(
    ("content_type", "filename", "fmt"),
    [
        ("application/jsonl", None, "jsonl"),
        ("application/x-ndjson; charset=utf-8", "rows.csv", "jsonl"),
        ("Text/CSV", None, "csv"),
        ("application/octet-stream", "Rows.NDJSON", "jsonl"),
        (None, "rows.jsonl", "jsonl"),
        ("application/vnd.ms-excel", "rows.csv", "csv"),
    ],
)
def test_upload_format(content_type: str | None, filename: str | None, fmt: str) -> None:
    assert upload_format(content_type=content_type, filename=filename) == fmt
    assert isinstance(
        upload_parser(upload_format(content_type=content_type, filename=filename), max_bytes=1), UploadParser
    )


@pytest.mark.parametrize(("content_type", "filename"), [(None, None), ("text/plain", "rows.txt"), (None, "csv")])
def test_an_unknown_format_is_malformed(content_type: str | None, filename: str | None) -> None:
    with pytest.raises(MalformedRequest) as caught:
        upload_format(content_type=content_type, filename=filename)
    assert caught.value.message == (
        "cannot tell the upload's format: name the file .jsonl, .ndjson or .csv, "
        "or send it as application/jsonl or text/csv"
    )


SIGNATURE = ModelSignature(
    inputs=(TensorSpec(name="input", dtype="float32", shape=(None, 3)),),
    outputs=(TensorSpec(name="y", dtype="float32", shape=(None,)),),
    feature_names=("a", "b", "c"),
)


def test_check_rows_turns_rows_that_do_not_fit_the_model_into_errors() -> None:
    rows = [
        UploadRow(line=1, custom_id="ok", inputs={"a": 1, "b": 2, "c": 3}),
        UploadRow(line=2, custom_id="short", inputs={"a": 1, "b": 2}),
        UploadRow(line=3, inputs=[1, 2, 3]),
        UploadRow(line=4, inputs=[1, 2]),
        UploadRow(line=5, error="invalid JSON: truncated"),
        UploadRow(line=6, inputs=[1, "x", 3]),
    ]
    assert check_rows(rows, SIGNATURE, max_elements=100) == [
        rows[0],
        UploadRow(line=2, custom_id="short", error="missing feature 'c'"),
        rows[2],
        UploadRow(line=4, error="expected 3 values, got 2"),
        rows[4],
        UploadRow(line=6, error="feature 'b' must be a number, got a string ('x')"),
    ]
    good = [rows[0], rows[2], rows[4]]
    assert check_rows(good, SIGNATURE, max_elements=3) == good


def test_a_line_nested_too_deeply_is_a_line_error_not_a_failed_upload() -> None:
    parser = upload_parser("jsonl", max_bytes=10**7)
    deep = b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    rows = parser.feed(deep + b'{"inputs": [1, 2]}\n') + parser.close()
    assert rows == [
        UploadRow(line=1, error="the line's JSON is nested too deeply"),
        UploadRow(line=2, inputs=[1, 2]),
    ]
