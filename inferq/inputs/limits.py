"""The per-request element cap shared by every input form."""

from __future__ import annotations

from inferq.errors import InvalidInput

# Values per request across all inputs; the API passes its configured limit.
MAX_ELEMENTS = 1_000_000


def check_elements(count: int, *, max_elements: int) -> None:
    """Raise ``InvalidInput`` when a request carries more than ``max_elements`` values."""
    if count > max_elements:
        raise InvalidInput(
            f"too many values: {count:,} exceeds the limit of {max_elements:,} per request; "
            "split the input into smaller requests",
            elements=count,
            limit=max_elements,
        )
