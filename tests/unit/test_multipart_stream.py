"""Streaming multipart: text fields collected before the file, the file handed over in small chunks."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator

import pytest

from inferq.api.multipart import FilePart, Form, form_boundary, read_form
from inferq.errors import InferqError, MalformedRequest, PayloadTooLarge
from inferq.inputs.uploads import UploadRow, upload_format, upload_parser

MB = 1024 * 1024
BOUNDARY = b"----inferq7MA4YWxkTrZu0gW"
FILE = b'{"custom_id": "a", "inputs": [1, 2]}\r\n{"inputs": [3, 4]}\n' + "é☃\r\n--x\r".encode()


def part(name: str, value: bytes, *, filename: str | None = None, content_type: str | None = None) -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    headers = disposition + (f"\r\nContent-Type: {content_type}" if content_type else "")
    return b"--" + BOUNDARY + b"\r\n" + headers.encode() + b"\r\n\r\n" + value + b"\r\n"


def form_body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


BODY = form_body(
    part("model", b"iris@2"),
    part("webhook", b'{"url": "https://example.com/hook"}'),
    part("metadata", b""),
    part("file", FILE, filename="rows.jsonl", content_type="application/jsonl"),
)


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(data: bytes, *, size: int = 65536, max_bytes: int = MB, **options: int) -> tuple[Form, bytes]:
    form = await read_form(pieces(data, size), boundary=BOUNDARY, max_bytes=max_bytes, **options)
    return form, b"".join([chunk async for chunk in form.chunks])


@pytest.mark.parametrize("size", [1, 2, 3, 7, 31, 64, 1000, len(BODY)])
async def test_fields_then_file_in_any_chunking(size: int) -> None:
    form, data = await read_all(BODY, size=size)
    assert form.fields == {"model": "iris@2", "webhook": '{"url": "https://example.com/hook"}', "metadata": ""}
    assert form.file == FilePart(name="file", filename="rows.jsonl", content_type="application/jsonl")
    assert data == FILE


async def test_the_file_streams_through_in_small_chunks_with_bounded_memory() -> None:
    line = b'{"custom_id": "row", "inputs": [5.1, 3.5, 1.4, 0.2]}\r\n'  # 54 bytes
    block = line * (65536 // len(line))
    blocks = 50 * MB // len(block)
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        head = part("model", b"iris") + part("file", b"", filename="big.jsonl")[: -len(b"\r\n")]
        for chunk in (head, *(block for _ in range(blocks)), b"\r\n--" + BOUNDARY + b"--\r\n"):
            sent += len(chunk)
            yield chunk

    tracemalloc.start()
    try:
        form = await read_form(body(), boundary=BOUNDARY, max_bytes=60 * MB)
        largest = received = 0
        sent_at_first = None
        async for chunk in form.chunks:
            sent_at_first = sent if sent_at_first is None else sent_at_first
            largest = max(largest, len(chunk))
            received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert form.fields == {"model": "iris"}
    assert received == blocks * len(block) > 49 * MB
    assert sent_at_first is not None
    assert sent_at_first < 2 * len(block)  # handed over as it arrives, not after the body
    assert largest <= len(block) + len(BOUNDARY) + 4
    assert peak < 2 * MB


async def test_an_empty_file_part_gives_no_chunks() -> None:
    form, data = await read_all(form_body(part("model", b"m"), part("file", b"", filename="empty.csv")))
    assert (form.fields, form.file.filename, data) == ({"model": "m"}, "empty.csv", b"")


async def test_a_file_part_without_a_filename_is_the_file() -> None:
    form, data = await read_all(form_body(part("file", b"a\n1\n")))
    assert (form.fields, form.file, data) == ({}, FilePart(name="file"), b"a\n1\n")


async def test_rows_are_parsed_from_the_streamed_file() -> None:
    form = await read_form(pieces(BODY, 5), boundary=BOUNDARY, max_bytes=MB)
    parser = upload_parser(upload_format(content_type=form.file.content_type, filename=None), max_bytes=MB)
    rows = [row async for chunk in form.chunks for row in parser.feed(chunk)] + parser.close()
    assert rows == [
        UploadRow(line=1, custom_id="a", inputs=[1, 2]),
        UploadRow(line=2, inputs=[3, 4]),
        UploadRow(line=3, error="invalid JSON: invalid character (byte 0)"),
        UploadRow(line=4, error="invalid JSON: invalid character (byte 1)"),
    ]


async def failure(data: bytes, **options: int) -> InferqError:
    with pytest.raises(InferqError) as caught:
        await read_all(data, size=options.pop("size", 64), **options)
    return caught.value


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            form_body(part("file", b"x", filename="a.csv"), part("model", b"iris")),
            "the form field 'model' comes after the file: send every field before the file part",
        ),
        (
            form_body(part("file", b"x", filename="a.csv"), part("file", b"y", filename="b.csv")),
            "the form has two file parts: send one upload, as the form field 'file'",
        ),
        (
            form_body(part("file", b"x"), part("other", b"y", filename="b.csv")),
            "the form has two file parts: send one upload, as the form field 'file'",
        ),
        (form_body(part("model", b"iris")), "the form has no file part: send the upload as the form field 'file'"),
        (b"", "the multipart/form-data body is empty"),
        (
            form_body(part("upload", b"x", filename="a.csv")),
            "unexpected file part 'upload': send the upload as the form field 'file'",
        ),
        (form_body(part("model", b"a"), part("model", b"b")), "the form field 'model' is sent more than once"),
        (form_body(part("model", b"\xff")), "the form field 'model' is not valid UTF-8"),
        (form_body(part("", b"x")), "a form part has no name"),
        (b"hello, this is not a form", "malformed multipart/form-data body: the body ends before the form does"),
        (BODY[: len(BODY) // 2], "malformed multipart/form-data body: the body ends before the form does"),
        (BODY[:-20], "malformed multipart/form-data body: the body ends before the form does"),
        (
            b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data\r\nbroken\r\n\r\nx\r\n",
            "malformed multipart/form-data body: Malformed segment header",
        ),
    ],
)
async def test_malformed_forms(data: bytes, message: str) -> None:
    error = await failure(data)
    assert (type(error), error.message) == (MalformedRequest, message)


async def test_a_text_field_is_capped() -> None:
    error = await failure(form_body(part("metadata", b"m" * 100), part("file", b"x")), field_max_bytes=99)
    assert (type(error), error.message) == (MalformedRequest, "the form field 'metadata' is over the limit of 99 bytes")
    form, _ = await read_all(form_body(part("metadata", b"m" * 99), part("file", b"x")), field_max_bytes=99)
    assert form.fields == {"metadata": "m" * 99}


async def test_too_many_fields() -> None:
    error = await failure(
        form_body(part("a", b"1"), part("b", b"2"), part("c", b"3"), part("file", b"x")), max_fields=2
    )
    assert type(error) is MalformedRequest
    assert error.message.startswith("too many parts or headers in the multipart/form-data body")


@pytest.mark.parametrize("file_size", [0, 10 * MB])
async def test_a_body_over_the_cap_stops_as_soon_as_it_passes_it(file_size: int) -> None:
    taken = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal taken
        yield part("model", b"iris") + part("file", b"", filename="big.csv")[:-2]
        chunk = b"1,2,3\n" * 10000
        while taken < 201 * MB:
            taken += len(chunk)
            yield chunk

    forms: list[Form] = []

    async def read() -> None:
        forms.append(await read_form(endless(), boundary=BOUNDARY, max_bytes=file_size or 30))
        _ = [chunk async for chunk in forms[0].chunks]

    with pytest.raises(PayloadTooLarge) as caught:
        await read()
    assert caught.value.message == f"the request body is over the limit of {file_size or 30:,} bytes"
    assert taken <= (file_size or 30) + 60000
    assert len(forms) == (file_size > 0)  # a tiny cap fails while the fields are read


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('Multipart/Form-Data; charset=utf-8; boundary="----x y"', b"----x y"),
    ],
)
def test_form_boundary(content_type: str, boundary: bytes) -> None:
    assert form_boundary(content_type) == boundary


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        (None, "expected a multipart/form-data body, got Content-Type 'none'"),
        ("application/json", "expected a multipart/form-data body, got Content-Type 'application/json'"),
        ("multipart/form-data", "the multipart/form-data Content-Type has no valid boundary parameter"),
        ("multipart/form-data; boundary=", "the multipart/form-data Content-Type has no valid boundary parameter"),
        (
            "multipart/form-data; boundary=" + "b" * 71,
            "the multipart/form-data Content-Type has no valid boundary parameter",
        ),
    ],
)
def test_form_boundary_errors(content_type: str | None, message: str) -> None:
    with pytest.raises(MalformedRequest) as caught:
        form_boundary(content_type)
    assert caught.value.message == message


async def test_an_empty_boundary_is_malformed() -> None:
    with pytest.raises(MalformedRequest) as caught:
        await read_form(pieces(BODY, 64), boundary=b"", max_bytes=MB)
    assert caught.value.message == "the multipart/form-data Content-Type has no boundary parameter"
