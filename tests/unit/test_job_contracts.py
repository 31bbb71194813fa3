"""Job contracts: the strict HTTP body, completion windows, event filters, views, and wire encodings."""

from __future__ import annotations

import datetime as dt
import json

import msgspec
import pytest

from inferq.contracts.errors import ErrorInfo
from inferq.contracts.jobs import (
    JobCreateBody,
    JobEvent,
    JobRecord,
    ResultLine,
    RowOutcome,
    WebhookSpec,
    completion_window_s,
    event_wanted,
    new_job_id,
    outcomes_decoder,
    outcomes_encoder,
)
from inferq.contracts.predictions import Prediction
from inferq.errors import InvalidInput

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def record(**changes: object) -> JobRecord:
    base = JobRecord(
        id="job_" + "a" * 32, tenant="acme", model="iris", version=2, status="running", total_rows=8,
        succeeded_rows=3, failed_rows=1, chunks_total=2, chunks_done=1, created_at=T0,
        deadline_at=T0 + dt.timedelta(hours=24), completion_window_s=86400.0, started_at=T0,
        idempotency_key="k", request_sha256="0" * 64, webhook=WebhookSpec(url="https://h.example/x"),
        metadata={"batch": "b1"},
    )  # fmt: skip
    return msgspec.structs.replace(base, **changes)


def test_the_inline_body_decodes_with_its_defaults() -> None:
    body = msgspec.json.decode(
        b'{"model": "iris@2", "inputs": [[1, 2], {"a": 1}], "custom_ids": ["x", "y"],'
        b' "webhook": {"url": "https://h.example/x"}, "completion_window": "24h", "metadata": {"k": "v"}}',
        type=JobCreateBody,
    )
    assert (body.model, body.inputs, body.custom_ids) == ("iris@2", [[1, 2], {"a": 1}], ["x", "y"])
    assert body.webhook == WebhookSpec(url="https://h.example/x", events=["completed"])
    assert (body.completion_window, body.metadata) == ("24h", {"k": "v"})
    bare = msgspec.json.decode(b'{"model": "iris", "inputs": [], "completion_window": 3600}', type=JobCreateBody)
    assert (bare.custom_ids, bare.webhook, bare.completion_window, bare.metadata) == (None, None, 3600, None)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "iris", "inputs": [], "extra": 1}',
        b'{"inputs": []}',
        b'{"model": "iris", "inputs": {}}',
        b'{"model": "iris", "inputs": [], "webhook": {"url": "https://h", "events": ["job.done"]}}',
        b'{"model": "iris", "inputs": [], "webhook": {"url": "https://h", "events": []}}',
        b'{"model": "iris", "inputs": [], "webhook": {"url": "https://h", "secret": "s"}}',
        b'{"model": "iris", "inputs": [], "metadata": {"k": 1}}',
    ],
)
def test_bad_bodies_are_rejected(raw: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=JobCreateBody)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, 100.0), (3600, 3600.0), (1.5, 1.5), ("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("24h", 86400.0),
     (" 2d ", 172800.0), ("0.5h", 1800.0)],
)  # fmt: skip
def test_completion_windows_read_seconds_and_units(value: str | float | None, seconds: float) -> None:
    assert completion_window_s(value, default_s=100.0, max_s=7 * 86400) == seconds


@pytest.mark.parametrize("value", [0, -5, "0h", "-1h", "24x", "h", "", "8d", 8 * 86400])
def test_bad_or_too_long_completion_windows_are_invalid_input(value: str | float) -> None:
    with pytest.raises(InvalidInput, match="completion_window") as caught:
        completion_window_s(value, default_s=100.0, max_s=7 * 86400)
    assert caught.value.details == {"field": "completion_window"}


def test_completed_means_any_terminal_event() -> None:
    terminal = ["job.succeeded", "job.failed", "job.canceled", "job.expired"]
    assert [event_wanted(("completed",), t) for t in terminal] == [True] * 4
    assert event_wanted(("completed",), "job.started") is False
    assert event_wanted(("job.started", "job.failed"), "job.started") is True
    assert event_wanted(("job.failed",), "job.succeeded") is False


def test_the_view_hides_tenant_and_idempotency_and_reports_progress() -> None:
    view = record().view()
    encoded = json.loads(msgspec.json.encode(view))
    assert set(encoded) == {
        "id", "object", "model", "version", "status", "counts", "progress", "created_at", "deadline_at",
        "started_at", "finished_at", "webhook", "error", "metadata",
    }  # fmt: skip
    assert (encoded["object"], encoded["counts"], encoded["progress"]) == (
        "job",
        {"total": 8, "succeeded": 3, "failed": 1},
        0.5,
    )
    assert encoded["webhook"] == {"url": "https://h.example/x", "events": ["completed"]}
    assert encoded["created_at"] == "2026-11-29T12:00:00Z"
    assert record(total_rows=3, succeeded_rows=1, failed_rows=0).view().progress == 0.3333
    assert record().terminal is False
    assert record(status="expired", finished_at=T0).terminal is True


def test_webhook_payloads_follow_standard_webhooks() -> None:
    event = JobEvent(
        id="msg_1", type="job.succeeded", job_id="job_1", tenant="acme", created_at=T0, data=record().view()
    )
    payload = json.loads(msgspec.json.encode(event.payload()))
    assert set(payload) == {"type", "timestamp", "data"}
    assert (payload["type"], payload["timestamp"], payload["data"]["id"]) == (
        "job.succeeded",
        "2026-11-29T12:00:00Z",
        "job_" + "a" * 32,
    )


def test_row_outcomes_round_trip_as_msgpack_and_result_lines_keep_their_keys() -> None:
    outcomes = (
        RowOutcome(prediction=Prediction(label=1, confidence=0.5)),
        RowOutcome(error=ErrorInfo(code="c", message="m")),
    )
    assert outcomes_decoder.decode(outcomes_encoder.encode(outcomes)) == outcomes
    line = ResultLine(custom_id="x", index=4, line=None, status="failed", error=ErrorInfo(code="c", message="m"))
    assert json.loads(msgspec.json.encode(line)) == {
        "custom_id": "x", "index": 4, "line": None, "status": "failed", "prediction": None,
        "error": {"code": "c", "message": "m"},
    }  # fmt: skip


def test_job_ids_are_job_and_32_hex_digits() -> None:
    ids = {new_job_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("job_") and len(i) == 36 and int(i[4:], 16) >= 0 for i in ids)
