"""Write an uploaded model's bytes to a temporary file as they arrive: capped, sniffed, never held whole."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from inferq.api.model_uploads.magic import HEAD_BYTES, refuse_serialized
from inferq.errors import InvalidModel, PayloadTooLarge


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A private temporary directory (mode 0700) for one upload, removed with all it holds on exit."""
    path = Path(tempfile.mkdtemp(prefix="inferq-upload-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def spool(chunks: AsyncIterator[bytes], *, path: Path, max_bytes: int) -> int:
    """Write ``chunks`` to ``path``; the number of bytes written.

    Raises ``PayloadTooLarge`` as soon as the file passes ``max_bytes``, and ``InvalidModel`` for an
    empty file or one whose first bytes say it is a pickle, joblib or compressed file (refused
    before the rest is read).
    """
    size = 0
    head = b""
    with path.open("wb") as out:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(
                    f"the model file is over the limit of {max_bytes:,} bytes (INFERQ_MAX_MODEL_BYTES)",
                    max_bytes=max_bytes,
                )
            if len(head) < HEAD_BYTES:
                head += chunk[: HEAD_BYTES - len(head)]
                if len(head) == HEAD_BYTES:
                    refuse_serialized(head)
            # NOTE: a plain write: it lands in the page cache (one body chunk, ~64 KiB, at a time).
            out.write(chunk)
    if size == 0:
        raise InvalidModel("the file is empty: send the ONNX model's bytes as the `file` part")
    refuse_serialized(head)  # a file shorter than HEAD_BYTES
    return size
