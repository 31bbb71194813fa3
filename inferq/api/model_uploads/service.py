"""``ModelUploads``: a multipart upload → spooled file → validator child → one registry transaction.

Nothing is written to the registry until the child has accepted the file; the version is then
registered in one transaction (artifact, version row, ``default`` alias for a new model), so a
failure at any step leaves nothing behind but a temporary directory, which is removed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import msgspec
import structlog

from inferq.api.model_uploads.child import ChildLimits, run_validator
from inferq.api.model_uploads.spool import spool, workdir
from inferq.api.multipart import form_boundary, read_form
from inferq.contracts.models import ModelVersion, check_model_name
from inferq.errors import InferqError, MalformedRequest, Overloaded, PayloadTooLarge
from inferq.store.records import check_overrides
from inferq.store.registry import Registry

log = structlog.get_logger(__name__)

FORM_OVERHEAD = 1024 * 1024  # the text fields and part headers a body may carry beyond the file itself
RETRY_AFTER_S = 5.0
FIELDS = ("description", "feature_names", "class_names", "overrides")
T = TypeVar("T")
_names = msgspec.json.Decoder(tuple[str, ...])
_overrides = msgspec.json.Decoder(dict[str, int | float])


@dataclass(frozen=True)
class UploadMetadata:
    """The form's text fields, decoded: they come before the file part, so they are checked first."""

    description: str | None = None
    feature_names: tuple[str, ...] | None = None
    class_names: tuple[str, ...] | None = None
    overrides: Mapping[str, int | float] | None = None

    @classmethod
    def of(cls, fields: Mapping[str, str]) -> UploadMetadata:
        """Raises ``MalformedRequest`` for an unknown or undecodable field, ``InvalidInput`` for bad overrides."""
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise MalformedRequest(
                f"unknown form fields: {', '.join(unknown)} (known: {', '.join(FIELDS)}, then the file part)",
                fields=unknown,
            )
        overrides = _decode(_overrides, fields, "overrides", "a JSON object of numbers")
        return cls(
            description=fields.get("description"),
            feature_names=_decode(_names, fields, "feature_names", "a JSON array of strings"),
            class_names=_decode(_names, fields, "class_names", "a JSON array of strings"),
            overrides=check_overrides(overrides) if overrides is not None else None,
        )


class ModelUploads:
    """``POST /v1/models/{model}/versions`` without HTTP: at most ``concurrency`` uploads at once.

    ``on_registered(name)`` runs after a version committed: this process's catalog reloads at once (the
    registry's ``on_change`` tells the other processes).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        limits: ChildLimits,
        concurrency: int,
        on_registered: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._registry = registry
        self._limits = limits
        self._concurrency = concurrency
        self._free = concurrency
        self._on_registered = on_registered

    @property
    def busy(self) -> int:
        """Uploads being received or validated now."""
        return self._concurrency - self._free

    async def upload(
        self,
        name: str,
        *,
        content_type: str | None,
        content_length: str | None,
        body: AsyncIterator[bytes],
        gone: Callable[[], Awaitable[None]] | None = None,
    ) -> ModelVersion:
        """Register ``body`` (multipart/form-data: the fields, then ``file``) as the next version of ``name``.

        Raises ``PayloadTooLarge`` (over ``INFERQ_MAX_MODEL_BYTES``: by ``Content-Length`` before a byte
        is read), ``Overloaded`` (every validation slot busy), ``MalformedRequest`` (not a form, no file
        part), ``InvalidModel`` (empty, a pickle/joblib file, refused by the validator), ``InvalidInput``
        (a bad name or overrides) and what ``run_validator`` raises.

        ``gone`` returns when the client disconnects: a validation still running then is stopped (its child
        killed, its slot freed) and nothing is registered — a client that gave up and retries must not make
        two versions, nor hold a slot for the validator's whole time limit.
        """
        check_model_name(name)
        cap = self._limits.max_model_bytes
        if content_length and content_length.isdecimal() and int(content_length) > cap + FORM_OVERHEAD:
            raise _too_large(cap)
        boundary = form_boundary(content_type)
        with self._slot(), workdir() as tmp:
            form = await read_form(body, boundary=boundary, max_bytes=cap + FORM_OVERHEAD)
            meta = UploadMetadata.of(form.fields)
            source = tmp / "upload.onnx"
            size = await spool(form.chunks, path=source, max_bytes=cap)
            named = meta.feature_names is not None or meta.class_names is not None
            stored = tmp / "stored.onnx" if named else source
            validated = run_validator(
                source,
                limits=self._limits,
                feature_names=meta.feature_names,
                class_names=meta.class_names,
                out=stored if named else None,
            )
            accepted = await _unless_gone(validated, gone, model=name)
            model = await asyncio.to_thread(_read_checked, stored, sha256=accepted.sha256)
            version = await self._registry.register(
                name=name,
                model=model,
                signature=accepted.signature,
                description=meta.description,
                overrides=meta.overrides,
            )
        log.info("model.uploaded", model=name, version=version.version, sha256=version.sha256, upload_bytes=size,
                 size_bytes=version.size_bytes, filename=form.file.filename)  # fmt: skip
        if self._on_registered is not None:
            with contextlib.suppress(InferqError):  # best effort: the catalog's own refresh catches up anyway
                await self._on_registered(name)
        return version

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        """One of ``concurrency`` upload slots, taken before the body is read (it bounds temp disk too)."""
        if self._free <= 0:
            raise Overloaded(
                "too many model uploads are being validated right now (INFERQ_MODEL_VALIDATE_CONCURRENCY); "
                "try again shortly",
                retry_after_s=RETRY_AFTER_S,
            )
        self._free -= 1
        try:
            yield
        finally:
            self._free += 1


async def _unless_gone(work: Awaitable[T], gone: Callable[[], Awaitable[None]] | None, *, model: str) -> T:
    """``work``'s result, or ``MalformedRequest`` once ``gone`` returns first (``work`` is cancelled and awaited)."""
    if gone is None:
        return await work
    task, watcher = asyncio.ensure_future(work), asyncio.ensure_future(gone())
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled() or not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await task  # the validator's own cleanup (its process group killed) has run
        log.warning("model.upload_abandoned", model=model)
        raise MalformedRequest("the client disconnected before its upload was validated; nothing was registered")
    return task.result()


def _read_checked(path: Path, *, sha256: str) -> bytes:
    """The file the child accepted, read back: it must be the very bytes it hashed."""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise InferqError("the validated model file changed before it was registered")
    return data


def _decode(decoder: msgspec.json.Decoder[T], fields: Mapping[str, str], name: str, what: str) -> T | None:
    raw = fields.get(name)
    if raw is None:
        return None
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise MalformedRequest(f"form field {name!r} must be {what}: {exc}", field=name) from None


def _too_large(cap: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the model file is over the limit of {cap:,} bytes (INFERQ_MAX_MODEL_BYTES)", max_bytes=cap)
