"""A notebook's last line: hand its key results to `cookbook run` and stop its server.

`cookbook run` passes each notebook a RESULTS_PATH and collects what was written there into the
run's summary.json (the docs site's table). Run by hand, RESULTS_PATH is None and nothing is
written; the server is stopped either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def record(path: str | None, **results: Any) -> None:
    """Merge key results into the file `cookbook run` will collect (nothing without a path)."""
    if not path:
        return
    target = Path(path)
    data = json.loads(target.read_text()) if target.exists() else {}
    data.update(results)
    target.write_text(json.dumps(data, indent=2, default=str))


def finish(served, results_path: str | None, **results: Any) -> None:
    """Record the results, with the server's engine, model and start-up seconds unless given,
    then stop what `served` started (a Server, or the router's Replicas)."""
    for name in ("engine", "model", "startup_s"):
        results.setdefault(name, getattr(served, name))
    record(results_path, **results)
    served.stop()
