"""Bad input and faults, as a careless or hostile user would try them: each one ends in one clear
line naming what was wrong (no traceback), with the exit code it should have, well within a
generous time limit (a hang fails at the limit; nothing here is timed more finely).

Cases run the installed `cookbook` as a user does; recipes cases point it at a broken copy of the
recipes file ($COOKBOOK_RECIPES). The few Python-API cases (Server, connect, a stopped client)
check the exception's one-line message. One CPU-engine server serves the cases that need a real
server (a wrong key, the model's context length, a cut-off benchmark).
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import yaml

from cookbook.launch_plans import cpu_engine_python
from cookbook.processes import free_port
from cookbook.recipes import RECIPES_PATH
from cookbook.server import Server, ServerError, ServerStartError
from tests.conftest import REPO, fake_nvidia_smi_env

LIMIT_S = 90  # generous: a case that hangs fails here; every case normally ends in seconds
PROGRESS = "elapsed (timeout"  # the start-up progress bar's line, not a message


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: int
    says: str  # a part of the one line
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    needs_engine: bool = False  # an engine's environment must be there (not `make test-fast`)


def _param(case: Case):
    """The case as a test, marked `engine` where it runs or needs one (`make test-fast` skips it)."""
    uses_server = any("{engine}" in a or "{key}" in a for a in case.args)
    marks = [pytest.mark.engine] if case.needs_engine or uses_server else []
    return pytest.param(case, id=case.id, marks=marks)


def _case(id, args, code, says, **kw) -> Case:
    return Case(id, tuple(args.split()) if isinstance(args, str) else tuple(args), code, says, **kw)


H100 = "--hw h100 --variant instruct"
BENCH = "bench --no-progress --base-url {closed} --model m"

CLI_CASES = [
    # command: flags that conflict or would be ignored
    _case("recipe+tp+port", "command --recipe lambda-8b-a1b --tp 2 --port 1234", 2,
          "--tp, --port cannot change it"),
    _case("recipe+docker", "command --recipe lambda-8b-a1b --docker", 2, "--docker cannot change it"),
    _case("recipe+hw+variant", f"command --recipe lambda-8b-a1b {H100}", 2,
          "--hw, --variant cannot change it"),
    _case("engine-without-recipe", f"command {H100} --engine vllm", 2,
          "--engine chooses the engine of --recipe"),
    _case("curl+json", f"command {H100} --curl --json", 2, "--curl and --json: pick one"),
    _case("curl+docker", f"command {H100} --curl --docker", 2, "which --docker does not change"),
    _case("curl+tp", f"command {H100} --curl --tp 2", 2, "which --tp does not change"),
    _case("hf-token-env-without-docker", f"command {H100} --hf-token-env MY_TOKEN", 2,
          "it needs --docker"),
    _case("host-is-a-flag", [*f"command {H100}".split(), "--host=--enable-metrics"], 2,
          "HOST_IP must be a host name or IP address"),
    _case("host-with-space", [*f"command {H100}".split(), "--host", "bad host"], 2,
          "got 'bad host'"),
    _case("host-with-shell", [*f"command {H100}".split(), "--host", "1.2.3.4;id"], 2,
          "HOST_IP must be a host name"),
    _case("host-not-an-ip", f"command {H100} --host 999.1.1.1", 2, "got '999.1.1.1'"),
    _case("tp-0", f"command {H100} --tp 0", 2, "unknown TP override 0; valid: 1, 2"),
    _case("tp-minus-1", f"command {H100} --tp -1", 2, "unknown TP override -1"),
    _case("port-0", f"command {H100} --port 0", 2, "PORT must be a port number 1-65535"),
    _case("tp-on-a-small-model", "command --hw h100 --variant 350m --tp 2", 2,
          "the seed offers TP=2 on the larger checkpoints only"),
    # serve
    _case("serve-port-70000", "serve --port 70000", 2, "'70000' is not a port number 1-65535"),
    _case("serve-port-0", "serve --port 0", 2, "'0' is not a port number"),
    _case("serve-port-text", "serve --port abc", 2, "'abc' is not a port number"),
    _case("serve-bad-host", ["serve", "--host", "bad host"], 2,
          "--host 'bad host' is not a host name or IP address"),
    _case("serve-host-is-a-flag", ["serve", "--host=--enable-metrics"], 2,
          "--host '--enable-metrics' is not a host name"),
    _case("serve-foreign-address", "serve --engine vllm-cpu --host 8.8.8.8", 1,
          "8.8.8.8 is not an address of this machine"),
    _case("serve-busy-port", "serve --engine vllm-cpu --port {busy}", 1, "is already in use"),
    _case("serve-hw-on-cpu", "serve --engine vllm-cpu --hw h100", 2, "the vllm-cpu engine does not use it"),
    _case("serve-hw-on-vllm", "serve --engine vllm --hw h100", 2, "the vllm engine does not"),
    _case("serve-unknown-variant", "serve --engine vllm-cpu --variant mega", 2,
          "unknown variant 'mega'"),
    _case("serve-sglang-not-installed", "serve --engine sglang", 1,
          "but SGLang is not installed", env={"GPU": "h100-sxm"}),
    _case("serve-log-dir-is-a-file", "serve --engine vllm-cpu", 1, "is a file, not a directory",
          env={"COOKBOOK_LOG_DIR": "{file}"}, needs_engine=True),
    _case("serve-relative-model-dir", "serve --engine vllm-cpu --model models/lfm", 1,
          "model directory not found: models/lfm has no config.json", cwd="{work}",
          needs_engine=True),
    _case("serve-engine-python-is-a-dir", "serve --engine vllm-cpu", 1, "cannot run {work}",
          env={"COOKBOOK_CPU_ENGINE_PYTHON": "{work}"}),
    _case("serve-engine-not-installed", "serve --engine vllm-cpu", 1, "bash ci/setup.sh cpu-engine",
          env={"COOKBOOK_CPU_ENGINE_PYTHON": "{work}/no-python"}),
    _case("serve-vllm-not-installed", "serve --engine vllm", 1,
          "engine 'vllm' runs vLLM in this Python"),
    _case("serve-empty-model", ["serve", "--engine", "vllm-cpu", "--model", ""], 2, "--model is empty"),
    # run
    _case("run-out-is-a-file", "run 01 --out {file}", 2, "is a file, not a folder"),
    _case("run-out-under-a-file", "run 01 --out {file}/sub", 2, "is a file, not a folder"),
    _case("run-unknown-notebook", "run 99", 2, "unknown notebook '99'; valid: 01_chat, 02_reasoning"),
    _case("run-a-notebook-elsewhere", "run {work}/01_chat.ipynb", 2,
          "is not one of the cookbook's notebooks"),
    _case("run-out-empty", ["run", "01", "--out", ""], 2, "--out is empty"),
    _case("run-out-a-link-loop", "run 01 --out {work}/loop/run", 2, "a symbolic link loop"),
    _case("run-out-is-the-sources", "run 01 --out .", 2, "would overwrite their sources",
          cwd=str(REPO / "notebooks")),
    _case("run-unknown-variant", "run 01 --variant mega", 2, "unknown variant 'mega'"),
    _case("run-cell-timeout-0", "run 01 --cell-timeout 0", 2, "'0' is not a number of seconds > 0"),
    _case("run-cell-timeout-negative", "run 01 --cell-timeout -5", 2, "is not a number of seconds"),
    _case("run-sglang-not-installed", "run 01 --engine sglang", 1, "SGLang is not installed",
          env={"COOKBOOK_SGLANG_BIN": "{work}/no-sglang"}),
    # bench: refused before anything is sent
    _case("bench-scale-without-preset", f"{BENCH} --scale cpu", 2, "--scale picks a version"),
    _case("bench-unknown-preset", f"{BENCH} --preset nope", 2, "unknown preset 'nope'"),
    _case("bench-request-timeout-0", f"{BENCH} --request-timeout 0", 2,
          "argument --request-timeout: '0' is not a number of seconds > 0"),
    _case("bench-request-timeout-negative", f"{BENCH} --request-timeout -1", 2,
          "is not a number of seconds > 0"),
    _case("bench-run-timeout-0", f"{BENCH} --run-timeout 0", 2, "argument --run-timeout"),
    _case("bench-out-is-a-dir", f"{BENCH} --out {{work}}", 2, "is a directory: give a file"),
    _case("bench-out-under-a-file", f"{BENCH} --out {{file}}/r.json", 2, "is a file, not a folder"),
    _case("bench-goodput-not-a-number", f"{BENCH} --goodput ttft:abc", 2, "expected NAME:MS"),
    _case("bench-goodput-negative", f"{BENCH} --goodput ttft:-5", 2, "(milliseconds > 0)"),
    _case("bench-goodput-unknown", f"{BENCH} --goodput foo:5", 2, "valid: ttft, tpot, e2el"),
    _case("bench-zero-prompts", f"{BENCH} --num-prompts 0", 2, "num_prompts 0 (must be >= 1)"),
    _case("bench-negative-input", f"{BENCH} --input-len -1", 2, "input_len -1"),
    _case("bench-no-scheme", "bench --base-url localhost:8000 --model m", 2,
          "an http:// or https:// URL"),
    _case("bench-nothing-there", BENCH, 2, "no server answered at"),
    _case("bench-goodput-twice", BENCH + " --goodput ttft:100 --goodput ttft:200", 2,
          "--goodput ttft:... is given twice"),
    _case("bench-out-a-pipe", BENCH + " --out {pipe}", 2, "is not a regular file"),
    _case("bench-out-no-such-user", BENCH + " --out ~no-such-user-here/r.json", 2,
          "no such user's home folder"),
    _case("bench-out-a-link-loop", BENCH + " --out {work}/loop/r.json", 2, "a symbolic link loop"),
    _case("recipes-a-pipe", "matrix", 2, "is not a regular file", env={"COOKBOOK_RECIPES": "{pipe}"}),
    _case("recipes-dev-zero", "matrix", 2, "is not a regular file",
          env={"COOKBOOK_RECIPES": "/dev/zero"}),
    _case("hw-100k-characters", ["command", "--variant", "instruct", "--hw", "x" * 100_000], 2,
          "(100000 characters)"),
    _case("bench-key-in-the-url", "bench --no-progress --base-url http://me:SECRETKEY@127.0.0.1:9/v1 --model m",
          2, "carries credentials (pass the key with --api-key"),
    # a key may start with "-": it is a key, not an option (argparse alone would say "expected
    # one argument")
    _case("bench-key-starting-with-a-dash", BENCH + " --api-key -Xh3-key", 2, "no server answered at"),
    _case("bench-html-server", "bench --no-progress --base-url {html}/v1 --model m", 2,
          "answered 200 with text/html, not JSON"),
    # bench against the real engine
    _case("bench-wrong-key", "bench --no-progress --base-url {engine}/v1 --model {model} "
          "--api-key wrong", 2, "refused the API key (HTTP 401)"),
    _case("bench-no-key", "bench --no-progress --base-url {engine}/v1 --model {model}", 2,
          "refused the API key", env={"OPENAI_API_KEY": ""}),
    _case("bench-model-not-served", "bench --no-progress --base-url {engine}/v1 --model nope "
          "--api-key {key}", 2, "not 'nope'"),
    _case("bench-past-the-context", "bench --no-progress --base-url {engine}/v1 --model {model} "
          "--api-key {key} --input-len 2046 --output-len 4", 2,
          "input up to 2046 + output up to 4 tokens exceed"),
    _case("bench-huge-prompt", "bench --no-progress --base-url {engine}/v1 --model {model} "
          "--api-key {key} --input-len 3000000", 2, "max_model_len of 2048"),
]  # fmt: skip

SCHEMA_CASES = [
    # (id, how the recipes data is broken, the part of the one line)
    ("lambda-port-70000", lambda r: r["lambda_8b_a1b"].update(port=70000), "lambda_8b_a1b.port"),
    ("lambda-port-0", lambda r: r["lambda_8b_a1b"].update(port=0), "lambda_8b_a1b.port"),
    ("port-default-text", lambda r: r["placeholders"]["PORT"].update(default="abc"),
     "placeholders.PORT.default: PORT must be a port number 1-65535, got 'abc'"),
    ("host-default-a-flag", lambda r: r["placeholders"]["HOST_IP"].update(default="--debug"),
     "placeholders.HOST_IP.default"),
    ("tp-value-0", lambda r: r["pages"]["lfm2.5"].update(tp_values=[None, 0, 2]),
     "pages.lfm2.5.tp_values.1: Input should be greater than or equal to 1"),
    ("tp-value-minus-1", lambda r: r["pages"]["lfm2.5-vl-3b"].update(tp_values=[None, 1, -1]),
     "pages.lfm2.5-vl-3b.tp_values.2: Input should be greater"),
    ("lambda-tp-0", lambda r: r["lambda_8b_a1b"].update(tp=0), "lambda_8b_a1b.tp"),
    # text pasted into a terminal: an image name or the cURL check cannot carry a command
    ("docker-image-command",
     lambda r: r["pages"]["lfm2.5"].update(docker_image="lmsysorg/sglang:dev; rm -rf ~"),
     "pages.lfm2.5.docker_image: String should match pattern"),
    ("parser-toggle-not-a-flag",
     lambda r: r["pages"]["lfm2.5-vl-3b"]["parser_toggles"]["toolCall"].update(flag="lfm2; id"),
     "pages.lfm2.5-vl-3b.parser_toggles.toolCall.flag: 'lfm2; id' is not a flag line"),
    ("model-on-unknown-page", lambda r: r["models"]["vl-3b"].update(page="lfm3"),
     "models.vl-3b.page: unknown page 'lfm3'; valid: lfm2.5, lfm2.5-vl-3b"),
    ("page-unknown-source", lambda r: r["pages"]["lfm2.5-vl-3b"].update(source="nowhere"),
     "pages.lfm2.5-vl-3b.source: unknown source 'nowhere'"),
    ("upstream-variant-of-another-page",
     lambda r: r["pages"]["lfm2.5-vl-3b"]["upstream_variants"].update(instruct="x"),
     "pages.lfm2.5-vl-3b.upstream_variants: 'instruct' is not a model of this page"),
    ("lambda-image-subshell", lambda r: r["lambda_8b_a1b"]["sglang"].update(image="$(id)"),
     "lambda_8b_a1b.sglang.image: String should match pattern"),
    ("curl-check-subshell",
     lambda r: r["pages"]["lfm2.5"].update(curl_check="curl http://$(id):{{CURL_PORT}}/v1"),
     "pages.lfm2.5.curl_check: 'curl http://$(id):{{CURL_PORT}}/v1': '$' is a shell metacharacter"),
    ("flag-tp-0", lambda r: r["deploy"].update(common_flags=["--model-path {{MODEL_NAME}}",
                                                              "--tp 0"]),
     "deploy.common_flags: '--tp 0': --tp takes a GPU count of 1 or more"),
    ("cell-shell-semicolon", lambda r: r["deploy"]["cells"]["h100"].update(
        instruct=["--tool-call-parser lfm2; rm -rf ~"]),
     "cells.h100.instruct: '--tool-call-parser lfm2; rm -rf ~': ';' is a shell metacharacter"),
    ("engine-flag-subshell", lambda r: r["engines"]["vllm_cpu"]["flags"].append("--max-num-seqs $(id)"),
     "engines.vllm_cpu.flags: '--max-num-seqs $(id)': '$' is a shell metacharacter"),
    ("flag-double-quoted-subst", lambda r: r["engines"]["vllm"]["flags"].append('--x "`id`"'),
     "inside double quotes is shell syntax"),
    ("flag-unclosed-quote", lambda r: r["engines"]["vllm"]["flags"].append("--x 'a"),
     "a quote is not closed"),
    ("docker-option-pipe", lambda r: r["docker"]["run_options"].append("--gpus all | sh"),
     "docker.run_options"),
    ("lambda-line-backtick", lambda r: r["lambda_8b_a1b"]["vllm"]["lines"].append("--x `id`"),
     "lambda_8b_a1b.vllm.lines"),
    ("vision-env-subshell", lambda r: r["deploy"].update(vision_env=["SGLANG_X=$(id)"]),
     "deploy.vision_env"),
    ("open-path-without-slash", lambda r: r["engines"]["key_guard"].update(open_paths=["health"]),
     "engines.key_guard.open_paths.0"),
    ("missing-placeholder", lambda r: r["placeholders"].pop("CURL_HOST") and None,
     "placeholders: missing CURL_HOST"),
    ("top-level-list", lambda r: ["models"], "the top level must be a mapping, got list"),
]  # fmt: skip

FILE_CASES = [
    # (id, bytes of the file or None for a directory, the part of the one line)
    (
        "not-utf8",
        b"schema_version: 1\nsources: \xff\xfe\n",
        "is not UTF-8 text (byte 27 is not valid UTF-8)",
    ),
    ("a-directory", None, "is a directory, not a recipes file"),
    ("not-yaml", b"models: [unclosed\n", "is not valid YAML: "),
    ("duplicate-top-level-key", b"REAL\nschema_version: 1\n", "duplicate key schema_version"),
    ("duplicate-nested-key", b"DUP_HF_ID", "duplicate key models.instruct.hf_id (line"),
]


# ----- the world the cases run in -----------------------------------------------------------


class _Html(http.server.BaseHTTPRequestHandler):
    def _page(self) -> None:
        body = b"<html><body>Welcome to nginx!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _page

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Paths, a busy port, a closed port and an HTML server, as the {names} of the cases."""
    work = tmp_path_factory.mktemp("bad")
    (work / "a-file").write_text("not a directory")
    (work / "models" / "lfm").mkdir(parents=True)  # a directory without config.json
    os.mkfifo(work / "a-pipe")  # reading or writing it would wait forever
    (work / "loop").symlink_to(work / "loop")  # a link to itself
    html = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    threading.Thread(target=html.serve_forever, daemon=True).start()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    values = {
        "work": str(work),
        "file": str(work / "a-file"),
        "pipe": str(work / "a-pipe"),
        "busy": str(busy.getsockname()[1]),
        "closed": f"http://127.0.0.1:{free_port()}/v1",
        "html": f"http://127.0.0.1:{html.server_address[1]}",
    }
    yield values
    html.shutdown()
    busy.close()


@pytest.fixture(scope="module")
def engine():
    if not cpu_engine_python().exists():
        pytest.fail(f"no CPU engine at {cpu_engine_python()}: run `bash ci/setup.sh cpu-engine`")
    with Server("instruct", engine="vllm-cpu", progress=False) as server:
        yield server


def _env(case: Case, values: dict[str, str], tmp_path: Path) -> dict[str, str]:
    extra = {k: v.format(**values) for k, v in case.env.items() if k != "GPU"}
    if "GPU" in case.env:  # an nvidia-smi that reports this GPU, and no sglang anywhere
        env = fake_nvidia_smi_env(tmp_path, case.env["GPU"], **extra)
        env["COOKBOOK_SGLANG_BIN"] = str(tmp_path / "no-sglang")  # .venvs/sglang is there
        return env
    return {**os.environ, **extra}


def _message_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and PROGRESS not in line]


def _check(out: subprocess.CompletedProcess, code: int, says: str) -> None:
    text = out.stderr + out.stdout
    assert "Traceback" not in text, text[-3000:]
    assert out.returncode == code, f"exit {out.returncode}, wanted {code}: {text[-2000:]}"
    lines = _message_lines(out.stderr)
    assert len(lines) == 1, f"wanted one line, got: {lines}"
    assert says in lines[0], lines[0]


@pytest.mark.timeout(LIMIT_S)
@pytest.mark.parametrize("case", [_param(c) for c in CLI_CASES])
def test_cli(case, world, cookbook_exe, request, tmp_path):
    values = dict(world)
    if any("{engine}" in a or "{key}" in a for a in case.args):
        server = request.getfixturevalue("engine")
        values.update(engine=server.base_url, model=server.model, key=server.api_key)
    args = [a.format(**values) for a in case.args]
    out = subprocess.run(
        [cookbook_exe, *args], capture_output=True, text=True, timeout=LIMIT_S,
        env=_env(case, values, tmp_path), cwd=(case.cwd or "{work}").format(**values),
    )  # fmt: skip
    _check(out, case.code, case.says.format(**values))
    if "{key}" in " ".join(case.args):
        assert values["key"] not in out.stdout + out.stderr  # the key is never echoed


@pytest.mark.timeout(LIMIT_S)
@pytest.mark.parametrize(("case_id", "damage", "says"), SCHEMA_CASES,
                         ids=[c[0] for c in SCHEMA_CASES])  # fmt: skip
def test_recipes_schema(case_id, damage, says, raw_recipes, cookbook_exe, tmp_path):
    replaced = damage(raw_recipes)  # None: changed in place
    path = tmp_path / "recipes.yaml"
    path.write_text(yaml.safe_dump(raw_recipes if replaced is None else replaced, sort_keys=False))
    out = subprocess.run([cookbook_exe, "matrix"], capture_output=True, text=True,
                         timeout=LIMIT_S, env={**os.environ, "COOKBOOK_RECIPES": str(path)})  # fmt: skip
    _check(out, 2, says)
    assert str(path) in out.stderr  # which file


@pytest.mark.timeout(LIMIT_S)
@pytest.mark.parametrize(("case_id", "content", "says"), FILE_CASES,
                         ids=[c[0] for c in FILE_CASES])  # fmt: skip
def test_recipes_file(case_id, content, says, cookbook_exe, tmp_path):
    path = tmp_path / "recipes.yaml"
    real = RECIPES_PATH.read_bytes()
    if content is None:
        path.mkdir()
    elif content == b"DUP_HF_ID":
        line = b"    hf_id: LiquidAI/LFM2.5-1.2B-Instruct\n"
        assert real.count(line) == 1
        path.write_bytes(real.replace(line, line + line))
    else:
        path.write_bytes(content.replace(b"REAL\n", real))
    out = subprocess.run([cookbook_exe, "matrix"], capture_output=True, text=True,
                         timeout=LIMIT_S, env={**os.environ, "COOKBOOK_RECIPES": str(path)})  # fmt: skip
    _check(out, 2, says)


# ----- faults while a server starts or runs -------------------------------------------------


@pytest.mark.timeout(LIMIT_S)
@pytest.mark.engine
def test_ctrl_c_during_serve_start_up_is_one_line(cookbook_exe, tmp_path):
    proc = subprocess.Popen(
        [cookbook_exe, "serve", "--engine", "vllm-cpu"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "COOKBOOK_LOG_DIR": str(tmp_path)},
        # A shell's background job may start us with SIGINT ignored; a user's Ctrl-C is not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        me = psutil.Process(proc.pid)
        while not [c for c in me.children() if "vllm" in " ".join(c.cmdline())]:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        engine = next(c for c in me.children() if "vllm" in " ".join(c.cmdline()))
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=LIMIT_S)
    finally:
        proc.kill()
    _check(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), 130,
           "cookbook serve: interrupted during start-up; the engine was stopped")  # fmt: skip
    assert not engine.is_running() or engine.status() == psutil.STATUS_ZOMBIE


@pytest.mark.timeout(LIMIT_S)
def test_a_cut_off_benchmark_is_a_counted_failure(engine, cookbook_exe, tmp_path):
    # 2044 prompt tokens + the BOS + 4 output tokens: one past the 2048 the engine serves, so it
    # lowers max_tokens. With ignore_eos that is a cut, not a success.
    out = subprocess.run(
        [cookbook_exe, "bench", "--no-progress", "--base-url", f"{engine.base_url}/v1",
         "--model", engine.model, "--api-key", engine.api_key, "--input-len", "2044",
         "--output-len", "4", "--num-prompts", "2", "--warmup", "0",
         "--out", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=LIMIT_S,
    )  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr, out.stderr
    assert "2 of 2 requests failed" in out.stdout and "cut off: 3 of 4 output tokens" in out.stdout
    saved = yaml.safe_load((tmp_path / "r.json").read_text())
    assert (saved["completed"], saved["failed"]) == (0, 2)


# ----- the Python API: one-line exceptions ---------------------------------------------------

API_CASES = [
    ("host-with-space", lambda w: Server("instruct", engine="vllm-cpu", host="bad host"),
     ServerStartError, "host 'bad host' is not a host name or IP address"),
    ("port-70000", lambda w: Server("instruct", engine="vllm-cpu", port=70000), ServerStartError,
     "port 70000 is not a port number 1-65535"),
    ("port-0", lambda w: Server("instruct", engine="vllm-cpu", port=0), ServerStartError,
     "port 0 is not a port number"),
    ("foreign-address", lambda w: Server("instruct", engine="vllm-cpu", host="8.8.8.8",
                                         progress=False).start(),
     ServerStartError, "8.8.8.8 is not an address of this machine"),
    pytest.param("log-dir-is-a-file", lambda w: Server("instruct", engine="vllm-cpu", progress=False,
                                           log_dir=w["file"]).start(),
     ServerStartError, "is a file, not a directory", marks=pytest.mark.engine, id="log-dir-is-a-file"),
    ("connect-without-scheme", lambda w: Server.connect("localhost:8000"), ServerError,
     "is not an http:// or https:// URL"),
    ("connect-html", lambda w: Server.connect(w["html"] + "/v1", api_key="k"), ServerError,
     "answered 200 with text/html, not an OpenAI model list"),
    ("connect-nothing", lambda w: Server.connect(w["closed"], api_key="k", timeout_s=2),
     ServerError, "no OpenAI-compatible server answered at"),
]  # fmt: skip


@pytest.mark.timeout(LIMIT_S)
@pytest.mark.parametrize(("case_id", "call", "error", "says"), API_CASES,
                         ids=[c[0] if isinstance(c, tuple) else c.id for c in API_CASES])  # fmt: skip
def test_api(case_id, call, error, says, world):
    with pytest.raises(error) as info:
        call(world)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and says in message, message


@pytest.mark.timeout(LIMIT_S)
def test_connect_with_a_wrong_key_says_401(engine):
    with pytest.raises(ServerError) as info:
        Server.connect(f"{engine.base_url}/v1", api_key="wrong")
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "refused the API key (HTTP 401)" in message
    assert engine.api_key not in message


@pytest.mark.timeout(LIMIT_S)
def test_a_client_used_after_stop_says_the_server_was_stopped(engine):
    import openai

    client = engine.client
    assert client.models.list().data[0].id == engine.model
    engine.stop()  # the module's last use of it
    with pytest.raises(openai.APIConnectionError) as info:
        client.models.list()
    message = str(info.value)
    assert "was stopped (stop(), or the end of its `with` block)" in message
    assert len(message.splitlines()) == 1
