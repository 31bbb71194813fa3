"""Streaming multipart/form-data: small text fields collected, the one file part handed over chunk by chunk.

The rule for field order: every text field (``model``, ``webhook``, ...) comes *before* the file part,
because what they say (the model's signature above all) is needed to check rows while the file streams.
A field after the file is a ``MalformedRequest`` saying so. Browsers and ``curl -F`` send parts in the
order they are given, so ``curl -F model=iris -F file=@rows.jsonl`` works.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
from multipart import (  # type: ignore[import-untyped]
    MultipartError,
    MultipartSegment,
    ParserLimitReached,
    PushMultipartParser,
    parse_options_header,
)

from inferq.errors import MalformedRequest, PayloadTooLarge

FIELD_MAX_BYTES = 64 * 1024
MAX_FIELDS = 32


class FilePart(msgspec.Struct, frozen=True, kw_only=True):
    """The file part's headers: its form field name, and the filename and content type the client sent."""

    name: str
    filename: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Form:
    """A form read up to its file part: the text fields before it, and the file's bytes still to come.

    Iterate ``chunks`` to its end: that streams the file (each chunk at most one body chunk plus the
    boundary's length) and then reads the rest of the body, checking that only the end of the form follows.
    """

    fields: dict[str, str]
    file: FilePart
    chunks: AsyncIterator[bytes]


def form_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type header, or ``MalformedRequest``."""
    kind, options = parse_options_header(content_type or "")
    if kind != "multipart/form-data":
        raise MalformedRequest(f"expected a multipart/form-data body, got Content-Type {content_type or 'none'!r}")
    boundary = options.get("boundary", "")
    if not boundary or not boundary.isascii() or len(boundary) > 70:
        raise MalformedRequest("the multipart/form-data Content-Type has no valid boundary parameter")
    return str(boundary).encode("ascii")


async def read_form(
    stream: AsyncIterator[bytes],
    *,
    boundary: bytes,
    max_bytes: int,
    file_field: str = "file",
    field_max_bytes: int = FIELD_MAX_BYTES,
    max_fields: int = MAX_FIELDS,
) -> Form:
    """Read ``stream`` up to the ``file_field`` part; the file itself is left to ``Form.chunks``.

    Field names are not checked here (the caller rejects the ones it does not know). Raises
    ``MalformedRequest`` for a body that is not multipart/form-data with this boundary, a repeated
    field, a field over ``field_max_bytes``, more than ``max_fields`` fields, or no file part; and
    ``PayloadTooLarge`` as soon as the body passes ``max_bytes``.
    """
    if not boundary:
        raise MalformedRequest("the multipart/form-data Content-Type has no boundary parameter")
    events = _events(stream, boundary=boundary, max_bytes=max_bytes, max_parts=max_fields + 1)
    fields: dict[str, str] = {}
    async for event in events:
        if not isinstance(event, MultipartSegment):
            continue  # NOTE: never happens: a part's body is read by _field_value, up to its end
        name = str(event.name or "")
        if not name:
            raise MalformedRequest("a form part has no name")
        if name == file_field:
            file = FilePart(name=name, filename=event.filename, content_type=event.content_type)
            return Form(fields=fields, file=file, chunks=_file_chunks(events, file_field=file_field))
        if event.filename is not None:
            raise MalformedRequest(f"unexpected file part {name!r}: send the upload as the form field {file_field!r}")
        if name in fields:
            raise MalformedRequest(f"the form field {name!r} is sent more than once")
        fields[name] = await _field_value(events, name=name, limit=field_max_bytes)
    raise MalformedRequest(f"the form has no file part: send the upload as the form field {file_field!r}")


async def _field_value(events: AsyncIterator[Any], *, name: str, limit: int) -> str:
    """The body of one text field, up to its end-of-part event."""
    value = bytearray()
    async for event in events:
        if event is None:
            break
        value += event
        if len(value) > limit:
            raise MalformedRequest(f"the form field {name!r} is over the limit of {limit:,} bytes")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise MalformedRequest(f"the form field {name!r} is not valid UTF-8") from None


async def _file_chunks(events: AsyncIterator[Any], *, file_field: str) -> AsyncIterator[bytes]:
    """The file part's bytes as they arrive; then the rest of the body, which must hold no other part."""
    async for event in events:
        if event is None:
            break
        yield event
    async for event in events:
        if not isinstance(event, MultipartSegment):
            continue
        if event.name == file_field or event.filename is not None:
            raise MalformedRequest(f"the form has two file parts: send one upload, as the form field {file_field!r}")
        raise MalformedRequest(
            f"the form field {event.name!r} comes after the file: send every field before the file part"
        )


async def _events(
    stream: AsyncIterator[bytes], *, boundary: bytes, max_bytes: int, max_parts: int
) -> AsyncIterator[Any]:
    """The parser's events (a part's headers, its body chunks, ``None`` at its end) for the whole body."""
    received = 0
    try:
        parser = PushMultipartParser(boundary, max_segment_count=max_parts)
        async for chunk in stream:
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(f"the request body is over the limit of {max_bytes:,} bytes", limit=max_bytes)
            if chunk:  # NOTE: an empty chunk would tell the parser the body has ended
                for event in parser.parse(bytes(chunk)):
                    yield event
        if not received:
            raise MalformedRequest("the multipart/form-data body is empty")
        parser.close()
    except ParserLimitReached as exc:
        raise MalformedRequest(f"too many parts or headers in the multipart/form-data body ({exc})") from None
    except MultipartError as exc:
        reason = "the body ends before the form does" if "Unexpected end" in str(exc) else str(exc)
        raise MalformedRequest(f"malformed multipart/form-data body: {reason}") from None
