"""The Deploy panel's logic without a browser: selection -> command, badge, diff, submit URL, and
Launch / Stop through cookbook.server (on a stand-in engine that starts in a fraction of a second).

Expected commands are written out here from the upstream cells (tests/reference.py), not produced
by the generator."""

from __future__ import annotations

import html
import os
import stat
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psutil
import pytest

from cookbook import gpu
from cookbook.commands import DiffLine, PlaceholderError
from cookbook.processes import free_port
from cookbook.recipes import CookbookChoiceError
from cookbook.server import ConnectedServer, ServerStartError
from cookbook.widgets import (
    NOT_VERIFIED,
    VERIFIED,
    DeployPanel,
    PanelState,
    Selection,
    command_html,
    copy_button_html,
    hardware_options,
    initial_hardware,
    panel_state,
    variant_options,
)
from tests.reference import SERVING

CANARY = "hf_CANARY_widget_7d2b91"
NO_GPU = gpu.Detection()

H100_INSTRUCT = (
    "sglang serve \\\n"
    "  --trust-remote-code \\\n"
    "  --model-path LiquidAI/LFM2.5-1.2B-Instruct \\\n"
    "  --tp 1 \\\n"
    "  --tool-call-parser lfm2 \\\n"
    "  --host 0.0.0.0 \\\n"
    "  --port 30000"
)
B200_8B_DOCKER_TP2 = (
    "docker run --gpus all \\\n"
    "  --shm-size 32g \\\n"
    "  -p 31000:31000 \\\n"
    "  -v ~/.cache/huggingface:/root/.cache/huggingface \\\n"
    "  --env HF_TOKEN \\\n"
    "  --ipc=host \\\n"
    "  lmsysorg/sglang:dev-cu13 \\\n"
    "  sglang serve \\\n"
    "    --trust-remote-code \\\n"
    "    --model-path LiquidAI/LFM2.5-8B-A1B \\\n"
    "    --tp 2 \\\n"
    "    --attention-backend flashinfer \\\n"
    "    --reasoning-parser qwen3 \\\n"
    "    --tool-call-parser lfm2 \\\n"
    "    --host 0.0.0.0 \\\n"
    "    --port 31000"
)


def query_of(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("https", "github.com")
    return {k: v[0] for k, v in parse_qs(parts.query).items()}


# ----- selection -> state -------------------------------------------------------------------


def test_a_verified_cell_is_shown_as_upstream_writes_it():
    state = panel_state(Selection("h100", "instruct"))
    assert state.command == H100_INSTRUCT == state.base_command
    assert (state.verified, state.badge, state.submit_url) == (True, VERIFIED, None)
    assert state.added == [] and state.removed == []
    assert state.model == SERVING["instruct"]
    assert state.curl == (
        "curl http://localhost:30000/v1/chat/completions \\\n"
        "-H 'Content-Type: application/json' \\\n"
        '-d \'{ "model": "LiquidAI/LFM2.5-1.2B-Instruct", "messages": [{"role":"user","content":"Hello"}] }\''
    )


def test_tp2_in_docker_flips_the_badge_shows_the_diff_and_offers_submit():
    state = panel_state(Selection("b200", "8b-a1b", tp=2, docker=True, port=31000))
    assert state.command == B200_8B_DOCKER_TP2
    assert (state.verified, state.badge) == (False, NOT_VERIFIED)
    assert state.removed == ["    --tp 1"] and state.added == ["    --tp 2"]
    assert "TP override" in state.reason
    query = query_of(state.submit_url)
    assert query["title"] == "[Playground] Verified cell: b200 / 8b-a1b / bf16 / default / single"
    assert B200_8B_DOCKER_TP2 in query["cell-snippet"]
    assert "curl http://localhost:31000/" in state.curl


@pytest.mark.parametrize("tp", [None, 1])
def test_no_override_or_the_same_tp_stays_verified(tp):
    state = panel_state(Selection("h200", "thinking", tp=tp))
    assert state.verified and state.submit_url is None
    assert state.command == state.base_command


def test_a_gpu_outside_the_matrix_gets_the_derived_recipe_not_verified():
    state = panel_state(Selection("l4", "350m"))
    assert state.badge == NOT_VERIFIED and state.derived_from == "h100/350m"
    assert "derived from the verified h100/350m cell" in state.reason
    lines = state.command.splitlines()
    assert lines[0] == "sglang serve \\"
    assert any("flashinfer attention backend" in note for note in state.notes)
    assert "l4 / 350m" in query_of(state.submit_url)["combination"]


def test_hf_token_is_named_never_valued(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", CANARY)
    for hw in ("h100", "l4"):
        for docker in (False, True):
            state = panel_state(Selection(hw, "vl", tp=2, docker=docker))
            text = " ".join(
                [state.command, state.curl, state.submit_url or "", command_html(state)]
            )
            assert CANARY not in text
            assert ("  --env HF_TOKEN \\" in state.command) == docker


@pytest.mark.parametrize(
    ("selection", "error", "message"),
    [
        (Selection("h900", "instruct"), CookbookChoiceError, r"unknown hardware 'h900'; valid: h100, h200, b200, gh200"),
        (Selection("h100", "7b"), CookbookChoiceError, r"unknown variant '7b'; valid: 8b-a1b, instruct"),
        (Selection("h100", "instruct", tp=4), CookbookChoiceError, r"unknown TP override 4; valid: 1, 2"),
        (Selection("h100", "instruct", port="80a"), PlaceholderError, r"PORT must be a port number 1-65535, got '80a'"),
        (Selection("h100", "instruct", port=70000), PlaceholderError, r"PORT must be a port number"),
        (Selection("h100", "instruct", host_ip="my host"), PlaceholderError, r"HOST_IP must be a host name or IP address, got 'my host'"),
    ],
)  # fmt: skip
def test_bad_selections_name_what_is_wrong(selection, error, message):
    with pytest.raises(error, match=message):
        panel_state(selection)


# ----- state -> HTML ------------------------------------------------------------------------


class _Lines(HTMLParser):
    """(class, text) of every div with a cb-line class, and the textarea's text."""

    def __init__(self):
        super().__init__()
        self.lines: list[tuple[str, str]] = []
        self.textarea = ""
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get("class", "")
        if tag == "div" and "cb-line" in cls:
            self._in = cls
            self.lines.append((cls, ""))
        elif tag == "textarea":
            self._in = "textarea"

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "textarea":
            self.textarea += data
        elif self._in:
            cls, text = self.lines[-1]
            self.lines[-1] = (cls, text + data)


def parse(markup: str) -> _Lines:
    parser = _Lines()
    parser.feed(markup)
    return parser


def test_the_diff_view_marks_added_green_and_removed_struck_red():
    state = panel_state(Selection("b200", "instruct", tp=2))
    markup = command_html(state)
    lines = parse(markup).lines
    assert ("cb-line cb-del", "-   --tp 1") in lines
    assert ("cb-line cb-add", "+   --tp 2 \\") in lines
    assert lines[0] == ("cb-line", "  sglang serve \\")
    assert lines[-1] == ("cb-line", "    --port 30000")  # the last line has no continuation
    struck = markup.split("cb-del", 1)[1].split("</div>", 1)[0]
    assert '<s style="text-decoration:line-through;">--tp 1</s>' in struck  # the text, not indent
    # Without an override the view is the plain command.
    plain = parse(command_html(panel_state(Selection("b200", "instruct")))).lines
    assert (
        "\n".join(text for _, text in plain) == panel_state(Selection("b200", "instruct")).command
    )


def test_markup_is_escaped():
    diff = (DiffLine(" ", "echo <b>&'\""), DiffLine("+", "<script>x</script>"))
    state = PanelState(Selection("h100", "instruct"), "c", "b", diff, False, "r<", None, "", "m")
    markup = command_html(state)
    assert "<script>" not in markup and "<b>" not in markup
    assert [text for _, text in parse(markup).lines] == [
        "  echo <b>&'\" \\",
        "+ <script>x</script>",
    ]


def test_copy_button_carries_the_exact_command():
    command = panel_state(Selection("h100", "vl", docker=True)).command
    markup = copy_button_html(command)
    assert parse(markup).textarea == command
    assert "navigator.clipboard" in html.unescape(markup) and "execCommand" in html.unescape(markup)


# ----- pickers and detection ----------------------------------------------------------------


def test_pickers_list_the_matrix_first_then_derived_gpus_and_models():
    hw_ids = [hw for _, hw in hardware_options()]
    assert hw_ids[:3] == ["h100", "h200", "b200"]
    # GPUs SGLang cannot run (T4, V100) have no command, so they are not offered.
    assert set(hw_ids[3:]) == {"gh200", "b300", "a100", "a10g", "l4", "l40s"}
    labels = dict((hw, label) for label, hw in hardware_options())
    assert "Not Verified" in labels["l4"] and "Not Verified" not in labels["h100"]
    variants = [v for _, v in variant_options()]
    assert variants[: len(SERVING)] == list(SERVING)
    assert {"jp-original", "base-1.2b"} <= set(variants[8:])


@pytest.mark.parametrize(
    ("given", "smi", "expected", "says"),
    [
        (None, "NVIDIA H200, 143771, 9.0", "h200", "detected: 1x NVIDIA H200 -> h200"),
        (None, "NVIDIA L4, 23034, 8.9", "l4", "detected: 1x NVIDIA L4 -> l4"),
        (None, "Tesla K80, 11441, 3.7", "h100", "not in the recipes; showing the h100 cell"),
        (None, "Tesla T4, 15360, 7.5", "h100", "which SGLang cannot run (SGLang 0.5.23 does not"),
        (None, None, "h100", "no NVIDIA GPU here: showing the h100 cell"),
        ("b200", "NVIDIA H100 80GB HBM3, 81559, 9.0", "b200", "chosen by the HW parameter"),
    ],
)
def test_the_detected_gpu_is_preselected(given, smi, expected, says):
    detection = gpu.detect_from_text(smi) if smi else NO_GPU
    hw, why = initial_hardware(given, detection)
    assert hw == expected and says in why
    panel = DeployPanel(given, "instruct", engine="vllm-cpu", detection=detection)
    assert panel.hw.value == expected
    assert panel.state.verified == (expected in ("h100", "h200", "b200"))


# ----- the widgets --------------------------------------------------------------------------


def all_widget_state(panel: DeployPanel) -> str:
    """Every synced value of every widget in the panel, as the front end (and a saved notebook)
    would get it."""
    out, todo = [], [panel.widget]
    while todo:
        widget = todo.pop()
        out.append(repr(widget.get_state()))
        todo += list(getattr(widget, "children", ()))
    return "\n".join(out)


def test_controls_drive_the_command_badge_and_submit_link():
    panel = DeployPanel("h100", "instruct", engine="vllm-cpu", detection=NO_GPU)
    assert "Verified" in panel.badge.value and "cb-verified" in panel.badge.value
    assert panel.submit.value == ""
    panel.tp.value = 2  # as a click on "2" does
    assert "cb-not-verified" in panel.badge.value and "Not Verified" in panel.badge.value
    assert 'class="cb-submit"' in panel.submit.value
    assert ("cb-line cb-add", "+   --tp 2 \\") in parse(panel.command.value).lines
    panel.tp.value = 0  # "none"
    assert panel.submit.value == "" and "cb-add" not in panel.command.value
    panel.docker.value = True
    panel.port.value = "31000"
    assert parse(panel.copy.value).textarea == panel.state.command
    assert panel.state.command.startswith(
        "docker run --gpus all \\\n  --shm-size 32g \\\n  -p 31000:31000"
    )


def test_a_bad_placeholder_shows_an_error_instead_of_a_command():
    panel = DeployPanel("h100", "instruct", engine="vllm-cpu", detection=NO_GPU)
    panel.port.value = "http"
    assert panel.state is None and "PORT must be a port number 1-65535" in panel.command.value
    assert panel.copy.value == "" and panel.badge.value == ""
    with pytest.raises(PlaceholderError, match="PORT must be"):
        panel.launch()
    panel.port.value = "8080"
    assert panel.state.command.endswith("--port 8080")


def test_bad_programmatic_choices_raise_clearly():
    with pytest.raises(CookbookChoiceError, match=r"unknown variant 'nope'"):
        DeployPanel(variant="nope", engine="vllm-cpu", detection=NO_GPU)
    with pytest.raises(CookbookChoiceError, match=r"unknown hardware 'x1'"):
        DeployPanel("x1", engine="vllm-cpu", detection=NO_GPU)
    panel = DeployPanel(engine="vllm-cpu", detection=NO_GPU)
    with pytest.raises(CookbookChoiceError, match=r"unknown TP override 3; valid: none, 1, 2"):
        panel.select(tp=3)
    with pytest.raises(CookbookChoiceError, match=r"unknown hardware 'a6000'"):
        panel.select(hw="a6000")


def test_the_typed_token_leaves_the_widget_at_once(monkeypatch):
    panel = DeployPanel("b200", "instruct", engine="vllm-cpu", detection=NO_GPU)
    panel.docker.value = True
    panel.hf_token.value = CANARY  # what the front end sends after Enter / leaving the field
    assert panel.hf_token.value == "" and panel.hf_token_set
    assert "set for Launch" in panel.hf_token.placeholder
    assert CANARY not in all_widget_state(panel)
    assert "  --env HF_TOKEN \\" in panel.state.command


# ----- Launch / Stop on a stand-in engine ---------------------------------------------------

FAKE_ENGINE = textwrap.dedent(
    """
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1])
    name = args[args.index("--served-model-name") + 1]
    with open(os.environ["FAKE_ENGINE_REPORT"], "w") as fh:
        json.dump({"pid": os.getpid(), "hf_token": os.environ.get("HF_TOKEN"), "argv": args}, fh)
    if os.environ.get("FAKE_ENGINE_FAIL"):
        print("loading weights ... HF_TOKEN=" + str(os.environ.get("HF_TOKEN")), flush=True)
        print("boom: a deliberate start-up failure", flush=True)
        sys.exit(3)

    class Handler(BaseHTTPRequestHandler):
        def _send(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send({"data": [{"id": name}]})

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self._send({"choices": [{"message": {"role": "assistant", "content": "hi there"}}]})

        def log_message(self, *a):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    """COOKBOOK_CPU_ENGINE_PYTHON pointed at a stand-in that serves /v1/models at once and
    reports its own environment."""
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE_ENGINE)
    exe = tmp_path / "python"
    # The plan runs `python -m vllm...`: drop those two words and run the stand-in instead.
    exe.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{script}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    report = tmp_path / "report.json"
    monkeypatch.setenv("COOKBOOK_CPU_ENGINE_PYTHON", str(exe))
    monkeypatch.setenv("FAKE_ENGINE_REPORT", str(report))
    monkeypatch.setenv("COOKBOOK_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return report


def read_report(report: Path) -> dict:
    import json

    return json.loads(report.read_text())


def test_launch_gives_the_token_to_the_engine_only_then_stop(fake_engine, tmp_path):
    panel = DeployPanel("h100", "thinking", engine="vllm-cpu", detection=NO_GPU)
    port = free_port()
    panel.select(port=port)
    panel.hf_token.value = CANARY
    server = panel.launch()
    try:
        assert server.alive and server.port == port and server.model == "fixture/lfm2-tiny-thinking"
        report = read_report(fake_engine)
        assert report["hf_token"] == CANARY  # in the engine's environment ...
        assert CANARY not in " ".join(report["argv"])  # ... not on its command line
        assert os.environ.get("HF_TOKEN") is None  # nor left in ours
        watchdog = psutil.Process(server._owned.watchdog.pid)
        assert "HF_TOKEN" not in watchdog.environ()
        assert "Ready: fixture/lfm2-tiny-thinking" in panel.status.value
        assert panel.stop_button.disabled is False and panel.launch_button.disabled is True
        curl, answer = panel.check()
        assert answer == "hi there" and f"$(cat {server.key_file()})" in curl
        assert server.api_key not in curl
        key_file = server.key_file()
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert key_file.parent.stat().st_mode & 0o777 == 0o700
        assert CANARY not in all_widget_state(panel)
        assert CANARY not in server.log_path.read_text()
    finally:
        panel.stop()
    assert not server.alive and not psutil.pid_exists(report["pid"])
    assert not key_file.exists()  # the key file goes with the server
    assert panel.launch_button.disabled is False and panel.stop_button.disabled is True
    assert "Stopped" in panel.status.value


def test_a_failed_launch_shows_the_log_tail_redacted(fake_engine, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_FAIL", "1")
    panel = DeployPanel("h100", "instruct", engine="vllm-cpu", detection=NO_GPU)
    panel.select(port=free_port())
    panel.set_hf_token(CANARY)
    with pytest.raises(ServerStartError, match="boom: a deliberate start-up failure"):
        panel.launch()
    assert "Launch failed: ServerStartError" in panel.status.value
    assert "boom: a deliberate start-up failure" in panel.log.value
    assert "exited with code 3" in panel.log.value
    assert "HF_TOKEN=&lt;HF_TOKEN&gt;" in panel.log.value  # the engine echoed it: redacted
    assert CANARY not in all_widget_state(panel)
    assert panel.server is None and panel.launch_button.disabled is False


def test_the_buttons_launch_in_the_background_and_stop(fake_engine):
    panel = DeployPanel("h100", "instruct", engine="vllm-cpu", detection=NO_GPU)
    panel.select(port=free_port())
    panel.launch_button.click()
    panel.launch_button.click()  # a second click while starting does nothing
    panel.wait(30)
    assert panel.server is not None and panel.server.alive
    pid = panel.server.pid
    panel.check_button.click()
    assert "hi there" in panel.log.value
    panel.stop_button.click()
    assert panel.server is None and not psutil.pid_exists(pid)
    assert panel.progress.layout.display == "none"


def test_with_base_url_launch_connects_and_stop_leaves_it_running(fake_engine):
    from cookbook.server import Server

    with Server("instruct", engine="vllm-cpu", progress=False) as running:
        panel = DeployPanel(
            "h100",
            "instruct",
            engine="vllm-cpu",
            base_url=f"{running.base_url}/v1",
            api_key=running.api_key,
            detection=NO_GPU,
        )
        assert "connects to" in panel.status.value
        server = panel.launch()
        assert isinstance(server, ConnectedServer) and server.model == running.model
        assert panel.check()[1] == "hi there"
        panel.stop()
        assert running.alive  # someone else's server keeps running


def test_tp_override_is_disabled_where_the_seed_does_not_offer_it():
    panel = DeployPanel("h100", "8b-a1b", engine="vllm-cpu", detection=NO_GPU)
    panel.select(tp=2)
    assert not panel.tp.disabled and panel.state.selection.tp == 2
    panel.select(variant="350m")  # a small checkpoint: the override goes, the cell is Verified
    assert panel.tp.disabled and panel.state.selection.tp is None and panel.state.verified
    assert "larger checkpoints only" in panel.tp.tooltip


def test_the_vl_3b_pages_parser_toggle_flips_the_badge_with_its_added_line():
    panel = DeployPanel("h100", "vl-3b", engine="vllm-cpu", detection=NO_GPU)
    box = panel.parsers["toolCall"]
    assert not box.disabled and panel.state.verified and panel.submit.value == ""
    assert "--tool-call-parser" not in panel.state.command  # the page's cell has no parser
    box.value = True  # as a click on the checkbox does
    assert "cb-not-verified" in panel.badge.value and 'class="cb-submit"' in panel.submit.value
    assert panel.state.added == ["  --tool-call-parser lfm2"] and panel.state.removed == []
    assert ("cb-line cb-add", "+   --tool-call-parser lfm2 \\") in parse(panel.command.value).lines
    assert "parser toggle" in panel.state.reason
    # The submit form names VL-3B's own page model, not LFM2.5's.
    assert "model=LiquidAI%2FLFM2.5-VL-3B" in panel.state.submit_url
    box.value = False
    assert panel.state.verified and panel.submit.value == ""


def test_a_parser_toggle_exists_only_on_its_models_page():
    panel = DeployPanel("h100", "vl-3b", engine="vllm-cpu", detection=NO_GPU)
    panel.select(parsers=("toolCall",))
    assert not panel.state.verified
    panel.select(variant="vl")  # the LFM2.5 page: its parsers are in the cells
    assert panel.parsers["toolCall"].disabled and not panel.parsers["toolCall"].value
    assert panel.state.verified and panel.state.selection.parsers == ()
    with pytest.raises(CookbookChoiceError, match=r"unknown parser toggle for vl 'toolCall'"):
        panel.select(parsers=("toolCall",))
