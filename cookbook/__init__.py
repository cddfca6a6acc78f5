"""The LFM2.5-on-SGLang cookbook's library: what the notebooks, and your own code, import.

  recipes, commands, gpu, machine   the verified cells as data, and the commands built from them
  launch_plans, processes, server   what a launch runs, the processes it owns, the server you use
  client, tools, vision             the OpenAI-API calls the notebooks teach
  bench, server_metrics, router     measuring a server, and scaling it out
  widgets                           the Deploy panel (notebook 09)

The project's own tooling (the `cookbook` CLI, the notebook runner, the docs builder, doctor)
is `cookbook_tools`, which imports this package and never the other way round.
"""

import importlib

# The two calls every notebook makes, as `cookbook.launch` / `cookbook.finish`: loaded on first use
# (PEP 562), so `import cookbook`, and the CLI, do not import the server.
_SHORTCUTS = {"launch": "cookbook.server", "finish": "cookbook.results"}


def __getattr__(name: str):
    if name in _SHORTCUTS:
        return getattr(importlib.import_module(_SHORTCUTS[name]), name)
    raise AttributeError(f"module 'cookbook' has no attribute {name!r}")
