"""A /metrics snapshot taken inside a reference benchmark, between its warm-up and its run.

Set COOKBOOK_METRICS_URL (the server's /metrics) and COOKBOOK_METRICS_SNAPSHOT (a file) and the
shims beside this file save the server's /metrics text there at the moment the benchmark prints
the line that ends its warm-up, before its measured requests start (and before its own clock
starts), with OPENAI_API_KEY as the bearer key. Standard library only: it runs in the engines'
environments. Without the variables nothing is patched.
"""

from __future__ import annotations

import builtins
import os
import urllib.request


def _save(url: str, path: str) -> None:
    request = urllib.request.Request(url)
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    with open(path, "w") as f:
        f.write(text)


def install(module, marker: str) -> None:
    """Save the snapshot when `module` (a benchmark module) first prints a line starting with
    `marker`: the module's `print` is looked up in its globals before the builtins."""
    url, path = os.environ.get("COOKBOOK_METRICS_URL"), os.environ.get("COOKBOOK_METRICS_SNAPSHOT")
    if not (url and path):
        return
    done = []

    def hooked_print(*args, **kwargs):
        if not done and args and str(args[0]).startswith(marker):
            done.append(True)
            _save(url, path)
        builtins.print(*args, **kwargs)

    module.print = hooked_print
