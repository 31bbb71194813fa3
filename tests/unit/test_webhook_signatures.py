"""Standard Webhooks signatures: the spec's test vector, interop with the standardwebhooks library, rotation."""

from __future__ import annotations

import base64
import json
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from inferq.webhooks.signatures import InvalidSignature, headers, new_secret, sign, signature_header, verify

BODY = json.dumps({"type": "job.succeeded", "data": {"id": "job_1", "rows": 3}}).encode()
# The test vector of the Standard Webhooks and Svix reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_new_secret_is_whsec_and_24_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 24
    assert first != second


def test_sign_matches_the_reference_test_vector() -> None:
    assert sign(VECTOR_SECRET, msg_id=VECTOR_ID, timestamp=VECTOR_TIMESTAMP, body=VECTOR_BODY) == VECTOR_SIGNATURE


def test_headers_carry_id_timestamp_signature_and_content_type() -> None:
    secret = new_secret()
    made = headers([secret], msg_id="msg_1", timestamp=1_700_000_000, body=BODY)
    assert made == {
        "webhook-id": "msg_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": sign(secret, msg_id="msg_1", timestamp=1_700_000_000, body=BODY),
        "content-type": "application/json",
    }


def test_standardwebhooks_library_verifies_our_payload() -> None:
    secret = new_secret()
    made = headers(secret, msg_id="msg_2", timestamp=int(time.time()), body=BODY)
    assert Webhook(secret).verify(BODY, made) == json.loads(BODY)


def test_tampered_body_fails_verification() -> None:
    secret = new_secret()
    made = headers([secret], msg_id="msg_3", timestamp=int(time.time()), body=BODY)
    tampered = BODY.replace(b'"rows": 3', b'"rows": 4')
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(tampered, made)
    with pytest.raises(InvalidSignature, match="no webhook signature matches"):
        verify([secret], body=tampered, headers=made)


def test_changed_id_fails_verification() -> None:
    secret = new_secret()
    made = headers([secret], msg_id="msg_4", timestamp=int(time.time()), body=BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**made, "webhook-id": "msg_5"})


@pytest.mark.parametrize(
    ("offset_s", "library_message", "our_message"),
    [(-600, "too old", "600 s old"), (600, "too new", "600 s ahead")],
)
def test_stale_or_future_timestamp_fails_verification(offset_s: int, library_message: str, our_message: str) -> None:
    secret = new_secret()
    now = int(time.time())
    made = headers([secret], msg_id="msg_6", timestamp=now + offset_s, body=BODY)
    with pytest.raises(WebhookVerificationError, match=library_message):
        Webhook(secret).verify(BODY, made)
    with pytest.raises(InvalidSignature, match="webhook-timestamp is"):
        verify([secret], body=BODY, headers=made)
    with pytest.raises(InvalidSignature, match=f"webhook-timestamp is {our_message}"):
        verify([secret], body=BODY, headers=made, now=now)


def test_rotation_signs_with_both_secrets_and_either_receiver_verifies() -> None:
    old, new, stranger = new_secret(), new_secret(), new_secret()
    made = headers([old, new], msg_id="msg_7", timestamp=int(time.time()), body=BODY)
    entries = made["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert all(entry.startswith("v1,") for entry in entries)
    assert Webhook(old).verify(BODY, made) == json.loads(BODY)
    assert Webhook(new).verify(BODY, made) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(BODY, made)
    verify([new], body=BODY, headers=made)
    verify([stranger, old], body=BODY, headers=made)


def test_verify_accepts_our_signature_within_tolerance() -> None:
    secret = new_secret()
    made = headers([secret], msg_id="msg_8", timestamp=1_700_000_000, body=BODY)
    verify(secret, body=BODY, headers=made, now=1_700_000_299)
    with pytest.raises(InvalidSignature, match="301 s old"):
        verify(secret, body=BODY, headers=made, now=1_700_000_301)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"webhook-id": ""}, "missing"),
        ({"webhook-signature": ""}, "missing"),
        ({"webhook-timestamp": "1700000000.5"}, "not a Unix time"),
        ({"webhook-timestamp": "soon"}, "not a Unix time"),
        ({"webhook-signature": "v1"}, "no webhook signature matches"),
        ({"webhook-signature": "v1,not base64!"}, "no webhook signature matches"),
        ({"webhook-signature": "v2," + VECTOR_SIGNATURE[3:]}, "no webhook signature matches"),
    ],
)
def test_verify_rejects_malformed_headers(changes: dict[str, str], message: str) -> None:
    made = headers([VECTOR_SECRET], msg_id=VECTOR_ID, timestamp=1_700_000_000, body=VECTOR_BODY)
    with pytest.raises(InvalidSignature, match=message):
        verify([VECTOR_SECRET], body=VECTOR_BODY, headers={**made, **changes}, now=1_700_000_000)


def test_verify_reads_header_names_in_any_case() -> None:
    made = headers([VECTOR_SECRET], msg_id=VECTOR_ID, timestamp=1_700_000_000, body=VECTOR_BODY)
    verify(VECTOR_SECRET, body=VECTOR_BODY, headers={k.title(): v for k, v in made.items()}, now=1_700_000_000)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with 'whsec_'"),
        ("whsec_not*base64", "followed by base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes, not 5"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "24 to 64 bytes, not 65"),
    ],
)
def test_bad_secrets_are_refused(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sign(secret, msg_id="msg_9", timestamp=1, body=b"{}")


def test_signing_needs_a_secret_and_a_header_safe_id() -> None:
    with pytest.raises(ValueError, match="at least one webhook secret"):
        signature_header([], msg_id="msg_10", timestamp=1, body=b"{}")
    for bad_id in ("", "msg 11", "msg\n11", "msg_é"):
        with pytest.raises(ValueError, match="printable ASCII"):
            headers([VECTOR_SECRET], msg_id=bad_id, timestamp=1, body=b"{}")
