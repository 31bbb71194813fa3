"""docs/metrics.md against the code: every metric inferq renders is documented, and every PromQL example and
alert parses and uses only metrics and labels that exist (the dashboard's own check, tests/unit/compose_checks.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .compose_checks import exposed_metrics, query_problems

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def documented_queries(text: str) -> list[str]:
    """The PromQL of the doc: each ```promql block's expressions (continuation lines joined) and each alert's."""
    queries = []
    for block in re.findall(r"```promql\n(.*?)```", text, re.S):
        current: list[str] = []
        for line in block.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line.startswith(" ") and current:  # continues the expression above
                current.append(line.strip())
                continue
            if current:
                queries.append(" ".join(current))
            current = [line.strip()]
        if current:
            queries.append(" ".join(current))
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        rules: list[dict[str, Any]] = [r for g in yaml.safe_load(block)["groups"] for r in g["rules"]]
        queries += [" ".join(r["expr"].split()) for r in rules]
    return queries


def test_every_rendered_metric_is_documented() -> None:
    text = DOC.read_text()
    documented = set(re.findall(r"`(inferq_[a-z_]+)`", text))
    rendered = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exposed_metrics() if not n.endswith("_created")}
    assert rendered - documented == set()
    assert {n for n in documented if n.startswith("inferq_") and n not in rendered} == set()  # nothing made up


def test_the_examples_and_alerts_query_what_exists() -> None:
    known = {**exposed_metrics(), "up": frozenset({"job", "instance"})}
    queries = documented_queries(DOC.read_text())
    assert len(queries) >= 12
    problems = [p for q in queries for p in query_problems(q.replace("<the p95 query>", "vector(1)"), known)]
    assert problems == []


def test_the_check_catches_a_misspelt_metric_in_the_doc() -> None:
    wrong = DOC.read_text().replace("inferq_worker_queue_wait_seconds_bucket", "inferq_worker_queue_seconds_bucket")
    problems = [p for q in documented_queries(wrong) for p in query_problems(q, exposed_metrics())]
    assert any("inferq_worker_queue_seconds_bucket" in p for p in problems)
