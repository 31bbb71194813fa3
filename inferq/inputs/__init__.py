"""User inputs → model feeds, checked against a signature; feeds ↔ wire tensors."""

from __future__ import annotations

from inferq.inputs.arrays import check_feeds, shape_text
from inferq.inputs.cells import NUMPY_DTYPES
from inferq.inputs.feeds import batch_size, to_feeds
from inferq.inputs.limits import MAX_ELEMENTS
from inferq.inputs.tensors import decode_tensors, encode_tensors

__all__ = [
    "MAX_ELEMENTS",
    "NUMPY_DTYPES",
    "batch_size",
    "check_feeds",
    "decode_tensors",
    "encode_tensors",
    "shape_text",
    "to_feeds",
]
