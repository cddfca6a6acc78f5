"""Server-side means from /metrics histogram deltas, the snapshot hook of the reference
benchmarks' shims, the fidelity study's pure helpers, and `sglang.bench_serving`'s argv checked
by SGLang's own argument parser and custom-dataset loader (benchmarks/fidelity.py)."""

from __future__ import annotations

import http.server
import importlib.util
import json
import subprocess
import sys
import threading
import types

import pytest

from cookbook import bench, server_metrics
from cookbook.bench import BenchConfig
from cookbook.launch_plans import fixture_path
from cookbook.paths import REPO_ROOT

LABELS = '{engine="0",model_name="m"}'


def exposition(ttft=(0.0, 0), tpot=(0.0, 0), itl=(0.0, 0), e2el=(0.0, 0), engines=1) -> str:
    lines = []
    for name, (total, count) in zip(server_metrics.HISTOGRAMS.values(), (ttft, tpot, itl, e2el),
                                    strict=True):  # fmt: skip
        lines += [f"# HELP {name} h", f"# TYPE {name} histogram"]
        for e in range(engines):
            labels = LABELS.replace('"0"', f'"{e}"')
            lines += [
                f'{name}_bucket{labels[:-1]},le="+Inf"}} {count / engines}',
                f"{name}_count{labels} {count / engines}",
                f"{name}_sum{labels} {total / engines}",
            ]
    lines += ["# HELP vllm:num_requests_running g", "# TYPE vllm:num_requests_running gauge",
              f"vllm:num_requests_running{LABELS} 3.0"]  # fmt: skip
    return "\n".join(lines) + "\n"


def test_means_from_the_deltas_of_sum_and_count():
    before = exposition(ttft=(1.0, 10), tpot=(0.04, 10), itl=(2.52, 640), e2el=(3.0, 10))
    after = exposition(ttft=(1.5, 14), tpot=(0.056, 14), itl=(3.528, 892), e2el=(4.2, 14))
    got = server_metrics.histogram_means(before, after)
    assert got["ttft"]["count"] == 4 and got["ttft"]["mean_ms"] == pytest.approx(125.0)
    assert got["tpot"]["mean_ms"] == pytest.approx(4.0)
    assert got["itl"]["count"] == 252 and got["itl"]["mean_ms"] == pytest.approx(4.0)
    assert got["e2el"]["mean_ms"] == pytest.approx(300.0)
    assert got["ttft"]["histogram"] == "vllm:time_to_first_token_seconds"


def test_label_sets_are_summed_and_empty_deltas_have_no_mean():
    text = exposition(ttft=(2.0, 8), engines=2)
    assert server_metrics.histogram_totals(text)["vllm:time_to_first_token_seconds"] == (2.0, 8)
    assert server_metrics.histogram_means(text, text)["ttft"] == {
        "histogram": "vllm:time_to_first_token_seconds", "count": 0, "mean_ms": None}  # fmt: skip
    # A first scrape before any request may lack the histogram's samples: counted from zero.
    first = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n"
    assert server_metrics.histogram_means(first, text)["ttft"]["mean_ms"] == pytest.approx(250.0)


def test_a_missing_or_shrinking_histogram_is_an_error():
    with pytest.raises(ValueError, match="no histogram vllm:time_to_first_token_seconds"):
        server_metrics.histogram_means("", "# TYPE x gauge\nx 1\n")
    with pytest.raises(ValueError, match="went backwards"):
        server_metrics.histogram_means(exposition(ttft=(1.0, 5)), exposition(ttft=(0.1, 1)))


@pytest.fixture
def metrics_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            ok = self.path == "/metrics" and self.headers["Authorization"] == "Bearer k"
            body = exposition(ttft=(1.0, 2)).encode() if ok else b"no"
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_scrape_sends_the_key(metrics_server):
    assert "time_to_first_token" in server_metrics.scrape(metrics_server, "k")
    with pytest.raises(Exception, match="401"):
        server_metrics.scrape(metrics_server, "wrong")


def test_the_shims_snapshot_once_at_the_warmup_marker(metrics_server, tmp_path, monkeypatch,
                                                      capsys):  # fmt: skip
    sys.path.insert(0, str(REPO_ROOT / "ci" / "bench"))
    try:
        import metrics_snapshot
    finally:
        sys.path.pop(0)
    module = types.ModuleType("fake_benchmark")
    metrics_snapshot.install(module, "Starting main")
    assert not hasattr(module, "print")  # no variables, nothing patched
    snap = tmp_path / "before.txt"
    monkeypatch.setenv("COOKBOOK_METRICS_URL", f"{metrics_server}/metrics")
    monkeypatch.setenv("COOKBOOK_METRICS_SNAPSHOT", str(snap))
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    metrics_snapshot.install(module, "Starting main")
    module.print("Warming up...")
    assert not snap.exists()
    module.print("Starting main benchmark run...")
    assert "time_to_first_token" in snap.read_text()
    snap.write_text("")
    module.print("Starting main benchmark run...")  # only the first time
    assert snap.read_text() == "" and "Warming up" in capsys.readouterr().out


def _fidelity():
    spec = importlib.util.spec_from_file_location("fidelity", REPO_ROOT / "benchmarks" /
                                                  "fidelity.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fidelity_rotation_and_tolerance():
    fid = _fidelity()
    orders = [fid.rotation(n) for n in range(3)]
    assert orders[0] == ("cookbook", "vllm", "sglang")
    assert {o[0] for o in orders} == set(fid.TOOLS) and fid.rotation(3) == orders[0]
    assert fid.within(103.0, 100.0) and not fid.within(103.5, 100.0)
    assert fid.within(10.9, 10.0) and not fid.within(11.1, 10.0)  # the 1 ms floor


def test_fidelity_goals_from_hand_made_rounds():
    fid = _fidelity()

    def run(tok_s, ttft, tpot, server_ttft):
        return {"output_throughput": tok_s, "mean_ttft_ms": ttft, "mean_tpot_ms": tpot,
                "mean_itl_ms": tpot, "mean_e2el_ms": 300.0,
                "server": {"ttft": server_ttft, "tpot": tpot, "itl": tpot, "e2el": 290.0}}  # fmt: skip

    runs = {"cookbook": [run(100, 25.0, 4.0, 20.0)], "vllm": [run(98, 27.0, 4.1, 20.0)],
            "sglang": [run(90, 26.0, 4.0, 20.0)]}  # fmt: skip
    probe = {"ttft_transport_ms": 5.2, "e2el_transport_ms": 6.0}
    got = fid.summarize(runs, {"workload_c1": [probe], "trivial": [probe]})
    goals = got["goals"]
    assert got["vs_server"]["cookbook"]["ttft"]["excess_ms"] == pytest.approx(-0.2)
    assert goals["ttft_truth:cookbook"]["ok"]
    assert goals["ttft_truth:vllm"]["off_ms"] == pytest.approx(1.8)
    assert not goals["ttft_truth:vllm"]["ok"]  # 1.8 ms > max(3% of 25.2, 1 ms)
    assert goals["ttft_closest"]["ok"]
    assert not goals["sglang_vs_ours:output_throughput"]["ok"]
    assert goals["sglang_vs_ours:mean_tpot_ms"]["ok"]
    assert goals["vllm_vs_ours:mean_ttft_ms"]["ratio_peer_over_ours"] == pytest.approx(1.08)


def test_sglang_argv_for_a_vllm_server_and_our_prompts():
    config = BenchConfig(base_url="http://h:1/v1", model="m", input_len=8, output_len=16,
                         num_prompts=3, max_concurrency=2, warmup=2, endpoint="chat")  # fmt: skip
    argv = bench.sglang_bench_argv(config, "py", "/tok", "/o.jsonl", "/p.jsonl", server="vllm",
                                   shim=True)  # fmt: skip
    assert argv[1] == str(bench.SGLANG_BENCH_SHIM)
    assert argv[argv.index("--backend") + 1] == "vllm-chat"
    assert argv[argv.index("--dataset-name") + 1] == "custom"
    assert argv[argv.index("--sharegpt-output-len") + 1] == "16"
    assert "--random-range-ratio" not in argv and "--disable-ignore-eos" not in argv
    plain = bench.sglang_bench_argv(config, "py", "/tok", "/o.jsonl")
    assert plain[1:3] == ["-m", "sglang.benchmark.serving"]


SGLANG_CHECK = r"""
import json, runpy, sys
sys.path.insert(0, sys.argv[1])
shim = runpy.run_path(sys.argv[1] + "/sglang_bench_serving.py")  # not as __main__: no run
shim["_stand_ins"]()
import sglang.benchmark.serving as serving
from sglang.benchmark.datasets.custom import sample_custom_requests
from sglang.benchmark.utils import get_tokenizer
job = json.loads(sys.stdin.read())
seen = {}
serving.run_benchmark = lambda args: seen.update(vars(args))
sys.argv = ["sglang.bench_serving", *job["argv"]]
serving.cli_main()
rows = sample_custom_requests(job["prompts_file"], seen["num_prompts"], get_tokenizer(job["tok"]),
                              fixed_output_len=seen["sharegpt_output_len"])
print(json.dumps({"args": {k: seen[k] for k in job["keys"]},
                  "rows": [[r.prompt, r.prompt_len, r.output_len] for r in rows]}))
"""


@pytest.mark.timeout(300)
def test_sglang_parses_the_argv_and_reads_our_prompts(sglang_check_python, tmp_path):
    config = BenchConfig(base_url="http://h:1/v1", model="m", input_len=8, output_len=16,
                         num_prompts=3, max_concurrency=2, warmup=2)  # fmt: skip
    texts = [" the city world", " school time new", " state about known"]
    prompts = [bench.Prompt(t, 3, 16) for t in texts]
    prompts_file = bench.write_prompts_jsonl(prompts, tmp_path / "p.jsonl", style="sglang")
    tok = str(fixture_path("instruct"))
    argv = bench.sglang_bench_argv(config, "py", tok, tmp_path / "o.jsonl", prompts_file,
                                   server="vllm", shim=True)[2:]  # fmt: skip
    keys = ["backend", "base_url", "model", "dataset_name", "dataset_path", "sharegpt_output_len",
            "num_prompts", "warmup_requests", "max_concurrency", "request_rate", "seed",
            "disable_ignore_eos", "disable_stream", "apply_chat_template"]  # fmt: skip
    job = {"argv": argv, "prompts_file": str(prompts_file), "tok": tok, "keys": keys}
    done = subprocess.run([sglang_check_python, "-c", SGLANG_CHECK, str(bench.SGLANG_BENCH_SHIM.parent)],
                          input=json.dumps(job), capture_output=True, text=True, timeout=240,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["args"] == {
        "backend": "vllm", "base_url": "http://h:1", "model": "m", "dataset_name": "custom",
        "dataset_path": str(prompts_file), "sharegpt_output_len": 16, "num_prompts": 3,
        "warmup_requests": 2, "max_concurrency": 2, "request_rate": float("inf"), "seed": 0,
        "disable_ignore_eos": False, "disable_stream": False, "apply_chat_template": False,
    }  # fmt: skip
    # Every prompt, sent as written (shuffled by --seed), 16 output tokens each.
    assert sorted(r[0] for r in got["rows"]) == sorted(texts)
    assert {r[2] for r in got["rows"]} == {16}
