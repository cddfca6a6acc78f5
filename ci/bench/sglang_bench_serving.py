"""`python -m sglang.benchmark.serving` (SGLang's client) where SGLang is partly installed.

That environment holds SGLang's pure-Python parts, not its whole dependency tree, and the
benchmark module imports two things its client never uses on a text workload:
- `datasets` (Hugging Face's, for the MMMU and other hub datasets: imported at module level);
- `sglang.srt.disaggregation.utils`, only for the constant FAKE_BOOTSTRAP_HOST, whose import
  pulls in every model config of SGLang and with them torchvision.
Where either is missing here, this stands in for it (a `datasets` whose load_dataset raises; the
constant, copied from SGLang 0.5.23), then runs SGLang's own CLI with the same arguments. The
request functions, the datasets used here (random, custom) and the metrics are SGLang's, unchanged.

    PYTHON ci/bench/sglang_bench_serving.py --backend vllm ... [...]

With COOKBOOK_METRICS_URL and COOKBOOK_METRICS_SNAPSHOT set, the server's /metrics is saved
once the warm-up is over (metrics_snapshot.py).
"""

import importlib.util
import sys
import types

from metrics_snapshot import install


def _stand_ins() -> None:
    if importlib.util.find_spec("datasets") is None:
        datasets = types.ModuleType("datasets")

        def load_dataset(*args, **kwargs):
            raise RuntimeError("Hugging Face `datasets` is not installed in this environment")

        datasets.load_dataset = load_dataset
        sys.modules["datasets"] = datasets
    if importlib.util.find_spec("torchvision") is None:
        utils = types.ModuleType("sglang.srt.disaggregation.utils")
        utils.FAKE_BOOTSTRAP_HOST = "2.2.2.2"  # sglang/srt/disaggregation/utils.py, 0.5.23
        sys.modules["sglang.srt.disaggregation.utils"] = utils


if __name__ == "__main__":
    _stand_ins()
    import sglang.benchmark.serving as serving

    install(serving, "Warmup completed")
    serving.cli_main()
