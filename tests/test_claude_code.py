"""The Claude Code CLI, headless (`claude -p`), against SGLang's Messages API on the CPU, as
notebook 07's environment block sets it up: no network beyond loopback.

Claude Code's system prompt is longer than the fixture's 4096 positions, so the test serves a
copy of the thinking fixture whose config allows 65,536 positions, with SGLang's context length
and token pool raised to match: the weights are the same, and what is tested is the serving path
(the model's tokens come back as Claude Code's reply), not the answer. It is served as 8b-a1b
(that variant's parsers), but with the dense thinking fixture's weights, not 8b-a1b's own
fixture (the tiny MoE, lfm2-moe-tiny), which is slower here (160 s against 41 s, measured once).
Either fixture may reply with no text on a prompt this far past anything it was trained on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cookbook.launch_plans import fixture_path
from cookbook.server import Server
from tests.conftest import CANARY

REPO = Path(__file__).resolve().parent.parent
CLAUDE = REPO / ".venvs" / "claude-code" / "node_modules" / ".bin" / "claude"
LONG_CONTEXT = 65536

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        not CLAUDE.exists(), reason="no Claude Code CLI: bash ci/setup.sh claude-code"
    ),
    pytest.mark.timeout(900),
]


def long_context_fixture(tmp_path: Path) -> Path:
    source = fixture_path("thinking")  # not 8b-a1b's MoE fixture: see the module docstring
    copy = tmp_path / f"{source.name}-long"
    shutil.copytree(source, copy)
    config = json.loads((copy / "config.json").read_text())
    config["max_position_embeddings"] = LONG_CONTEXT
    (copy / "config.json").write_text(json.dumps(config, indent=1))
    return copy


def test_claude_code_answers_through_sglang_on_the_cpu(tmp_path):
    model = long_context_fixture(tmp_path)
    long = ("--context-length", str(LONG_CONTEXT), "--max-total-tokens", str(LONG_CONTEXT))
    server = Server("8b-a1b", "sglang-cpu", model=str(model), progress=False, extra_args=long)
    server.start()
    try:
        home = tmp_path / "home"
        home.mkdir()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),  # a fresh Claude Code profile, nothing of the user's
            "HF_TOKEN": CANARY,
            # notebook 07's block, with the key handed over in the environment
            "ANTHROPIC_BASE_URL": server.base_url,
            "ANTHROPIC_AUTH_TOKEN": server.api_key,
            "ANTHROPIC_MODEL": server.model,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": server.model,
            "ANTHROPIC_DEFAULT_OPUS_MODEL": server.model,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": server.model,
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # loopback only
            "DISABLE_AUTOUPDATER": "1",
        }
        argv = [str(CLAUDE), "-p", "Say hello.", "--output-format", "stream-json", "--verbose"]
        done = subprocess.run(argv, env=env, cwd=home, capture_output=True, text=True, timeout=600)
        log = server.log_path.read_text(errors="replace")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + log[-3000:]
        assert '"POST /v1/messages?beta=true HTTP/1.1" 200' in log  # it reached this server
        events = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        blocks = [b for e in events if e["type"] == "assistant" for b in e["message"]["content"]]
        result = next(e for e in events if e["type"] == "result")
        # The fixture's tokens came back through the Messages API as Claude Code's reply (one
        # event per content block). What they say is not tested: on this prompt the tiny model
        # may think without closing its <think>, a reply with no text (seen in CI), so the text
        # may be empty, but it must be what the server sent.
        assert not result["is_error"] and result["usage"]["output_tokens"] > 0, result
        assert any(b.get("thinking", "").strip() or b.get("text", "").strip() for b in blocks)
        assert result["result"] == "".join(b["text"] for b in blocks if b["type"] == "text")
        assert server.api_key not in done.stdout + done.stderr
    finally:
        server.stop()
