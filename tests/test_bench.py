"""The benchmark harness: metric math on hand-made timings, settings, datasets, failure
accounting and result files, against a small fake streaming server (tests/fake_openai.py)."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import pytest

from cookbook import bench
from cookbook.bench import BenchConfig, BenchError, RequestRecord, compute_metrics
from tests import fake_openai
from tests.fake_openai import FakeServer


def _record(i, start, ttft, itl, out, prompt=12, input_len=10):
    chunk_times, t = [ttft], ttft
    for gap in itl:
        t += gap
        chunk_times.append(t)
    return RequestRecord(
        index=i, input_len=input_len, output_len_requested=out, success=True, start_s=start,
        ttft_s=ttft, e2el_s=t, itl_s=list(itl), token_chunks=len(chunk_times),
        output_tokens=out, prompt_tokens=prompt, chunk_times_s=chunk_times,
    )  # fmt: skip


@pytest.fixture
def two_requests():
    r0 = _record(0, 10.0, 0.1, [0.02, 0.03, 0.05], out=4)  # e2e 0.2 s
    r1 = _record(1, 10.5, 0.3, [0.1], out=2)  # e2e 0.4 s
    r2 = RequestRecord(2, 10, 4, success=False, error="HTTP 500: boom")
    return [r0, r1, r2]


def test_metrics_by_hand(two_requests):
    m = compute_metrics(two_requests, duration_s=1.0)
    assert (m.completed, m.failed) == (2, 1)
    assert m.total_input_tokens == 24  # the servers' prompt_tokens, 12 + 12
    assert m.total_output_tokens == 6
    assert m.request_throughput == pytest.approx(2.0)
    assert m.output_throughput == pytest.approx(6.0)
    assert m.total_token_throughput == pytest.approx(30.0)
    # TTFT 100 and 300 ms
    assert (m.ttft.mean, m.ttft.median, m.ttft.std) == pytest.approx((200, 200, 100))
    assert m.ttft.p99 == pytest.approx(298.0)
    # TPOT (0.2 - 0.1) / 3 = 33.33 ms and (0.4 - 0.3) / 1 = 100 ms: request-weighted mean
    assert m.tpot.mean == pytest.approx((100 / 3 + 100) / 2)
    assert m.per_user_output_throughput == pytest.approx(1000 / m.tpot.mean)
    # ITL pooled over chunks: 20, 30, 50, 100 ms
    assert m.itl.mean == pytest.approx(50.0)
    assert m.itl.median == pytest.approx(40.0)
    assert m.itl.p90 == pytest.approx(85.0)
    assert m.itl.mean != pytest.approx(m.tpot.mean)  # chunk- vs request-weighted
    assert m.e2el.mean == pytest.approx(300.0)
    assert m.concurrency == pytest.approx(0.6)  # (0.2 + 0.4) / 1.0
    assert m.max_concurrent_requests == 2 and m.max_output_tokens_per_s == pytest.approx(6.0)
    assert m.output_tokens_source == "usage" and m.input_tokens_source == "usage"
    flat = m.flat()
    assert flat["mean_ttft_ms"] == pytest.approx(200) and flat["p99_e2el_ms"] > 0
    assert flat["duration"] == 1.0


def test_percentiles_match_numpy():
    np = pytest.importorskip("numpy")
    values = sorted(random.Random(3).uniform(0, 100) for _ in range(37))
    for p in (0, 25, 50, 90, 95, 99, 100):
        assert bench.percentile(values, p) == pytest.approx(float(np.percentile(values, p)))


def test_goodput_counts_requests_meeting_every_slo(two_requests):
    assert compute_metrics(two_requests, 1.0, {"ttft": 150}).good_requests == 1
    assert compute_metrics(two_requests, 1.0, {"ttft": 400, "tpot": 50}).good_requests == 1
    both = compute_metrics(two_requests, 2.0, {"e2el": 500})
    assert both.good_requests == 2 and both.request_goodput == pytest.approx(1.0)
    assert compute_metrics(two_requests, 1.0).request_goodput is None


def test_single_token_requests_have_no_tpot():
    one = _record(0, 0.0, 0.1, [], out=1)
    m = compute_metrics([one], 1.0)
    assert m.tpot is None and m.per_user_output_throughput is None and m.ttft.mean == 100


def test_without_usage_output_tokens_are_chunks_and_it_says_so():
    r = _record(0, 0.0, 0.1, [0.01, 0.01], out=3)
    r.output_tokens = None
    m = compute_metrics([r], 1.0)
    assert m.total_output_tokens == 3 and m.output_tokens_source == "chunks"


def test_range_conventions():
    assert bench.length_bounds(100, 0.1, "vllm") == (90, 110)
    assert bench.length_bounds(100, 0.0, "vllm") == (100, 100)
    assert bench.length_bounds(100, 0.25, "sglang") == (25, 100)
    assert bench.length_bounds(100, 0.0, "sglang") == (1, 100)  # SGLang's default: U[1, L]
    assert bench.length_bounds(100, 1.0, "sglang") == (100, 100)
    lengths = bench.sample_lengths(200, 100, 0.1, "vllm", random.Random(0))
    assert min(lengths) >= 90 and max(lengths) <= 110 and len(set(lengths)) > 5


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"endpoint": "embeddings"}, "endpoint 'embeddings' (valid: completions, chat)"),
        ({"num_prompts": 0}, "num_prompts 0"),
        ({"range_ratio": 1.0}, "vllm convention: 0 <= r < 1"),
        ({"range_convention": "other"}, "(valid: vllm, sglang)"),
        ({"request_rate": 0}, "request_rate 0"),
        ({"goodput_slo_ms": {"latency": 5}}, "valid: ttft, tpot, e2el"),
        ({"max_concurrency": 0}, "max_concurrency 0"),
        ({"request_timeout_s": 0}, "request_timeout_s 0 (seconds > 0)"),
        ({"request_timeout_s": -5.0}, "request_timeout_s -5.0"),
        ({"run_timeout_s": 0}, "run_timeout_s 0 (seconds > 0, or None: none)"),
        ({"run_timeout_s": float("nan")}, "run_timeout_s nan"),
        ({"goodput_slo_ms": {"ttft": -1.0}}, "goodput SLO ttft:-1.0 (milliseconds > 0)"),
        ({"base_url": "localhost:8000"}, "base_url 'localhost:8000' (an http:// or https:// URL)"),
    ],
)
def test_bad_settings_are_named(fields, named):
    with pytest.raises(BenchError, match="bad benchmark settings") as info:
        BenchConfig(**{"base_url": "http://x/v1", "model": "m", **fields})
    assert named in str(info.value)


def test_presets_come_from_data():
    gpu, cpu = bench.preset("seed-004"), bench.preset("seed-004", "cpu")
    assert (gpu["input_len"], gpu["output_len"], gpu["num_prompts"], gpu["max_concurrency"]) == (
        8192,
        2048,
        512,
        32,
    )  # the deploy guide's workload
    assert gpu["endpoint"] == cpu["endpoint"] == "chat"
    assert cpu["input_len"] < gpu["input_len"] and cpu["num_prompts"] < gpu["num_prompts"]
    assert bench.preset("card-throughput")["max_concurrency"] == 100
    with pytest.raises(BenchError, match="valid: seed-004, card-latency, card-throughput"):
        bench.preset("nope")
    config = bench.config_for("card-latency", "cpu", base_url="http://x/v1", model="m")
    assert config.max_concurrency == 1 and config.preset == "card-latency"


def test_published_numbers_are_quoted_from_data():
    card = bench.published_card("h100", "instruct")
    assert card["latency"] == {"ttft_ms": 18.90, "tpot_ms": 2.08, "total_token_throughput": 943}
    # VL-3B's numbers come from its own page, beside the others (its H100 cell, as published).
    vl_3b = bench.published_card("h100", "vl-3b")
    assert vl_3b["throughput"] == {
        "ttft_ms": 152.89,
        "tpot_ms": 7.15,
        "total_token_throughput": 25911.87,
    }
    rows = bench.card_comparison(
        {"mean_ttft_ms": 20.0, "median_ttft_ms": 19.0, "mean_tpot_ms": 2.1,
         "median_tpot_ms": 2.0, "total_token_throughput": 900.0},
        card["latency"],
    )  # fmt: skip
    ttft = rows[0]
    # Both pages record their latencies as means (latencyPercentile "Mean"): the row says so.
    assert "mean" in ttft["metric"] and ttft["published"] == 18.90
    assert (ttft["ours_mean"], ttft["ours_median"]) == (20.0, 19.0)
    assert rows[2]["ours"] == 900.0 and rows[2]["published"] == 943
    assert bench.published_card("t4", "instruct") is None
    assert bench.published_seed_004("b200")["table_1"]["output_tok_s"] == 6098
    assert bench.published_seed_004("l4") == {}


def test_the_cards_statistic_is_read_from_each_pages_data(monkeypatch):
    import sys

    from cookbook.recipes import load_recipes

    published_module = sys.modules["cookbook.bench.published"]  # `bench.published` is a function

    assert bench.card_statistic() == "the mean, as both pages record it"
    recipes = load_recipes()
    vl_page = recipes.pages["lfm2.5-vl-3b"].model_copy(update={"latency_statistic": "P50"})
    # upstream changes one page
    changed = recipes.model_copy(update={"pages": {**recipes.pages, "lfm2.5-vl-3b": vl_page}})
    monkeypatch.setattr(published_module, "load_recipes", lambda: changed)
    assert bench.card_statistic() == "the mean or p50, as each page records it"
    row = bench.card_comparison({}, {"ttft_ms": 1.0, "tpot_ms": 1.0, "total_token_throughput": 1})
    assert row[0]["metric"] == "ttft_ms (the mean or p50, as each page records it)"


def test_request_body_streams_with_usage_and_ignore_eos():
    config = BenchConfig(base_url="http://x/v1", model="m", endpoint="chat")
    body = bench.request_body(config, bench.Prompt(" a b", 2, 5))
    assert body["messages"] == [{"role": "user", "content": " a b"}] and "prompt" not in body
    assert body["stream"] and body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["max_tokens"] == 5
    plain = BenchConfig(base_url="http://x/v1", model="m", ignore_eos=False)
    assert "ignore_eos" not in bench.request_body(plain, bench.Prompt("a", 1, 1))


def test_server_root_and_api_base():
    for url in ("http://h:1/v1", "http://h:1/v1/", "http://h:1"):
        config = BenchConfig(base_url=url, model="m")
        assert (config.server_root, config.api_base) == ("http://h:1", "http://h:1/v1")


# ----------------------------------------------------------------------------- with a server


@pytest.fixture(scope="module")
def fake():
    with FakeServer() as server:
        yield server


def _config(fake, **fields):
    settings = {"base_url": fake.base_url, "model": "ok", "input_len": 16, "output_len": 5,
                "num_prompts": 6, "max_concurrency": 3, "warmup": 1}  # fmt: skip
    return BenchConfig(**{**settings, **fields})


def test_dataset_lengths_are_exact(fake):
    config = _config(fake, num_prompts=40, range_ratio=0.5, warmup=0)
    tokenizer = bench.ServerTokenizer(config)
    try:
        prompts = bench.build_dataset(config, tokenizer)
        for p in prompts:
            assert len(tokenizer.encode(p.text)) == p.input_len
    finally:
        tokenizer.close()
    assert {p.input_len for p in prompts} <= set(range(8, 25))
    assert len({p.input_len for p in prompts}) > 3


def test_a_run_records_every_request_and_saves_results(fake, tmp_path):
    run = bench.run_benchmark(_config(fake), progress=False, log=lambda _: None)
    m = run.metrics
    assert (m.completed, m.failed, m.total_output_tokens) == (6, 0, 30)
    assert m.output_tokens_source == "usage" and m.ttft.mean > 0 and m.max_concurrent_requests >= 2
    assert all(len(r.itl_s) == 4 for r in run.records)
    sent = fake.requests[-6:]
    assert all(b["ignore_eos"] and b["stream_options"]["include_usage"] for b in sent)
    path, lines = run.save(tmp_path / "run.json")
    saved = json.loads(path.read_text())
    for key in ("date", "model_id", "num_prompts", "max_concurrency", "completed", "failed",
                "output_throughput", "mean_ttft_ms", "p99_itl_ms", "median_e2el_ms",
                "effective_input_len", "errors", "conventions"):  # fmt: skip
        assert key in saved, key
    assert saved["effective_input_len"] == {"min": 16, "mean": 16, "max": 16}
    assert "api_key" not in path.read_text()
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(rows) == 6 and all(r["success"] and r["ttft_s"] > 0 for r in rows)
    assert bench.load_result(path)["completed"] == 6


def test_no_usage_chunk_falls_back_and_says_so(fake):
    notes = []
    run = bench.run_benchmark(_config(fake, model="nousage"), progress=False, log=notes.append)
    assert run.metrics.output_tokens_source == "chunks" and run.metrics.total_output_tokens == 30
    assert any("no usage chunk" in n for n in notes)


@pytest.mark.parametrize(
    ("mode", "error"),
    [("error", "HTTP 500"), ("die", ""), ("fail", "mid-stream: engine core died")],
    ids=["http-500", "dropped", "error-in-stream"],
)
def test_failed_requests_are_counted_and_kept(fake, mode, error):
    run = bench.run_benchmark(
        _config(fake, model=mode, warmup=0), progress=False, log=lambda _: None
    )
    assert (run.metrics.completed, run.metrics.failed) == (0, 6)
    assert all(not r.success and r.error for r in run.records)
    assert error in next(iter(run.result()["errors"]))


def test_a_cut_off_request_is_a_failure_with_its_reason(fake):
    run = bench.run_benchmark(
        _config(fake, model="cut", warmup=0), progress=False, log=lambda _: None
    )
    assert (run.metrics.completed, run.metrics.failed) == (0, 6)
    assert run.result()["errors"] == {
        "cut off: 4 of 5 output tokens with ignore_eos on (prompt + output past the model's "
        "context, or max_tokens lowered)": 6
    }
    # Without ignore_eos a short answer is the model stopping: a success.
    run = bench.run_benchmark(
        _config(fake, model="cut", warmup=0, ignore_eos=False), progress=False, log=lambda _: None
    )
    assert (run.metrics.completed, run.metrics.total_output_tokens) == (6, 24)


def test_a_workload_past_the_context_is_refused_before_any_prompt(fake):
    served = len(fake.requests)
    limit = fake_openai.MAX_MODEL_LEN
    with pytest.raises(BenchError, match=f"exceed ok's max_model_len of {limit}"):
        bench.run_benchmark(_config(fake, input_len=limit - 4), progress=False, log=print)
    with pytest.raises(BenchError, match="input up to 3000 \\+ output up to 1650 tokens"):
        bench.run_benchmark(
            _config(fake, input_len=2000, output_len=1100, range_ratio=0.5), progress=False
        )
    assert len(fake.requests) == served  # nothing was generated (nor tokenized)
    bench.check_lengths(_config(fake, input_len=limit - 5), limit)  # exactly fits: no error


def test_the_server_is_checked_before_the_run(fake):
    with pytest.raises(BenchError, match=r"serves \['cut', 'die', .*\], not 'nope'"):
        bench.run_benchmark(_config(fake, model="nope"), progress=False)


def test_out_is_checked_before_the_run(tmp_path):
    (tmp_path / "file").write_text("x")
    for bad, why in [
        (tmp_path, "is a directory"),
        (tmp_path / "file" / "r.json", "file is a file, not a folder"),
    ]:
        with pytest.raises(BenchError, match=why):
            bench.check_out_path(bad)
    fine = bench.check_out_path(tmp_path / "new" / "run.json")
    assert fine.parent.is_dir() and not fine.exists()  # checked, nothing left behind


def test_every_warmup_failing_stops_the_run_with_the_reason(fake):
    with pytest.raises(BenchError, match="every warmup request failed: HTTP 500"):
        bench.run_benchmark(_config(fake, model="error"), progress=False, log=lambda _: None)


def test_a_stalled_server_ends_at_the_timeouts_with_partial_results(fake):
    started = time.monotonic()
    run = bench.run_benchmark(
        _config(fake, model="stall", warmup=0, request_timeout_s=1.5),
        progress=False, log=lambda _: None,
    )  # fmt: skip
    assert time.monotonic() - started < 10
    assert run.metrics.failed == 6
    assert all("within the request timeout of 1.5 s" in r.error for r in run.records)

    started = time.monotonic()
    run = bench.run_benchmark(
        _config(fake, model="stall", warmup=0, run_timeout_s=1.0),
        progress=False,
        log=lambda _: None,
    )
    assert time.monotonic() - started < 10
    assert run.interrupted == "run timeout of 1.0 s" and run.metrics.failed == 6
    assert run.result()["interrupted"] == "run timeout of 1.0 s"


def test_the_run_timeout_bounds_prompt_building_warm_up_and_arrivals(fake):
    quiet = {"progress": False, "log": lambda _: None}
    started = time.monotonic()  # one arrival every 100 s on average: the timeout ends it
    run = bench.run_benchmark(
        _config(fake, request_rate=0.01, warmup=0, run_timeout_s=1.0), **quiet
    )
    assert time.monotonic() - started < 8
    assert run.interrupted == "run timeout of 1.0 s" and run.metrics.failed >= 5
    started = time.monotonic()  # a warm-up that never ends
    run = bench.run_benchmark(
        _config(fake, model="stall", warmup=2, request_timeout_s=60, run_timeout_s=1.0), **quiet
    )
    assert time.monotonic() - started < 8
    assert run.interrupted == "run timeout of 1.0 s (during the warm-up)"
    assert run.metrics.failed == 6 and all("not sent" in r.error for r in run.records)
    started = time.monotonic()  # more prompts than the timeout leaves time to build
    with pytest.raises(BenchError, match="passed while building the prompts"):
        bench.run_benchmark(_config(fake, num_prompts=200_000, run_timeout_s=1.0), **quiet)
    assert time.monotonic() - started < 8


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("negative", "the server counted -5 completion tokens (usage is broken)"),
        ("notjson", "JSONDecodeError: a stream chunk was not JSON"),
    ],
)
def test_a_broken_answer_is_named(fake, mode, says):
    run = bench.run_benchmark(
        _config(fake, model=mode, warmup=0), progress=False, log=lambda _: None
    )
    assert run.metrics.failed == 6 and all(says in r.error for r in run.records), run.records[0]


def test_request_rate_spreads_arrivals(fake):
    run = bench.run_benchmark(
        _config(fake, num_prompts=8, max_concurrency=None, request_rate=20.0, warmup=0),
        progress=False, log=lambda _: None,
    )  # fmt: skip
    starts = sorted(r.start_s for r in run.records)
    assert run.metrics.completed == 8
    assert starts[-1] - starts[0] > 0.1  # 7 gaps of 50 ms on average, not one burst


def test_load_result_reads_the_reference_tools_files(tmp_path):
    # Field names as the two tools write them (sglang/benchmark/serving.py, vllm/benchmarks/serve.py).
    sglang = {"backend": "sglang-oai", "completed": 10, "output_throughput": 900.0,
              "total_throughput": 1800.0, "mean_ttft_ms": 20.0, "mean_tpot_ms": 2.0,
              "mean_e2e_latency_ms": 2100.0, "p99_e2e_latency_ms": 2200.0}  # fmt: skip
    path = tmp_path / "sglang.jsonl"
    path.write_text(json.dumps({**sglang, "completed": 1}) + "\n" + json.dumps(sglang) + "\n")
    got = bench.load_result(path)
    assert got["tool"] == "sglang.benchmark.serving" and got["completed"] == 10  # the last run
    assert got["mean_e2el_ms"] == 2100.0 and got["total_token_throughput"] == 1800.0
    assert got["per_user_output_throughput"] == pytest.approx(500.0)

    vllm = {"completed": 9, "failed": 1, "output_throughput": 50.0, "mean_ttft_ms": 5.0,
            "mean_tpot_ms": 4.0, "mean_e2el_ms": 70.0, "total_token_throughput": 80.0}  # fmt: skip
    (tmp_path / "vllm.json").write_text(json.dumps(vllm))
    got = bench.load_result(tmp_path / "vllm.json")
    assert got["tool"] == "vllm bench serve" and got["failed"] == 1 and got["mean_e2el_ms"] == 70.0

    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(BenchError, match="not a benchmark result"):
        bench.load_result(tmp_path / "bad.json")


def test_reference_commands_translate_the_workload():
    config = BenchConfig(base_url="http://h:1/v1", model="m", input_len=64, output_len=8,
                         num_prompts=4, max_concurrency=2, endpoint="chat")  # fmt: skip
    argv = bench.vllm_bench_argv(config, "py", "/tok", "/out/r.json")
    assert argv[argv.index("--backend") + 1] == "openai-chat"
    assert argv[argv.index("--base-url") + 1] == "http://h:1"
    assert argv[argv.index("--random-range-ratio") + 1] == "0.0"
    assert "--ignore-eos" in argv and "--api-key" not in " ".join(argv)
    sg = bench.sglang_bench_argv(config, "py", "/tok", "/out/r.jsonl")
    assert sg[sg.index("--random-range-ratio") + 1] == "1"  # fixed lengths, SGLang's way
    assert sg[sg.index("--backend") + 1] == "sglang-oai-chat"
    ranged = BenchConfig(base_url="http://h:1", model="m", range_ratio=0.5)
    with pytest.raises(BenchError, match="fixed lengths only"):
        bench.sglang_bench_argv(ranged, "py", "/tok", "/o")
    assert not math.isnan(config.request_rate)


def test_results_go_beside_the_run_or_in_runs_bench_never_under_notebooks(tmp_path, monkeypatch):
    from cookbook import results
    from cookbook.paths import REPO_ROOT

    monkeypatch.chdir(REPO_ROOT / "notebooks")  # where a notebook's kernel runs
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    assert bench.results_dir() == REPO_ROOT / "runs" / "bench"
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path / "run" / "06.results.json"))
    assert bench.results_dir() == tmp_path / "run" / "bench"  # `cookbook run`: its folder
    assert bench.results_dir("mine") == Path("mine")  # the notebook's OUT_DIR, as given
