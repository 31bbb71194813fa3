"""In-process engine throughput for ``wine@2`` at batch 1, 64 and 1024: the floor for every later path.

Run: ``.venv/bin/python bench/engine.py [--seconds S]``. Prints one table on stdout. Three rows per
batch size: ORT alone (``Runner.run`` on a ready array), the whole pipeline from JSON-like rows
(``inputs.to_feeds`` + run + postprocess), and the same pipeline from records.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from inferq.cli.demo import build
from inferq.engine import Runner, predict, to_predictions
from inferq.inputs import to_feeds
from inferq.settings import EngineSettings

BATCHES = (1, 64, 1024)


def measure(fn: Callable[[], Any], *, rows: int, seconds: float) -> tuple[float, float]:
    """Rows per second and median µs per call, running ``fn`` for about ``seconds``."""
    fn()  # warm
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    median = float(np.median(samples))
    return rows / median, median * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    args = parser.parse_args()

    model = build("wine", 2)
    runner = Runner.load(model.onnx, settings=EngineSettings(intra_op_threads=args.threads))
    signature = runner.signature
    names = signature.feature_names or ()
    rng = np.random.default_rng(0)
    print(f"# wine@2 (100-tree random forest, {len(names)} features), ORT intra-op threads={args.threads}")
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"{'batch':>6} {'path':<22} {'rows/s':>12} {'µs/call':>10}")
    for batch in BATCHES:
        x = rng.normal(size=(batch, len(names))).astype(np.float32) * 3 + 10
        rows = x.tolist()
        records = [dict(zip(names, row, strict=True)) for row in rows]
        feeds = {signature.inputs[0].name: x}
        cases: dict[str, Callable[[], Any]] = {
            "ort run": lambda feeds=feeds: runner.run(feeds),
            "run + postprocess": lambda feeds=feeds: to_predictions(signature, runner.run(feeds)),
            "pipeline (rows)": lambda rows=rows: predict(runner, rows),
            "pipeline (records)": lambda records=records: predict(runner, records),
            "to_feeds (rows)": lambda rows=rows: to_feeds(rows, signature),
        }
        for label, fn in cases.items():
            rate, micros = measure(fn, rows=batch, seconds=args.seconds)
            print(f"{batch:>6} {label:<22} {rate:>12,.0f} {micros:>10.1f}")
    runner.close()


if __name__ == "__main__":
    main()
