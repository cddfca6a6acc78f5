"""Python imports this at start-up in every process whose PYTHONPATH holds this folder: the SGLang
servers the cookbook starts on a CPU, and every process they spawn. With SGLANG_USE_CPU_ENGINE=1
(set by that launch only) it stands in for SGLang's two Triton causal-conv kernels as their
module is loaded; otherwise it does nothing. See README.md here."""

import os

if os.environ.get("SGLANG_USE_CPU_ENGINE") == "1":
    import cookbook_cpu_hooks

    cookbook_cpu_hooks.install()
