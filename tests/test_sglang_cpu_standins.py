"""SGLang on the CPU (engine sglang-cpu): the cookbook's torch stand-ins in
cookbook/engine_side/sglang_cpu compute what they stand in for, are what SGLang runs, and the whole
server then answers, token for token, what Hugging Face transformers answers.

- The causal convolution and the token-pool scatter against independent references
  (tests/engine_probe/standin_checks.py: torch's conv1d in float64, a vectorised scatter):
  prefill with and without cached state, several sequences of different lengths in one call,
  decode steps, padded entries and the slots nobody owns; in bfloat16, and in float32 with
  SGLang's bfloat16 conv state (the float32 launch). What is not stood in raises, naming itself.
- The import hook: with SGLANG_USE_CPU_ENGINE=1 every SGLang module holding a causal-conv entry
  point holds the torch one, LFM2's model module included; without it nothing is replaced.
- The stand-in sgl_kernel's name lists: none is a name the pinned SGLang probes for a fast path
  (a present name would send it to a kernel the stand-in lacks), and each is a name it uses.
- End to end: the thinking fixture served by SGLang on the CPU, greedy, one request at a time and
  six in flight at once (conv-state slots under concurrency were a real SGLang bug,
  sgl-project/sglang#23975), equals transformers' greedy `generate` on the same token ids.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from cookbook import machine
from cookbook.launch_plans import fixture_path, plan_launch
from cookbook.server import Server
from tests.test_server import WEATHER_TOOL  # the same tool, so the same prompts as before

REPO = Path(__file__).resolve().parent.parent
PROBE_DIR = REPO / "tests" / "engine_probe"
STANDINS = REPO / "cookbook" / "engine_side" / "sglang_cpu"
# Setting up the server, the reference and six requests on two busy cores: minutes, not seconds.
pytestmark = [pytest.mark.timeout(900), pytest.mark.engine]


@pytest.fixture(scope="module")
def sglang_python() -> str:
    python = machine.sglang_python()
    if python is None:
        pytest.fail("no SGLang environment (.venvs/sglang): run `bash ci/setup.sh sglang`")
    return str(python)


def _engine_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would switch the stand-ins on or off behind the
    test's back (the test sets both itself)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SGLANG_USE_CPU_ENGINE")}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def _run_json(argv: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{argv[1:]} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


# ----- the pinned SGLang's source -------------------------------------------------------------

# SGLang asks whether torch.ops.sgl_kernel has an operation before taking a fast path.
PROBE_PATTERNS = (
    re.compile(r"""hasattr\(\s*torch\.ops\.sgl_kernel\s*,\s*["'](\w+)["']"""),
    re.compile(r"""register_fake_if_exists\(\s*["']sgl_kernel::(\w+)["']"""),
    re.compile(r"""getattr\(\s*torch\.ops\.sgl_kernel\s*,\s*["'](\w+)["']\s*,"""),
)
OP_READ = re.compile(r"torch\.ops\.sgl_kernel\.(\w+)")


@pytest.fixture(scope="module")
def sglang_source(sglang_python) -> dict:
    """What the installed SGLang's source does with sgl_kernel: the names it probes for, the
    torch.ops.sgl_kernel names it reads, and the names it imports from each sgl_kernel module."""
    found = sorted(Path(sglang_python).parent.parent.glob("lib/python3*/site-packages/sglang"))
    assert found, f"no sglang package beside {sglang_python}"
    probes, reads, imports = set(), set(), {}
    for path in found[0].rglob("*.py"):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "sgl_kernel" not in text:
            continue
        for pattern in PROBE_PATTERNS:
            probes.update(pattern.findall(text))
        reads.update(OP_READ.findall(text))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sgl_kernel"):
                imports.setdefault(node.module, set()).update(a.name for a in node.names)
    return {"probes": probes, "reads": reads, "imports": imports}


# ----- the stand-ins alone ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def checks(sglang_python, sglang_source) -> dict:
    argv = [sglang_python, str(PROBE_DIR / "standin_checks.py"), *sorted(sglang_source["probes"])]
    return _run_json(argv, _engine_env(PYTHONPATH=str(STANDINS)))


CONV_CASES = ("prefill_no_state", "prefill_with_state", "prefill_batch_mixed",
              "prefill_shorter_than_kernel", "prefill_padded_slot", "decode_steps",
              "decode_steps_silu")  # fmt: skip


@pytest.mark.parametrize("case", CONV_CASES)
def test_the_conv_equals_a_float64_conv1d(checks, case):
    # float32 arithmetic against float64 on unit-scale inputs: ~1e-7 when right; a missing
    # state write-back, a wrong slot or a shifted window is off by ~1.
    assert checks[case]["max_abs_diff"] < 1e-4, checks[case]


@pytest.mark.parametrize("case", CONV_CASES)
def test_padded_entries_and_other_slots_are_left_alone(checks, case):
    # Slot 7 is never owned in these cases: it is where a pad id of -1 would land if used as an
    # index. A padded entry's output is zero (SGLang discards it).
    assert checks[case]["untouched_slots_kept"] is True, checks[case]
    if "padded_entry_zero" in checks[case]:
        assert checks[case]["padded_entry_zero"] is True, checks[case]


def test_the_conv_in_bfloat16_rounds_once_and_keeps_the_state_exactly(checks):
    # A bfloat16 launch (--dtype auto on these checkpoints) runs the conv in bfloat16: the output
    # is the exact result rounded once (half a bfloat16 step when rounded to nearest; one step
    # allows for the float32 sum landing across a rounding boundary), and the state is a copy of
    # the last inputs, bit for bit.
    case = checks["bfloat16"]
    assert case["dtype"] == "torch.bfloat16"
    assert case["max_bf16_steps"] <= 1.0, case
    assert case["state_exact"] is True


def test_the_conv_in_float32_with_a_bfloat16_state_rounds_only_the_state(checks):
    # The float32 launch: SGLang still keeps LFM2's conv state in bfloat16 (its
    # SGLANG_MAMBA_CONV_DTYPE default). Inputs are used as given within a call; those carried to
    # the next call through the state are rounded once (the reference rounds exactly those: had
    # the stand-in rounded more or less, the difference would be ~1e-2).
    case = checks["float32_bfloat16_state"]
    assert case["dtypes"] == ["torch.float32", "torch.bfloat16"]
    assert case["max_abs_diff"] < 1e-4, case
    assert case["state_exact"] is True


def test_the_token_pool_scatter_equals_a_vectorised_scatter(checks):
    assert checks["token_pool_scatter"]["equal"] is True


def test_what_is_not_stood_in_fails_naming_itself(checks):
    missing = checks["missing"]
    # Present but not implemented: SGLang reads or imports them; a call says which one it was.
    for key, name in [("op_read_at_import", "sgl_kernel.fused_gdn_gating_cpu"),
                      ("op_default_overload", "sgl_kernel.fused_gdn_gating_cpu"),
                      ("mamba_import", "sgl_kernel.mamba.causal_conv1d_fn_cpu"),
                      ("package_import", "sgl_kernel.verify_tree_greedy_cpu"),
                      ("copy_all_layer_kv_cache_cpu", "sgl_kernel.copy_all_layer_kv_cache_cpu")]:  # fmt: skip
        assert missing[key].startswith(f"NotImplementedError: {name} was called"), missing[key]
    # Absent: as without the package, so that SGLang's checks find no fast path.
    assert missing["unlisted_name"].startswith("AttributeError:")
    assert "rmsnorm_cpu" in missing["unlisted_name"]
    assert missing["unlisted_op"] == (
        "AttributeError: torch.ops.sgl_kernel has no rmsnorm_cpu (cookbook CPU stand-in)"
    )
    unsupported = checks["unsupported"]
    for argument in ("num_accept_tokens", "cache_seqlens", "block_table"):
        assert unsupported[argument] == (
            "NotImplementedError: the cookbook's CPU causal_conv1d stand-in does not implement "
            f"{argument} (speculative decoding or paged conv state); launch without it"
        )
    assert unsupported["activation"].startswith("NotImplementedError:")
    assert "'gelu'" in unsupported["activation"]
    assert unsupported["wide_state"].startswith("NotImplementedError:")
    assert "width - 1" in unsupported["wide_state"]


# ----- sgl_kernel's lists against the pinned SGLang --------------------------------------------


def test_the_source_scan_finds_the_probes(sglang_source):
    # Known probes of SGLang 0.5.23, one per pattern (hasattr, register_fake_if_exists, and a
    # hasattr split over lines): a scan that stopped matching would make the next test vacuous.
    assert {"fused_qk_norm_cpu", "int8_scaled_mm", "transfer_embedding_ranges_direct"} <= (
        sglang_source["probes"]
    ), sorted(sglang_source["probes"])


def test_no_listed_name_is_a_fast_path_probe(checks, sglang_source):
    lists = checks["lists"]
    listed = {*lists["READ_AT_IMPORT"], *lists["DEFINED"]}
    listed.update(n for names in lists["IMPORTED_AT_LOAD"].values() for n in names)
    assert listed & sglang_source["probes"] == set()
    # And at run time: the stand-in's torch.ops.sgl_kernel answers no to every probe.
    assert set(checks["probes_present"]) == sglang_source["probes"]
    assert [n for n, present in checks["probes_present"].items() if present] == []


def test_every_listed_name_is_one_sglang_uses(checks, sglang_source):
    lists, imports = checks["lists"], sglang_source["imports"]
    assert set(lists["READ_AT_IMPORT"]) - sglang_source["reads"] == set()
    for module, names in lists["IMPORTED_AT_LOAD"].items():
        assert set(names) - imports.get(module, set()) == set(), module
    # The operations the package defines: each imported by name from sgl_kernel.
    assert lists["DEFINED"] == ["assign_req_to_token_pool_cpu", "copy_all_layer_kv_cache_cpu"]
    assert set(lists["DEFINED"]) - imports["sgl_kernel"] == set()


# ----- the import hook ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hooked(sglang_python) -> dict[str, dict]:
    """conv_hook_probe.py with and without SGLANG_USE_CPU_ENGINE=1, the stand-ins' folder on the
    PYTHONPATH both times (as only a CPU launch has it), run side by side."""
    argv = [sglang_python, str(PROBE_DIR / "conv_hook_probe.py")]
    envs = {"on": _engine_env(PYTHONPATH=str(STANDINS), SGLANG_USE_CPU_ENGINE="1"),
            "off": _engine_env(PYTHONPATH=str(STANDINS))}  # fmt: skip
    procs = {k: subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for k, env in envs.items()}  # fmt: skip
    out = {}
    try:
        for key, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=600)
            assert proc.returncode == 0, (
                f"hook probe ({key}) exited {proc.returncode}:\n{stderr[-3000:]}"
            )
            out[key] = json.loads(stdout)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


TRITON = "sglang.kernels.ops.mamba.causal_conv1d_triton"
WRAPPER = "sglang.srt.layers.attention.mamba.causal_conv1d"


def test_with_the_cpu_engine_every_holder_of_the_triton_conv_holds_the_torch_one(hooked):
    on = hooked["on"]
    torch_fn, torch_update = ("cookbook_causal_conv1d.causal_conv1d_fn",
                              "cookbook_causal_conv1d.causal_conv1d_update")  # fmt: skip
    assert on["wrapper"] == {"_causal_conv1d_fn_triton": torch_fn,
                             "_causal_conv1d_update_triton": torch_update,
                             "_HAS_CONV1D_KERNEL": False}  # fmt: skip
    # LFM2 imports the Triton update directly (its speculative path) and the wrapper's two
    # functions, which dispatch to the stand-ins above.
    assert on["lfm2"] == {"causal_conv1d_update_triton": torch_update,
                          "causal_conv1d_fn": f"{WRAPPER}.causal_conv1d_fn",
                          "causal_conv1d_update": f"{WRAPPER}.causal_conv1d_update"}  # fmt: skip
    # No loaded module kept a Triton original (one imported before the swap would have).
    assert on["held"], "no module holds a conv entry point: the probe looked in the wrong place"
    assert {k: v for k, v in on["held"].items() if not v.startswith("cookbook_")} == {}
    assert on["marked_stand_in"] is True
    assert on["sgl_kernel"] == "0.0.0+cookbook-cpu-stand-in"


def test_without_the_cpu_engine_nothing_is_replaced(hooked):
    off = hooked["off"]
    assert off["marked_stand_in"] is False and off["stand_in_modules_loaded"] == []
    assert off["held"] and all(v.startswith(f"{TRITON}.") for v in off["held"].values())
    assert off["wrapper"]["_causal_conv1d_fn_triton"] == f"{TRITON}.causal_conv1d_fn"
    assert off["lfm2"]["causal_conv1d_update_triton"] == f"{TRITON}.causal_conv1d_update"
    # The same modules hold a conv entry point either way: the hook swaps, it adds nothing.
    assert set(off["held"]) == set(hooked["on"]["held"])


def test_the_stand_ins_take_sglangs_arguments(hooked):
    # SGLang's own Triton signatures (from the run where nothing was replaced): same names, in
    # the same order, of the same kind, with the same defaults (the stand-in may add a default).
    for name, both in hooked["off"]["signatures"].items():
        sglang, stand_in = both["sglang"], both["stand_in"]
        assert [p[:2] for p in stand_in] == [p[:2] for p in sglang], name
        assert [p for p in sglang if p[2] and p not in stand_in] == [], name


# ----- end to end: SGLang on the CPU against transformers --------------------------------------

CALCULATE_TOOL = {
    "type": "function",
    "function": {
        "name": "calculate",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


SUM = [{"role": "system", "content": "You are a concise assistant."}, *_user("What is 12 plus 30?")]
# Sent one at a time, in this order. The last continues the first after six tokens of its
# answer: its prefix is in SGLang's prefix cache, so its prefill starts from a cached conv state.
SEQUENTIAL = {
    "capital": {"messages": _user("What is the capital of France?"), "max_new_tokens": 48},
    "sum, system prompt": {"messages": SUM, "max_new_tokens": 48},
    "raw text": {"text": "The quick brown fox", "max_new_tokens": 32},
    "weather tool": {"messages": _user("What's the weather like in Paris today?"),
                     "tools": [WEATHER_TOOL], "max_new_tokens": 48},
    "capital, continued": {"messages": _user("What is the capital of France?"),
                           "continue_after": 6, "max_new_tokens": 48},
}  # fmt: skip
# Sent all at once: different prompt lengths (5 to 81 tokens), answers of different lengths
# (one cut at 8 tokens, so the batch shrinks and its slot is freed mid-decode), and one whose
# prefix the sequential round left in the cache.
CONCURRENT = {
    "greeting": {"messages": _user("Hello! How are you?"), "max_new_tokens": 40},
    "capital, cut short": {"messages": _user("What is the capital of Japan?"), "max_new_tokens": 8},
    "raw text 2": {"text": "The weather in Lisbon", "max_new_tokens": 24},
    "multi-turn": {"messages": [*_user("Hi"), {"role": "assistant", "content": "Hello!"},
                                *_user("What is 7 plus 5?")], "max_new_tokens": 48},
    "calculate tool": {"messages": _user("What is 12 times 7?"), "tools": [CALCULATE_TOOL],
                       "max_new_tokens": 40},
    "sum, continued": {"messages": SUM, "continue_after": 10, "max_new_tokens": 32},
}  # fmt: skip


def _generate(client: httpx.Client, input_ids: list[int], max_new_tokens: int) -> dict:
    answer = client.post("/generate", json={
        "input_ids": input_ids,
        "sampling_params": {"temperature": 0, "max_new_tokens": max_new_tokens},
    })  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()


def _launch_dtype(plan, model: Path) -> str:
    """The dtype the launch asks SGLang for: its --dtype, or with none (or auto) the checkpoint's
    own (config.json), as SGLang's auto takes it. transformers is run in the same."""
    argv = [t for token in plan.argv for t in token.split("=", 1)]
    asked = argv[argv.index("--dtype") + 1] if "--dtype" in argv else "auto"
    if asked != "auto":
        return asked
    config = json.loads((model / "config.json").read_text())
    return config.get("dtype") or config["torch_dtype"]


@pytest.fixture(scope="module")
def served(sglang_python, tmp_path_factory):
    """Both rounds against one server, and transformers' answers to the same token ids (computed
    while the server starts). Each test then checks one side of it."""
    model = fixture_path("thinking")
    dtype = _launch_dtype(plan_launch("thinking", "sglang-cpu"), model)
    prompts = {**SEQUENTIAL, **CONCURRENT}
    work = tmp_path_factory.mktemp("sglang-e2e")
    (work / "request.json").write_text(
        json.dumps({"model": str(model), "dtype": dtype, "prompts": list(prompts.values())})
    )
    with (
        open(work / "request.json") as stdin,
        open(work / "hf.json", "w") as stdout,
        open(work / "hf.err", "w") as stderr,
    ):
        reference = subprocess.Popen([sglang_python, str(PROBE_DIR / "hf_greedy.py")], cwd=REPO,
                                     env=_engine_env(), stdin=stdin, stdout=stdout, stderr=stderr)  # fmt: skip
    server = Server("thinking", "sglang-cpu", progress=False, log_dir=work / "logs")
    try:
        server.start()
        code = reference.wait(timeout=600)
        assert code == 0, f"hf_greedy.py exited {code}:\n{(work / 'hf.err').read_text()[-3000:]}"
        hf = json.loads((work / "hf.json").read_text())
        want = dict(zip(prompts, hf["results"], strict=True))
        client_args = {"base_url": server.base_url, "timeout": 300,
                       "headers": {"Authorization": f"Bearer {server.api_key}"}}  # fmt: skip
        started = time.monotonic()
        with httpx.Client(**client_args) as client:
            sequential = {name: _generate(client, want[name]["input_ids"], spec["max_new_tokens"])
                          for name, spec in SEQUENTIAL.items()}  # fmt: skip
        sequential_s = time.monotonic() - started

        log_before = server.log_path.stat().st_size
        barrier, concurrent = threading.Barrier(len(CONCURRENT)), {}

        def send(name: str) -> None:
            try:
                with httpx.Client(**client_args) as client:
                    barrier.wait(timeout=60)  # all six leave together
                    concurrent[name] = _generate(client, want[name]["input_ids"],
                                                 CONCURRENT[name]["max_new_tokens"])  # fmt: skip
            except Exception as exc:  # reported by the test, with the others' answers
                concurrent[name] = {"error": repr(exc)}

        started = time.monotonic()
        threads = [threading.Thread(target=send, args=(n,)) for n in CONCURRENT]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        concurrent_s = time.monotonic() - started
        whole = server.log_path.read_bytes()
        # Shown with -rP or on a failure: how long each round took.
        print(f"sequential {sequential_s:.1f} s, six in flight {concurrent_s:.1f} s")
        yield {"hf": hf, "want": want, "sequential": sequential, "concurrent": concurrent,
               "log": whole.decode(errors="replace"),
               "concurrent_log": whole[log_before:].decode(errors="replace"), "dtype": dtype,
               "seconds": {"sequential": sequential_s, "concurrent": concurrent_s}}  # fmt: skip
    finally:
        server.stop()
        if reference.poll() is None:
            reference.kill()
            reference.wait()


def _differences(answers: dict, want: dict) -> list[str]:
    """Each answer that is not transformers', with where they part and how close transformers'
    top two logits were there (a near-tie reads differently from a wrong state)."""
    found = []
    for name, answer in answers.items():
        got, expected, margins = (
            answer["output_ids"],
            want[name]["output_ids"],
            want[name]["margins"],
        )
        if got == expected:
            continue
        at = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                  min(len(got), len(expected)))  # fmt: skip
        margin = margins[at] if at < len(margins) else None
        found.append(f"{name}: first differs at output token {at} of {len(expected)}: "
                     f"SGLang {got[at:at + 4]} vs transformers {expected[at:at + 4]}, "
                     f"transformers' top-1 minus top-2 logit there: {margin}")  # fmt: skip
    return found


def test_sglang_serves_the_fixture_in_the_dtype_transformers_ran_it_in(served):
    # SGLang allocates its KV cache (kv-cache-dtype auto) in the model's dtype, and its log says
    # which: the one the launch asked for, and the one transformers ran in.
    logged = re.findall(r"KV Cache is allocated\. dtype: torch\.(\w+)", served["log"])
    assert logged == [served["dtype"]] == [served["hf"]["dtype"]], logged


def test_greedy_output_equals_transformers_one_request_at_a_time(served):
    answers = served["sequential"]
    assert set(answers) == set(SEQUENTIAL)
    assert _differences(answers, served["want"]) == []
    # Not vacuous: real answers, ended as transformers ended them (its EOS ids, or the limit).
    for name, answer in answers.items():
        assert len(answer["output_ids"]) >= 8, name
        reason = answer["meta_info"]["finish_reason"]
        assert reason["type"] in ("stop", "length"), reason
        if reason["type"] == "stop":
            assert reason["matched"] in served["hf"]["eos_token_id"], reason
    # The continued prompt's prefill started from the conv state SGLang cached for its prefix.
    assert answers["capital, continued"]["meta_info"]["cached_tokens"] > 0


def test_greedy_output_equals_transformers_six_requests_in_flight(served):
    answers = served["concurrent"]
    failed = {name: a["error"] for name, a in answers.items() if "error" in a}
    assert set(answers) == set(CONCURRENT) and failed == {}, failed
    assert _differences(answers, served["want"]) == []
    assert answers["sum, continued"]["meta_info"]["cached_tokens"] > 0
    assert len(answers["capital, cut short"]["output_ids"]) == 8
    # They were in flight together: one prefill took several new sequences at once.
    batched = [
        int(n) for n in re.findall(r"Prefill batch, #new-seq: (\d+)", served["concurrent_log"])
    ]
    assert max(batched, default=0) >= 2, batched
