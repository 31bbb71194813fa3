"""Settings from the environment, and errors crossing boundaries as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferq.contracts.errors import ErrorInfo
from inferq.errors import InferqError, InvalidInput, ModelNotFound, error_class
from inferq.settings import Settings, UnknownSetting, redacted_url


def test_environment_reaches_every_section() -> None:
    settings = Settings.from_env(
        {
            "INFERQ_REDIS_URL": "redis://r:6379/0",
            "INFERQ_ENGINE_THREADS": "2",
            "INFERQ_MODEL_ROOT": "/srv/models",
            "INFERQ_MAX_BATCH": "128",
            "INFERQ_MAX_BODY_BYTES": "1024",
            "INFERQ_PORT": "9000",
            "INFERQ_PRODUCERS": "billing=acme, fraud",
            "INFERQ_DATABASE_URL": "",  # empty counts as unset
        }
    )
    assert settings.services.redis_url == "redis://r:6379/0"
    assert settings.services.database_url is None
    assert settings.engine.intra_op_threads == 2
    assert settings.engine.model_root == Path("/srv/models")
    assert (settings.queue.max_batch, settings.api.max_body_bytes, settings.port) == (128, 1024, 9000)
    assert settings.queue.producer_tenants() == {"billing": "acme", "fraud": "default"}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("INFERQ_MODEL_CACHE_SIZE", "abc", "invalid INFERQ_MODEL_CACHE_SIZE: Expected `int`, got `str`"),
        ("INFERQ_ENGINE_THREADS", "-5", "invalid INFERQ_ENGINE_THREADS: Expected `int` >= 1"),
        ("INFERQ_PORT", "70000", "invalid INFERQ_PORT: Expected `int` <= 65535"),
        ("INFERQ_SOCKET_TIMEOUT_S", "0", "invalid INFERQ_SOCKET_TIMEOUT_S"),
    ],
)
def test_malformed_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("`", ".").replace("(", r"\(")):
        Settings.from_env({name: value})


def test_unknown_variable_is_a_warning_not_silence() -> None:
    with pytest.warns(UnknownSetting, match="INFERQ_REDIS_ULR"):
        settings = Settings.from_env({"INFERQ_REDIS_ULR": "redis://typo"})
    assert settings.services.redis_url is None


def test_errors_round_trip_as_data() -> None:
    error = InvalidInput("row 3: missing feature 'alcohol'", row=3, field="alcohol")
    back = ErrorInfo.from_exception(error).to_exception()
    assert type(back) is InvalidInput
    assert (back.message, back.details, back.code) == (error.message, {"row": 3, "field": "alcohol"}, "invalid_input")
    # a detail called "message" does not collide with the message
    assert ErrorInfo(code="model_not_found", message="m", details={"message": 1}).to_exception().details == {
        "message": 1
    }


def test_error_classes_defined_later_are_found_by_code() -> None:
    assert error_class("model_not_found") is ModelNotFound
    assert error_class("no-such-code") is InferqError

    class LateError(InferqError):
        code = "late_test_error"

    assert error_class("late_test_error") is LateError


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://api:s3cret@redis:6379/0", "redis://api:***@redis:6379/0"),
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        (
            "postgresql://inferq:p%40ss@db:5432/inferq?sslmode=require",
            "postgresql://inferq:***@db:5432/inferq?sslmode=require",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (None, "(unset)"),
    ],
)
def test_urls_are_shown_without_their_password(url: str | None, shown: str) -> None:
    assert redacted_url(url) == shown


@pytest.mark.parametrize("prefix", ["inferq*", "a b", "{x}", "", "-lead", "x" * 65])
def test_a_key_prefix_that_would_widen_acl_patterns_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="INFERQ_KEY_PREFIX"):
        Settings.from_env({"INFERQ_KEY_PREFIX": prefix or " "})
