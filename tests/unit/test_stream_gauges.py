"""The stream gauges in prometheus-client's multiprocess mode (how ``serve --workers N`` runs): each
scrape shows the reading it was given, once, and leaves nothing behind in the shared directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRAPES = """
import json, os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from inferq.api.metrics import Metrics
from inferq.streams.backlog import Backlog, LaneBacklog, PartitionBacklog

def reading(backlog):
    lane = LaneBacklog(lane="interactive", backlog=backlog, pending=0, oldest_age_s=0.5)
    part = PartitionBacklog(partition="m@1", backlog=backlog, pending=0, consumers=1, oldest_age_s=0.5,
                            dead_letters=0, lanes=(lane,))
    return Backlog(total=backlog, partitions=(part,))

metrics = Metrics()
first = metrics.render(reading(7)).decode()
second = metrics.render(reading(3)).decode()
print(json.dumps({"first": first, "second": second, "files": sorted(os.listdir(sys.argv[1]))}))
"""


def test_each_scrape_shows_its_own_reading_once_and_writes_nothing(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", SCRAPES, str(tmp_path)], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    series = 'inferq_stream_backlog{lane="interactive",partition="m@1"}'
    assert [line for line in seen["second"].splitlines() if line.startswith(series)] == [f"{series} 3.0"]
    assert f"{series} 7.0" in seen["first"]
    assert not [f for f in seen["files"] if "stream" in f or f.startswith("gauge_all")]
    assert seen["second"].count("# TYPE inferq_stream_backlog gauge") == 1
