"""The upload validator's verdict: what ``python -m inferq.engine.validate`` prints for the API to read."""

from __future__ import annotations

import msgspec

from inferq.contracts.models import ModelSignature


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    """Why the validator refused the model: an error ``code`` (``invalid_model``, ``model_load_failed``)."""

    code: str
    message: str


class ValidationVerdict(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line of JSON: the stored file's signature, sha256 and size, or the error that refused it.

    ``peak_rss_bytes`` is the validator's peak resident memory (for the log: what a model costs to load).
    """

    ok: bool
    signature: ModelSignature | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    peak_rss_bytes: int | None = None
    error: Refusal | None = None
