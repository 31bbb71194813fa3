"""``input_digest``: one name for "the same inputs", shared by the result cache and the prediction log."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec

from inferq.contracts.predictions import Tensor

_encoder = msgspec.msgpack.Encoder()


def input_digest(inputs: Sequence[Tensor], *, output: str = "predictions", output_names: Sequence[str] = ()) -> str:
    """A hex SHA-256 of encoded input tensors and the output asked for: equal digests, equal requests.

    The tensors are the message's own (``inputs.encode_tensors``: dtype, shape and raw bytes), so records,
    rows and named tensors that feed the model the same values share a digest.
    """
    hasher = hashlib.sha256(_encoder.encode([output, list(output_names)]))
    for tensor in inputs:
        hasher.update(_encoder.encode(tensor))
    return hasher.hexdigest()
