"""The worker's run-time model decides inline vs thread: fixed cost from small runs, per-row from large."""

from __future__ import annotations

from inferq.workers.executor import INLINE_MAX_MS, Throughput


def test_mixed_batch_sizes_do_not_send_cheap_full_batches_to_a_thread() -> None:
    """A small forest: batch 1 ≈ 0.1 ms (fixed cost), batch 64 ≈ 0.4 ms. Interleaved, as under load."""
    model = Throughput()
    for _ in range(50):
        model.add(1, 0.1)
        model.add(64, 0.42)
    predicted = model.predict_ms(64)
    assert predicted is not None
    assert predicted < INLINE_MAX_MS  # the old single "ms per row" average predicted 64 × ~0.05 = 3.2 ms
    assert model.rows == 50 * 65


def test_expensive_rows_go_to_a_thread() -> None:
    model = Throughput()
    model.add(1, 0.4)
    model.add(64, 20.0)
    predicted = model.predict_ms(32)
    assert predicted is not None
    assert predicted > INLINE_MAX_MS


def test_no_prediction_before_a_large_batch() -> None:
    model = Throughput()
    model.add(1, 0.1)
    assert model.predict_ms(64) is None
