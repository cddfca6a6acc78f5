"""A notebook's last line: hand its key results to `cookbook run` and stop its server.

`cookbook run` names, in the environment variable RESULTS_ENV of each notebook's kernel, the file
it collects that notebook's results from into the run's summary.json (the docs site's table). Run
by hand, the variable is unset and nothing is written; the server is stopped either way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS_ENV = "COOKBOOK_RESULTS_PATH"


def record(path: str | None, **results: Any) -> None:
    """Merge key results into the file `cookbook run` will collect (nothing without a path)."""
    if not path:
        return
    target = Path(path)
    data = json.loads(target.read_text()) if target.exists() else {}
    data.update(results)
    target.write_text(json.dumps(data, indent=2, default=str))


def finish(served, **results: Any) -> None:
    """Record the results, after the server's variant, engine, model and start-up seconds (a
    result of the same name wins), into the file `cookbook run` named (RESULTS_ENV; none: nothing
    is recorded), then stop what `served` started (a Server, or the router's Replicas)."""
    own = {name: getattr(served, name) for name in ("variant", "engine", "model", "startup_s")}
    record(os.environ.get(RESULTS_ENV), **(own | results))
    served.stop()
