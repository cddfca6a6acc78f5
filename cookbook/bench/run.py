"""Running a benchmark: warm-up, arrivals at the set rate and burstiness within the concurrency
cap, a run timeout and Ctrl-C that end the run but keep what finished, and the result files.
It works the same from a script and from Jupyter, whose kernel already runs an event loop."""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cookbook.bench.checks import check_lengths, check_out_path, check_server
from cookbook.bench.config import BenchConfig, BenchError, sweep_settings
from cookbook.bench.dataset import Prompt, ServerTokenizer, build_dataset
from cookbook.bench.metrics import CONVENTIONS, Metrics, compute_metrics
from cookbook.bench.requests import RequestRecord, _one_request
from cookbook.processes import progress_bars


@dataclass
class BenchRun:
    config: BenchConfig
    records: list[RequestRecord]
    duration_s: float
    metrics: Metrics
    interrupted: str | None = None  # why the run ended early, if it did
    warmup_errors: list[str] = field(default_factory=list)
    started_at: str = ""

    def result(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg.pop("api_key")
        effective_in = [r.input_len for r in self.records]
        effective_out = [r.output_len_requested for r in self.records]
        errors: dict[str, int] = {}
        for r in self.records:
            if not r.success:
                errors[r.error] = errors.get(r.error, 0) + 1
        return {
            "date": self.started_at,
            "backend": "lfm25-cookbook",
            "endpoint_type": self.config.endpoint,
            "model_id": self.config.model,
            "base_url": self.config.base_url,
            "preset": self.config.preset,
            "num_prompts": self.config.num_prompts,
            "request_rate": "inf" if math.isinf(self.config.request_rate) else cfg["request_rate"],
            "burstiness": self.config.burstiness,
            "max_concurrency": self.config.max_concurrency,
            "random_input_len": self.config.input_len,
            "random_output_len": self.config.output_len,
            "random_range_ratio": self.config.range_ratio,
            "range_convention": self.config.range_convention,
            "effective_input_len": _span(effective_in),
            "effective_output_len": _span(effective_out),
            "ignore_eos": self.config.ignore_eos,
            "goodput_slo_ms": self.config.goodput_slo_ms,
            "interrupted": self.interrupted,
            "warmup_errors": self.warmup_errors,
            "errors": errors,
            **self.metrics.flat(),
            "conventions": CONVENTIONS,
        }

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write the run's JSON and, beside it, a JSONL with one line per request."""
        path = check_out_path(path)
        path.write_text(json.dumps(self.result(), indent=2) + "\n")
        lines = path.with_suffix(".requests.jsonl")
        with lines.open("w") as f:
            for r in self.records:
                row = asdict(r)
                row.pop("chunk_times_s")
                f.write(json.dumps(row) + "\n")
        return path, lines


def _span(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "mean": 0, "max": 0}
    return {"min": min(values), "mean": statistics.fmean(values), "max": max(values)}


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and progress_bars():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="requests", unit="req")

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def _run_async(config, prompts, records, state, progress) -> None:
    import aiohttp

    path = "chat/completions" if config.endpoint == "chat" else "completions"
    url = f"{config.api_base}/{path}"
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    # One session, kept-alive connections (TCP connect stays out of TTFT), a big read buffer
    # (aiohttp's 64 KiB default slows long responses), no connection cap of aiohttp's own.
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
    deadline = state["deadline"]

    def left() -> float | None:  # seconds to the run timeout (None: no timeout)
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, read_bufsize=2**20
    ) as session:
        warm = prompts[: config.warmup]

        async def warm_up() -> None:
            for i, prompt in enumerate(warm):
                rec = RequestRecord(-1 - i, prompt.input_len, prompt.output_len)
                one = asyncio.Semaphore(1)
                await _one_request(session, url, headers, config, prompt, rec, one)
                if not rec.success:
                    state["warmup_errors"].append(rec.error)

        try:
            await asyncio.wait_for(warm_up(), timeout=left())
        except TimeoutError:
            state["interrupted"] = f"run timeout of {config.run_timeout_s} s (during the warm-up)"
            state["t0"] = state["t1"] = time.perf_counter()
            return
        if warm and len(state["warmup_errors"]) == len(warm):
            raise BenchError(f"every warmup request failed: {state['warmup_errors'][0]}")

        if state.get("on_measure_start"):
            state["on_measure_start"]()
        semaphore = asyncio.Semaphore(config.max_concurrency or len(records))
        rng = random.Random(config.seed + 1)
        tasks: list[asyncio.Task] = []

        async def send_all() -> None:  # arrivals (a rate spreads them out), then every answer
            for prompt, rec in zip(prompts[config.warmup :], records, strict=True):
                task = asyncio.create_task(
                    _one_request(session, url, headers, config, prompt, rec, semaphore)
                )
                task.add_done_callback(lambda _t: progress.update())
                tasks.append(task)
                if not math.isinf(config.request_rate):
                    shape = config.burstiness
                    await asyncio.sleep(rng.gammavariate(shape, 1 / (config.request_rate * shape)))
            await asyncio.gather(*tasks)

        state["t0"] = time.perf_counter()
        state["tasks"] = tasks
        try:
            await asyncio.wait_for(send_all(), timeout=left())
        except TimeoutError:
            state["interrupted"] = f"run timeout of {config.run_timeout_s} s"
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        state["t1"] = time.perf_counter()


def _run_coroutine(make: Callable[[], Any]) -> None:
    """asyncio.run, also from inside Jupyter (whose kernel already runs an event loop): there the
    benchmark gets its own loop in a worker thread, and an interrupt cancels it cleanly."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(make())
        return
    import threading

    loop = asyncio.new_event_loop()
    outcome: dict[str, BaseException] = {}
    ready = threading.Event()
    task: list[asyncio.Task] = []

    def worker() -> None:
        asyncio.set_event_loop(loop)
        task.append(loop.create_task(make()))
        ready.set()
        try:
            loop.run_until_complete(task[0])
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            outcome["error"] = exc
        finally:
            loop.close()

    thread = threading.Thread(target=worker, name="bench-loop", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        loop.call_soon_threadsafe(task[0].cancel)
        thread.join(30)
        raise
    error = outcome.get("error")
    if error is not None and not isinstance(error, asyncio.CancelledError):
        raise error


def run_benchmark(
    config: BenchConfig,
    *,
    tokenizer: Any | None = None,
    prompts: list[Prompt] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    on_measure_start: Callable[[], None] | None = None,
) -> BenchRun:
    """Run one benchmark and return its records and metrics. Ctrl-C or a run timeout ends it
    early; the requests finished so far are kept and the run says why it ended.
    `on_measure_start` is called once the warm-up requests are done, before the run's clock
    starts (benchmarks/fidelity.py scrapes the server's /metrics there)."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    # The run timeout bounds everything from here: prompt building, warm-up, arrivals, requests.
    deadline = None if config.run_timeout_s is None else time.monotonic() + config.run_timeout_s
    if prompts is None:
        check_lengths(config, check_server(config))
        own = tokenizer is None
        tokenizer = tokenizer or ServerTokenizer(config)
        try:
            prompts = build_dataset(config, tokenizer, deadline)
        finally:
            if own:
                tokenizer.close()
    if len(prompts) != config.num_prompts + config.warmup:
        raise BenchError(
            f"{len(prompts)} prompts for {config.num_prompts} requests + {config.warmup} warmup"
        )
    measured = prompts[config.warmup :]
    log(
        f"[bench] {config.num_prompts} requests to {config.endpoint}, input "
        f"{_fmt_span(_span([p.input_len for p in measured]))} tokens, output "
        f"{_fmt_span(_span([p.output_len for p in measured]))} tokens "
        f"({config.range_convention} range convention, ratio {config.range_ratio}), "
        f"max concurrency {config.max_concurrency or 'none'}, request rate {config.request_rate}"
    )
    records = [RequestRecord(i, p.input_len, p.output_len) for i, p in enumerate(measured)]
    state: dict[str, Any] = {
        "warmup_errors": [], "interrupted": None, "on_measure_start": on_measure_start,
        "deadline": deadline,
    }  # fmt: skip
    bar = _Progress(config.num_prompts, progress)
    try:
        _run_coroutine(lambda: _run_async(config, prompts, records, state, bar))
    except KeyboardInterrupt:
        state["interrupted"] = "interrupted (Ctrl-C)"
    finally:
        bar.close()
    for r in records:
        if not r.success and not r.error:
            r.error = "not sent or not finished: " + (state["interrupted"] or "run ended")
    t0 = state.get("t0", time.perf_counter())
    duration = state.get("t1", time.perf_counter()) - t0
    metrics = compute_metrics(records, duration, config.goodput_slo_ms or None)
    run = BenchRun(config, records, duration, metrics, state["interrupted"], state["warmup_errors"])
    run.started_at = started_at
    if metrics.output_tokens_source != "usage" and metrics.completed:
        log(
            "[bench] note: the server sent no usage chunk for some requests; their output "
            "tokens are counted as streamed chunks (exact only with one token per chunk)"
        )
    if metrics.failed:
        log(f"[bench] {metrics.failed} of {len(records)} requests failed: {run.result()['errors']}")
    return run


def _fmt_span(span: dict[str, float]) -> str:
    if span["min"] == span["max"]:
        return f"{span['min']}"
    return f"{span['min']}-{span['max']} (mean {span['mean']:.0f})"


def run_sweep(
    scale: Literal["gpu", "cpu"], tokenizer: Any | None = None, **fields: Any
) -> list[BenchRun]:
    """The concurrency sweep of data/benchmarks.yaml: one run per level, prompts_per_level x
    level requests each, the same lengths throughout."""
    settings = sweep_settings(scale)
    levels, per_level = settings.pop("levels"), settings.pop("prompts_per_level")
    runs = []
    for level in levels:
        config = BenchConfig(
            **{**settings, "num_prompts": per_level * level, "max_concurrency": level,
               "preset": f"sweep@{level}", **fields}
        )  # fmt: skip
        runs.append(run_benchmark(config, tokenizer=tokenizer, progress=False))
    return runs
