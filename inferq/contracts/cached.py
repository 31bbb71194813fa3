"""The result cache's value: what a deterministic version answered to one input digest.

Only the outputs are kept, never the request's id, tenant, key or correlation id: a hit is answered
under the new request's own (``api.result_cache``). Written by the worker that ran the request
(``workers.publisher``) under ``Names.result_cache``; the tag lets a later format be told apart.
"""

from __future__ import annotations

import msgspec

from inferq.contracts.predictions import Prediction, Tensor


class CachedResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="cached.v1", tag_field="kind"):
    """The predictions (v1) or output tensors (V2 and ``output="tensors"``) of a succeeded request."""

    predictions: tuple[Prediction, ...] = ()
    tensors: tuple[Tensor, ...] = ()


cached_encoder = msgspec.msgpack.Encoder()
cached_decoder = msgspec.msgpack.Decoder(CachedResult)
