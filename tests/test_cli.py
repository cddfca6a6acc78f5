"""The `cookbook` console script, run as a user runs it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

ANSWERS = Path(__file__).parent / "data" / "nvidia-smi"

B200_VL450M_DOCKER = """\
docker run --gpus all \\
  --shm-size 32g \\
  -p 30000:30000 \\
  -v ~/.cache/huggingface:/root/.cache/huggingface \\
  --env HF_TOKEN \\
  --env SGLANG_USE_CUDA_IPC_TRANSPORT=1 \\
  --env SGLANG_USE_IPC_POOL_HANDLE_CACHE=1 \\
  --ipc=host \\
  lmsysorg/sglang:dev-cu13 \\
  sglang serve \\
    --trust-remote-code \\
    --model-path LiquidAI/LFM2.5-VL-450M \\
    --tp 1 \\
    --attention-backend flashinfer \\
    --mm-attention-backend fa4 \\
    --tool-call-parser lfm2 \\
    --mem-fraction-static 0.8 \\
    --host 0.0.0.0 \\
    --port 30000
"""


def run(exe, *args, env=None):
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, env=env)


def test_matrix_lists_27_verified_cells_and_the_lambda_recipe(cookbook_exe):
    out = run(cookbook_exe, "matrix")
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if " Verified " in line]
    assert len(rows) == 27
    assert {line.split()[0] for line in rows} == {"h100", "h200", "b200"}
    assert (
        "Recipe lambda-8b-a1b: LiquidAI/LFM2.5-8B-A1B served as lfm25_8b_a1b on port 8000"
        in out.stdout
    )


def test_matrix_json(cookbook_exe):
    data = json.loads(run(cookbook_exe, "matrix", "--json").stdout)
    assert len(data["cells"]) == 27 and all(c["verified"] for c in data["cells"])
    assert data["recipes"][0]["id"] == "lambda-8b-a1b"
    assert "--tool-call-parser pythonic" in data["recipes"][0]["commands"]["vllm"]
    every = json.loads(run(cookbook_exe, "matrix", "--json", "--all").stdout)["cells"]
    assert sum(c["verified"] for c in every) == 27 and len(every) > 27
    a100 = next(c for c in every if c["hw"] == "a100" and c["variant"] == "instruct")
    assert a100["badge"] == "Not Verified" and a100["derived_from"] == "h100/instruct"
    assert a100["attention_backend"] == "flashinfer"
    # GPUs SGLang cannot run get no rows of commands, only the reason.
    assert not [c for c in every if c["hw"] in ("t4", "v100")]
    gone = {
        u["hw"]: u
        for u in json.loads(run(cookbook_exe, "matrix", "--json", "--all").stdout)["unsupported"]
    }
    assert set(gone) == {"t4", "v100"} and "sm75" in gone["t4"]["reason"]


def test_matrix_labels_env_by_what_it_is(cookbook_exe):
    lines = run(cookbook_exe, "matrix", "--all").stdout.splitlines()
    vision = [line for line in lines if "+vision env" in line]
    # Only the VL rows carry the vision transport env; no other env is labelled as it.
    assert vision and all(" vl" in line for line in vision)
    assert any(line.startswith("t4 ") and "Unsupported" in line for line in lines)


def test_command_prints_exactly_the_verified_docker_command(cookbook_exe):
    out = run(cookbook_exe, "command", "--hw", "b200", "--variant", "vl-450m", "--docker")
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout == B200_VL450M_DOCKER


def test_command_overrides_and_json(cookbook_exe):
    out = run(cookbook_exe, "command", "--hw", "h100", "--variant", "instruct", "--tp", "2",
              "--host", "127.0.0.1", "--port", "31000", "--json")  # fmt: skip
    data = json.loads(out.stdout)
    assert data["badge"] == "Not Verified" and data["submit_url"].startswith("https://github.com/")
    assert [(d["tag"], d["line"]) for d in data["diff"]] == [("-", "  --tp 1"), ("+", "  --tp 2")]
    assert data["argv"][-4:] == ["--host", "127.0.0.1", "--port", "31000"]
    assert "http://localhost:31000/v1/chat/completions" in data["curl"]


def test_the_parser_toggle_adds_one_line_and_says_not_verified(cookbook_exe):
    out = run(cookbook_exe, "command", "--hw", "h200", "--variant", "vl-3b", "--parser", "toolCall",
              "--json")  # fmt: skip
    data = json.loads(out.stdout)
    assert data["badge"] == "Not Verified" and data["model"] == "LiquidAI/LFM2.5-VL-3B"
    assert [(d["tag"], d["line"]) for d in data["diff"]] == [("+", "  --tool-call-parser lfm2")]
    plain = run(cookbook_exe, "command", "--hw", "h200", "--variant", "vl-3b")
    assert plain.returncode == 0 and plain.stderr == "" and "--tool-call-parser" not in plain.stdout


def test_not_verified_is_said_on_stderr(cookbook_exe):
    out = run(cookbook_exe, "command", "--hw", "l4", "--variant", "8b-a1b")
    assert out.returncode == 0 and "--model-path LiquidAI/LFM2.5-8B-A1B" in out.stdout
    assert out.stderr.startswith("# Not Verified: NVIDIA L4 is outside the verified matrix")
    assert (
        "flashinfer attention backend" in out.stderr and "Tight fit: 15.5 of 24 GiB" in out.stderr
    )


def test_unsupported_gpu_gets_the_reason_not_a_command(cookbook_exe):
    out = run(cookbook_exe, "command", "--hw", "t4", "--variant", "350m")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("cookbook: unsupported: NVIDIA T4 (t4, compute capability 7.5)")
    assert "Pick an L4 or A100 runtime" in out.stderr and len(out.stderr.splitlines()) == 1


def test_the_lambda_recipes_verify_step(cookbook_exe):
    out = run(cookbook_exe, "command", "--recipe", "lambda-8b-a1b", "--curl")
    assert out.returncode == 0
    assert out.stdout.strip() == (
        'curl -X GET http://localhost:8000/v1/models \\\n  -H "Content-Type: application/json"'
    )


def test_curl_and_recipe(cookbook_exe):
    curl = run(cookbook_exe, "command", "--hw", "h200", "--variant", "jp", "--curl").stdout
    assert curl.startswith("curl http://localhost:30000/v1/chat/completions")
    lam = run(cookbook_exe, "command", "--recipe", "lambda-8b-a1b", "--engine", "vllm").stdout
    assert "--served-model-name lfm25_8b_a1b" in lam


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["command", "--hw", "x100", "--variant", "vl"],
            "unknown hardware 'x100'; valid: h100, h200, b200",
        ),
        (["command", "--hw", "h100", "--variant", "9b"], "unknown variant '9b'; valid: 8b-a1b"),
        (
            ["command", "--hw", "h100", "--variant", "vl", "--port", "abc"],
            "invalid int value: 'abc'",
        ),
        (
            ["command", "--hw", "h100", "--variant", "vl", "--port", "99999"],
            "PORT must be a port number",
        ),
        (
            ["command", "--hw", "h100", "--variant", "vl", "--tp", "3"],
            "unknown TP override 3; valid: 1, 2",
        ),
        (["command", "--hw", "h100"], "give --hw and --variant"),
        (
            ["command", "--hw", "h100", "--variant", "vl", "--parser", "toolCall"],
            "vl's page has none: its parsers are in the verified cells) 'vl'; valid: vl-3b",
        ),
        (
            ["command", "--hw", "h100", "--variant", "vl-3b", "--parser", "toolCall", "--curl"],
            "--curl prints the cURL check, which --parser does not change",
        ),
        (
            ["command", "--hw", "h100", "--variant", "vl", "--hf-token-env", "hf_x"],
            "not the token itself",
        ),
        (["serve-it"], "invalid choice: 'serve-it'"),
        ([], "the following arguments are required"),
    ],
)
def test_bad_input_exits_2_with_one_line(cookbook_exe, args, message):
    out = run(cookbook_exe, *args)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert message in out.stderr and "error:" in out.stderr
    assert "hf_x" not in out.stderr


def _path_with_fake_smi(tmp_path, answer: str) -> dict:
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\ncat {ANSWERS / answer}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}


def test_doctor_maps_the_gpu(cookbook_exe, tmp_path):
    out = run(cookbook_exe, "doctor", env=_path_with_fake_smi(tmp_path, "h100-sxm.txt"))
    assert out.returncode == 0, out.stderr
    assert "gpu        2x NVIDIA H100 80GB HBM3 -> h100" in out.stdout
    data = json.loads(
        run(
            cookbook_exe, "doctor", "--json", env=_path_with_fake_smi(tmp_path, "t4-colab.txt")
        ).stdout
    )
    assert data["gpu"]["hw"] == "t4"
    assert data["packages"]["pydantic"] and set(data["ports"]) == {"30000", "8000", "8888"}


def test_doctor_without_gpu(cookbook_exe):
    env = {**os.environ, "PATH": str(Path(cookbook_exe).parent)}
    out = run(cookbook_exe, "doctor", env=env)
    assert out.returncode == 0 and "gpu        no NVIDIA GPU" in out.stdout


def test_a_hangup_stops_cookbook_run_as_ctrl_c_does():
    # The runner keeps the summary and stops its servers on KeyboardInterrupt; a closed terminal
    # (SIGHUP) takes the same path.
    import signal

    from cookbook_tools import cli

    before = signal.getsignal(signal.SIGHUP)
    try:
        assert cli.main(["run", "01", "--out", ""]) == 2  # refused, after the handler is set
        handler = signal.getsignal(signal.SIGHUP)
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGHUP, None)
    finally:
        signal.signal(signal.SIGHUP, before)
