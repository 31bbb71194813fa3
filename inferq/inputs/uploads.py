"""Batch-job uploads: JSONL or CSV bytes, fed in chunks split anywhere, → one ``UploadRow`` per line."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Annotated, Any, Literal, cast

import msgspec

from inferq.contracts.models import ModelSignature
from inferq.errors import InvalidInput, MalformedRequest, PayloadTooLarge
from inferq.inputs.cells import describe
from inferq.inputs.feeds import to_feeds

UploadFormat = Literal["jsonl", "csv"]
MAX_LINE_BYTES = 1 << 20
MAX_CUSTOM_ID = 256
_BOM = b"\xef\xbb\xbf"
_CONTENT_TYPES: dict[str, UploadFormat] = {
    **dict.fromkeys(("application/jsonl", "application/x-jsonl", "application/jsonlines"), "jsonl"),
    **dict.fromkeys(("application/x-jsonlines", "application/ndjson", "application/x-ndjson"), "jsonl"),
    **dict.fromkeys(("text/csv", "application/csv"), "csv"),
}
_SUFFIXES: dict[str, UploadFormat] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


class UploadRow(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line of an upload (``line`` is 1-based, as an editor shows it): its ``inputs``, or ``error``."""

    line: int
    custom_id: str | None = None
    inputs: Any = None  # one record (dict) or one row (list)
    error: str | None = None


class _JsonlLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    inputs: dict[str, Any] | list[Any]
    custom_id: Annotated[str, msgspec.Meta(max_length=MAX_CUSTOM_ID)] | None = None


_DECODE_LINE = msgspec.json.Decoder(_JsonlLine).decode


def upload_format(*, content_type: str | None, filename: str | None) -> UploadFormat:
    """JSONL or CSV, from a known content type, else the filename's suffix; else ``MalformedRequest``."""
    kind = (content_type or "").partition(";")[0].strip().lower()
    if kind in _CONTENT_TYPES:
        return _CONTENT_TYPES[kind]
    _, dot, extension = (filename or "").rpartition(".")
    suffix = dot + extension.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    raise MalformedRequest(
        "cannot tell the upload's format: name the file .jsonl, .ndjson or .csv, "
        "or send it as application/jsonl or text/csv",
        content_type=content_type,
        filename=filename,
    )


def upload_parser(
    fmt: UploadFormat,
    *,
    max_bytes: int,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_rows: int | None = None,
    expected_columns: Sequence[str] | None = None,
) -> UploadParser:
    """A fresh parser for one upload; ``expected_columns`` (CSV only) are the model's feature names."""
    if fmt == "csv":
        return CsvParser(
            expected_columns=expected_columns, max_bytes=max_bytes, max_line_bytes=max_line_bytes, max_rows=max_rows
        )
    return JsonlParser(max_bytes=max_bytes, max_line_bytes=max_line_bytes, max_rows=max_rows)


class UploadParser:
    """Bytes in (chunks split anywhere), rows out as their lines complete: memory stays within one line.

    ``feed`` raises ``PayloadTooLarge`` as soon as the bytes fed pass ``max_bytes``; ``close`` raises
    ``InvalidInput`` for an upload without rows. A line over ``max_line_bytes`` becomes an error row and
    is skipped up to its newline, never buffered past the cap. Blank lines are skipped but counted.
    """

    def __init__(self, *, max_bytes: int, max_line_bytes: int = MAX_LINE_BYTES, max_rows: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_line_bytes = max_line_bytes
        self.max_rows = max_rows
        self.received = 0  # bytes fed so far
        self.rows = 0  # rows returned so far, good and bad
        self._lines = 0  # lines completed so far
        self._partial = bytearray()
        self._skipping = False  # the current line passed the cap: drop its bytes up to the newline
        self._too_long = f"the line is longer than {max_line_bytes:,} bytes"

    def feed(self, chunk: bytes) -> list[UploadRow]:
        """The rows of the lines that ``chunk`` completes."""
        self.received += len(chunk)
        if self.received > self.max_bytes:
            raise PayloadTooLarge(f"the upload is over the limit of {self.max_bytes:,} bytes", limit=self.max_bytes)
        lines = cast("list[bytes | None]", chunk.split(b"\n"))
        start = cast(bytes, lines.pop())  # of the next line, still incomplete
        if lines:
            lines[0] = self._take(lines[0])
        if not self._skipping and len(self._partial) + len(start) > self.max_line_bytes:
            self._partial.clear()
            self._skipping = True
        elif not self._skipping:
            self._partial += start
        return self._emit(lines)

    def close(self) -> list[UploadRow]:
        """The rows of a last line without a final newline; ``InvalidInput`` if the upload had no rows."""
        rows = self._emit([self._take(b"")]) if self._partial or self._skipping else []
        if not self.rows:
            raise InvalidInput("the upload has no rows")
        return rows

    def _take(self, end: bytes | None) -> bytes | None:
        """The buffered start of a line joined with its ``end``; ``None`` for a line over the cap."""
        if self._skipping:
            self._skipping = False
            return None
        if not self._partial:
            return end
        self._partial += end or b""
        line = bytes(self._partial)
        self._partial.clear()
        return line

    def _emit(self, lines: list[bytes | None]) -> list[UploadRow]:
        if not lines:
            return []
        if self._lines == 0 and lines[0] is not None and lines[0].startswith(_BOM):
            lines[0] = lines[0][len(_BOM) :]
        rows = self._parse(lines, first=self._lines + 1)
        self._lines += len(lines)
        self.rows += len(rows)
        if self.max_rows is not None and self.rows > self.max_rows:
            raise PayloadTooLarge(f"the upload has more than {self.max_rows:,} rows", limit=self.max_rows)
        return rows

    def _parse(self, lines: list[bytes | None], *, first: int) -> list[UploadRow]:
        raise NotImplementedError


class JsonlParser(UploadParser):
    """JSONL: each non-blank line ``{"custom_id": "...", "inputs": <one record or one row>}``."""

    def _parse(self, lines: list[bytes | None], *, first: int) -> list[UploadRow]:
        rows: list[UploadRow] = []
        append, cap = rows.append, self.max_line_bytes
        for number, line in enumerate(lines, first):
            if line is None or len(line) > cap:
                append(UploadRow(line=number, error=self._too_long))
                continue
            try:
                item = _DECODE_LINE(line)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                if line.strip():
                    append(_jsonl_error(line, number=number, exc=exc))
                continue
            except RecursionError:
                append(UploadRow(line=number, error="the line's JSON is nested too deeply"))
                continue
            append(UploadRow(line=number, custom_id=item.custom_id, inputs=item.inputs))
        return rows


def _jsonl_error(line: bytes, *, number: int, exc: Exception) -> UploadRow:
    """The slow path for a bad line: what exactly is wrong with it, and its ``custom_id`` if readable."""
    try:
        line.decode()
    except UnicodeDecodeError as bad:
        return UploadRow(line=number, error=f"not valid UTF-8 (byte {bad.start + 1})")
    try:
        value = msgspec.json.decode(line)
    except msgspec.DecodeError as bad:
        reason = str(bad).removeprefix("JSON is malformed: ").replace("Input data was truncated", "truncated")
        return UploadRow(line=number, error=f"invalid JSON: {reason}")
    if not isinstance(value, dict):
        return UploadRow(line=number, error=f'expected an object {{"custom_id", "inputs"}}, got {describe(value)}')
    custom_id = value.get("custom_id")
    known = custom_id if isinstance(custom_id, str) and len(custom_id) <= MAX_CUSTOM_ID else None
    unknown = [key for key in value if key not in ("custom_id", "inputs")]
    if unknown:
        error = f'unknown key {unknown[0]!r}: a line has only "custom_id" and "inputs"'
    elif "inputs" not in value:
        error = 'missing "inputs"'
    elif not isinstance(value["inputs"], dict | list):
        error = f'"inputs" must be one record (an object) or one row (a list), got {describe(value["inputs"])}'
    elif not isinstance(custom_id, str):
        error = f'"custom_id" must be a string, got {describe(custom_id)}'
    elif len(custom_id) > MAX_CUSTOM_ID:
        error = f'"custom_id" is longer than {MAX_CUSTOM_ID} characters'
    else:  # NOTE: unreachable while the checks above mirror _JsonlLine; kept so no bad line reads as good
        error = str(exc)
    return UploadRow(line=number, custom_id=known, error=error)


class CsvParser(UploadParser):
    """CSV: a header row, then one record ``{feature: float}`` per line; a ``custom_id`` column is optional.

    Fields may be quoted (RFC 4180), but a quoted field must end on its line: a quoted newline is a line
    error, so that line numbers stay line numbers. Problems with the header are raised as ``InvalidInput``.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_rows: int | None = None,
        expected_columns: Sequence[str] | None = None,
    ) -> None:
        super().__init__(max_bytes=max_bytes, max_line_bytes=max_line_bytes, max_rows=max_rows)
        self.expected_columns = expected_columns
        self._width = 0  # columns per line; 0 until the header is read
        self._id_column: int | None = None
        self._features: list[tuple[int, str]] = []

    def _parse(self, lines: list[bytes | None], *, first: int) -> list[UploadRow]:
        rows: list[UploadRow] = []
        for number, line in enumerate(lines, first):
            cells = self._split(line)
            if cells is None:
                continue
            if isinstance(cells, str) and not self._width:
                raise InvalidInput(f"the CSV header (line {number}) cannot be read: {cells}", line=number)
            if isinstance(cells, str):
                rows.append(UploadRow(line=number, error=cells))
            elif self._width:
                rows.append(self._row(cells, number=number))
            else:
                self._read_header(cells)
        return rows

    def _split(self, line: bytes | None) -> list[str] | str | None:
        """The fields of one CSV line, why it cannot be read, or ``None`` for a blank line."""
        if line is None or len(line) > self.max_line_bytes:
            return self._too_long
        try:
            text = line.removesuffix(b"\r").decode()
        except UnicodeDecodeError as exc:
            return f"not valid UTF-8 (byte {exc.start + 1})"
        if not text or text.isspace():
            return None
        if '"' not in text:
            return text.split(",")
        try:
            return next(csv.reader((text,), strict=True))
        except csv.Error as exc:
            if str(exc) == "unexpected end of data":
                return "a quoted field does not end on its line (quoted newlines are not supported)"
            return f"malformed CSV: {exc}"

    def _read_header(self, cells: list[str]) -> None:
        names = [cell.strip() for cell in cells]
        if "" in names:
            raise InvalidInput(f"the CSV header has no name for column {names.index('') + 1}")
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise InvalidInput(f"the CSV header names {_listed(twice)} more than once", duplicates=twice)
        self._id_column = names.index("custom_id") if "custom_id" in names else None
        self._features = [(i, name) for i, name in enumerate(names) if name != "custom_id"]
        if not self._features:
            raise InvalidInput("the CSV header has no feature columns")
        if self.expected_columns is not None:
            _check_header([name for _, name in self._features], expected=self.expected_columns)
        self._width = len(names)

    def _row(self, cells: list[str], *, number: int) -> UploadRow:
        at = self._id_column
        custom_id = (cells[at] or None) if at is not None and at < len(cells) else None
        if len(cells) != self._width:
            error = f"expected {self._width} columns, got {len(cells)}"
            return UploadRow(line=number, custom_id=custom_id, error=error)
        if custom_id is not None and len(custom_id) > MAX_CUSTOM_ID:
            return UploadRow(line=number, error=f"custom_id is longer than {MAX_CUSTOM_ID} characters")
        record: dict[str, float] = {}
        for index, name in self._features:
            cell = cells[index]
            try:
                record[name] = float(cell)
                if "_" in cell:  # NOTE: float() reads "1_000" as 1000; no CSV reader does
                    raise ValueError(cell)
            except ValueError:
                reason = "empty value" if not cell.strip() else f"expected a number, got {describe(cell.strip())}"
                return UploadRow(line=number, custom_id=custom_id, error=f"column {name!r}: {reason}")
        return UploadRow(line=number, custom_id=custom_id, inputs=record)


def _check_header(features: list[str], *, expected: Sequence[str]) -> None:
    """``InvalidInput`` naming the model's features the header lacks and the columns it does not know."""
    missing = [name for name in expected if name not in features]
    unknown = [name for name in features if name not in expected]
    if not missing and not unknown:
        return
    problems = [f"lacks the model's features {_listed(missing)}"] if missing else []
    problems += [f"has columns the model does not take: {_listed(unknown)}"] if unknown else []
    raise InvalidInput(
        f"the CSV header {' and '.join(problems)}; "
        f"the columns must be the model's features ({_listed(expected)}) and optionally 'custom_id'",
        missing=missing,
        unknown=unknown,
    )


def _listed(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)


def check_rows(rows: Sequence[UploadRow], signature: ModelSignature, *, max_elements: int) -> list[UploadRow]:
    """``rows`` with every good row that does not fit ``signature`` turned into an error row.

    One ``to_feeds`` call checks all good rows at once; only when it fails is each row checked alone.
    """
    good = [row.inputs for row in rows if row.error is None]
    if not good:
        return list(rows)
    try:
        to_feeds(good, signature, max_elements=max_elements * len(good))
    except InvalidInput:
        return [_check_row(row, signature, max_elements=max_elements) for row in rows]
    return list(rows)


def _check_row(row: UploadRow, signature: ModelSignature, *, max_elements: int) -> UploadRow:
    if row.error is not None:
        return row
    try:
        to_feeds([row.inputs], signature, max_elements=max_elements)
    except InvalidInput as exc:
        return UploadRow(line=row.line, custom_id=row.custom_id, error=exc.message.removeprefix("row 0: "))
    return row
