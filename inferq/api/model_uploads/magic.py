"""Refuse pickles and joblib files by their first bytes, before anything parses them.

A pickle runs code when it is loaded, so an uploaded one is never opened; the ONNX parser would
refuse it anyway, but a message naming what the file is (and what to do instead) is kinder. ONNX
files start with a protobuf field tag (``0x08``, the ``ir_version``, in every exporter's output),
which none of these signatures can be mistaken for.
"""

from __future__ import annotations

from inferq.errors import InvalidModel

HEAD_BYTES = 8  # enough for every signature below
_HINT = (
    "pickles run code when loaded, so uploads accept ONNX only; convert it on your own machine with "
    "`inferq models import FILE --name NAME` (scikit-learn estimators become ONNX), or export ONNX yourself"
)
_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive (a joblib/numpy .npz or a zipped pickle)"),
    (b"\x1f\x8b", "gzip-compressed data (a compressed joblib file)"),
    (b"\xfd7zXZ\x00", "xz-compressed data (a compressed joblib file)"),
    (b"\x5d\x00\x00", "lzma-compressed data (a compressed joblib file)"),
    (b"\x04\x22\x4d\x18", "lz4-compressed data (a compressed joblib file)"),
    (b"ZF", "an old-format compressed joblib file"),
    (b"\x93NUMPY", "a numpy .npy array"),
)


def refuse_serialized(head: bytes) -> None:
    """``InvalidModel`` when ``head`` (a file's first bytes) is a pickle, joblib or compressed file."""
    what = identify(head)
    if what is not None:
        raise InvalidModel(f"the file is {what}, not an ONNX model: {_HINT}", detected=what)


def identify(head: bytes) -> str | None:
    """What the file's first bytes say it is, among the formats refused; ``None`` for anything else."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a Python pickle (protocol {head[1]}; joblib writes these too)"
    for prefix, what in _PREFIXES:
        if head.startswith(prefix):
            return what
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return "bzip2-compressed data (a compressed joblib file)"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0:  # a zlib stream's header check
        return "zlib-compressed data (a compressed joblib file)"
    return None
