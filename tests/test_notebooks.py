"""The notebooks as files: stripped, parameterised, badged; and the runner's own logic."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from cookbook import paths, results
from cookbook.server import SERVER_OPTIONS
from cookbook_tools import runner

NOTEBOOKS = runner.available()
# SERVER holds the launch options (cookbook.server.SERVER_OPTIONS) a reader rarely sets.
STANDARD_PARAMETERS = {"ENGINE", "VARIANT", "SERVER"}
# Notebooks that must own their servers cannot take someone else's: 08 kills one of its replicas.
OWNS_ITS_SERVERS = {"08_data_parallel_router": {"base_url", "api_key"}}


def test_there_are_notebooks():
    assert NOTEBOOKS, "no numbered notebooks in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_or_widget_state(path: Path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: strip outputs"
            )
        # Only tags: no papermill/execution timings or collapsed/scrolled state from a run.
        assert set(cell.metadata) <= {"tags"}, f"{path.name}: cell metadata {set(cell.metadata)}"
    assert "widgets" not in nb.metadata, f"{path.name}: widget state is committed"
    assert set(nb.metadata) <= {"kernelspec", "language_info", "colab", "accelerator"}, (
        f"{path.name}: run metadata is committed: {set(nb.metadata)}"
    )
    nbformat.validate(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_comes_first(path: Path):
    nb = nbformat.read(path, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first_code.metadata.get("tags", [])
    names = {
        line.split("=", 1)[0].strip() for line in first_code.source.splitlines() if "=" in line
    }
    assert names >= STANDARD_PARAMETERS
    # `cookbook run` hands over the results file in the kernel's environment, not as a parameter.
    assert "RESULTS_PATH" not in names
    # The SERVER line's comment names every option the notebook takes, and no other.
    line = next(line for line in first_code.source.splitlines() if line.startswith("SERVER ="))
    assert line.startswith("SERVER = {}  # ")
    takes = set(SERVER_OPTIONS) - OWNS_ITS_SERVERS.get(path.stem, set())
    assert {o for o in SERVER_OPTIONS if f'"{o}"' in line.split("#", 1)[1]} == takes, line


def test_a_misspelt_server_option_names_the_valid_ones():
    from cookbook.router import launch_replicas
    from cookbook.server import LaunchOptionError, launch

    with pytest.raises(
        LaunchOptionError,
        match=r"launch: unknown option 'bse_url'; valid: model, hw, base_url, api_key, startup_timeout_s, host",
    ):
        launch("instruct", "sglang-cpu", **{"bse_url": "http://127.0.0.1:1/v1"})
    # 08 starts its own servers: a running server's address does not apply there.
    with pytest.raises(
        LaunchOptionError,
        match=r"launch_replicas: unknown options 'base_url', 'api_key'; valid: model, hw, startup_timeout_s",
    ):
        launch_replicas("instruct", "sglang-cpu", **{"base_url": "http://x/v1", "api_key": "k"})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_badge_and_clone_agree_with_pyproject(path: Path):
    """Every github.com or Colab address in a notebook is pyproject.toml's Repository."""
    import re

    nb = nbformat.read(path, as_version=4)
    text = "\n".join(cell.source for cell in nb.cells)
    assert paths.colab_url(path.name) in nb.cells[0].source  # the badge, in the title cell
    colab = re.findall(r"https://colab\.research\.google\.com/github/[^)\s\"]+", text)
    assert colab == [paths.colab_url(path.name)]
    clones = re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", text)
    assert clones and set(clones) <= {
        paths.repository_url(),
        "https://github.com/sgl-project/sglang",
    }
    boot = nb.cells[3]
    assert "google.colab" in boot.source and paths.repository_url() in boot.source
    # IPython's `!` shows the set-up's output as it comes and sets _exit_code, which is checked:
    # a failed set-up stops the notebook there.
    shell = [line.strip() for line in boot.source.splitlines() if line.strip().startswith("!")]
    assert len(shell) == 2 and "ci/setup.sh colab" in shell[-1]
    assert "assert _exit_code == 0" in boot.source.split(shell[-1], 1)[1]
    assert nb.cells[2].cell_type == "markdown" and "Colab" in nb.cells[2].source
    assert nb.metadata["accelerator"] == "GPU" and nb.metadata["colab"]["gpuType"] == "L4"


def test_repository_url_is_stated_once():
    assert paths.repository_url().startswith("https://github.com/")
    data = (Path(paths.REPO_ROOT) / "data" / "recipes.yaml").read_text()
    assert paths.github_slug() not in data  # pyproject.toml holds it, nothing else
    readme = (Path(paths.REPO_ROOT) / "README.md").read_text()
    assert f"git clone {paths.repository_url()} " in readme


def test_the_set_up_cell_is_the_same_in_every_notebook():
    boots = {nbformat.read(path, as_version=4).cells[3].source for path in NOTEBOOKS}
    assert len(boots) == 1, "copy the set-up cell of another notebook"


def test_the_colab_branch_becomes_python_that_checks_the_exit_status():
    from IPython.core.inputtransformer2 import TransformerManager

    boot = nbformat.read(NOTEBOOKS[0], as_version=4).cells[3].source
    python = TransformerManager().transform_cell(boot)
    compile(python, "set-up cell", "exec")
    # The `!` lines inside the `if` run through IPython (which sets _exit_code), in /content.
    calls = [line.strip() for line in python.splitlines() if "get_ipython().system(" in line]
    assert len(calls) == 2 and all("/content/lfm25-cookbook" in call for call in calls)
    assert "PYTHON={sys.executable}" in calls[1] and "ENGINE={ENGINE}" in calls[1]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_kernel_without_the_cookbook_is_told_which_to_pick(path: Path, tmp_path: Path):
    import subprocess
    import sys

    from IPython.core.inputtransformer2 import TransformerManager

    nb = nbformat.read(path, as_version=4)
    params, boot = nb.cells[1].source, nb.cells[3].source
    script = tmp_path / "cells.py"
    # As the kernel runs it: IPython turns the Colab branch's `!` lines into Python first.
    script.write_text(TransformerManager().transform_cell(params + "\n" + boot))
    # The interpreter this venv was made from, isolated (-I): `cookbook` is not importable there,
    # as in a kernel that is not the cookbook's.
    bare = Path(sys.base_prefix) / "bin" / "python3"
    out = subprocess.run([str(bare), "-I", str(script)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == "ModuleNotFoundError: No module named 'cookbook'"
    # The traceback shows the failing line, and the line says which kernel to pick.
    assert 'Pick the kernel "LFM2.5 cookbook" (make lab)' in out.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_stops_its_server(path: Path):
    nb = nbformat.read(path, as_version=4)
    last_code = [c for c in nb.cells if c.cell_type == "code"][-1]
    source = " ".join(last_code.source.split())
    # finish() records the results for `cookbook run` and stops the server (or the replicas).
    assert re.search(r"\bfinish\(\s*(server|replicas)\b", source), source[-300:]


def test_select_by_number_name_and_path():
    first = NOTEBOOKS[0]
    number = first.stem.split("_")[0]
    assert runner.select([number]) == [first]
    assert runner.select([first.stem, str(first)]) == [first]
    assert runner.select(None) == NOTEBOOKS
    with pytest.raises(runner.RunnerError, match=r"unknown notebook '99_nope'; valid: 0"):
        runner.select(["99_nope"])


def test_record_merges_results(tmp_path):
    path = tmp_path / "r.json"
    results.record(str(path), engine="cpu", chunks=3)
    results.record(str(path), chunks=4, model="m")
    assert json.loads(path.read_text()) == {"engine": "cpu", "chunks": 4, "model": "m"}
    results.record(None, ignored=True)  # outside `cookbook run`: nothing to do


def test_summary_redacts_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_canary_value_123")
    run = runner.NotebookRun("01_chat", "failed", 1.0, error="boom hf_canary_value_123")
    path = runner.write_summary(tmp_path, [run], 1.0)
    text = path.read_text()
    assert "hf_canary_value_123" not in text and "<HF_TOKEN>" in text


def test_a_failure_shows_the_servers_log_path_and_its_last_lines_on_the_console():
    error = (
        "ServerStartError: sglang-cpu server for 'instruct' (fixture/x) exited with code 1 "
        "before it was ready (145.9 s).\nCommand: sglang serve ...\n"
        "Log: /tmp/logs/sglang-cpu-instruct.log (last 40 lines)\n"
        + "\n".join(f"    line {n}" for n in range(30))
        + "\n    RuntimeError: the cause"
    )
    run = runner.NotebookRun("01_chat", "failed", 150.0, error=error, executed="/r/01_chat.ipynb")
    shown = runner.failure_details(run).splitlines()
    assert shown[0].strip() == "Log: /tmp/logs/sglang-cpu-instruct.log (last 40 lines)"
    assert shown[-2].strip() == "RuntimeError: the cause" and len(shown) == 1 + 8 + 1
    assert shown[-1].strip() == "executed notebook: /r/01_chat.ipynb"


def test_error_excerpt_keeps_the_log_tail():
    # A start failure: a long header and command, then the log tail that holds the cause.
    lines = ["ServerError: the cpu server exited during start-up", "Command: " + "x" * 3000]
    lines += [f"log line {i}" for i in range(60)] + ["ValueError: the real cause"]
    excerpt = runner._error_excerpt(RuntimeError("\n".join(lines)))
    assert len(excerpt) <= 1600
    assert excerpt.startswith("RuntimeError: ServerError: the cpu server exited")
    assert excerpt.endswith("ValueError: the real cause") and "log line 59" in excerpt
    assert runner._error_excerpt(RuntimeError("short")) == "RuntimeError: short"


@pytest.mark.engine
def test_a_relative_out_dir_reaches_the_notebooks_as_an_absolute_path(tmp_path, monkeypatch):
    # The notebooks run in notebooks/: a relative results path would land (or not) there.
    seen = {}

    def fake_run_one(notebook, out_dir, parameters, cell_timeout_s):
        seen["out_dir"] = out_dir
        return runner.NotebookRun(notebook.stem, "passed", 0.0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "run_one", fake_run_one)
    runner.run(NOTEBOOKS[:1], Path("runs/here"), echo=lambda *a, **k: None, fresh_servers=True)
    assert seen["out_dir"] == tmp_path / "runs" / "here"
    assert (tmp_path / "runs" / "here" / "summary.json").exists()


@pytest.mark.engine
def test_ctrl_c_keeps_the_summary_and_stops_the_run(tmp_path, monkeypatch):
    calls = []

    def fake_run_one(notebook, out_dir, parameters, cell_timeout_s):
        calls.append(notebook.stem)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return runner.NotebookRun(notebook.stem, "passed", 0.0)

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    with pytest.raises(KeyboardInterrupt):
        runner.run(NOTEBOOKS[:3], tmp_path, echo=lambda *a, **k: None, fresh_servers=True)
    assert calls == [nb.stem for nb in NOTEBOOKS[:2]]  # the third never started
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [n["status"] for n in summary["notebooks"]] == ["passed", "failed"]
    assert summary["notebooks"][1]["error"].startswith("KeyboardInterrupt")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_before_every_code_cell_and_no_lone_headings(path: Path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells[1:], 1):
        before = nb.cells[i - 1]
        if cell.cell_type == "code":
            assert before.cell_type == "markdown", f"{path.name} cell {i}: code after code"
        if cell.cell_type == "markdown":
            lines = [line for line in cell.source.strip().splitlines() if line.strip()]
            assert not (len(lines) == 1 and lines[0].startswith("#")), (
                f"{path.name} cell {i}: a heading with no prose ({lines[0]!r})"
            )


LONGEST_CELL = 25  # lines of code (blank ones not counted): a cell a reader takes in at a glance


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_code_cell_is_long(path: Path):
    nb = nbformat.read(path, as_version=4)
    sizes = {
        i: sum(1 for line in cell.source.splitlines() if line.strip())
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
    }
    assert not {i: n for i, n in sizes.items() if n > LONGEST_CELL}, sizes


TEACHING = ["01_chat", "02_reasoning", "03_tool_calling", "04_vision", "05_base_continuation"]


@pytest.mark.parametrize("stem", TEACHING)
def test_the_raw_sdk_call_comes_before_any_helper(stem: str):
    """Each walkthrough shows the plain OpenAI call for its feature before a helper wraps it."""
    nb = nbformat.read(runner.NOTEBOOKS_DIR / f"{stem}.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    joined = "\n".join(code)
    first_raw = next(i for i, s in enumerate(code) if "client." in s and ".create(" in s)
    helpers_used = [
        i for i, s in enumerate(code) if re.search(r"\b(chat|stream_chat|run_tool_loop)\(", s)
    ]
    assert "OpenAI(base_url=" in joined and "api_key=server.api_key" in joined
    assert not helpers_used or first_raw < min(helpers_used), stem
    if stem == "02_reasoning":
        assert '"reasoning_content"' in joined and '"reasoning"' in joined
    if stem == "03_tool_calling":
        assert (
            '"role": "tool", "tool_call_id": call.id' in joined and "tools=[weather_tool]" in joined
        )
    if stem == "04_vision":
        assert (
            '{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}}' in joined
        )


# ----- shared servers (cookbook run on the CPU engine) ---------------------------------------


def test_which_notebooks_can_be_handed_a_server():
    handed = {nb.stem for nb in NOTEBOOKS if runner.launches_its_server(nb)}
    assert {"01_chat", "03_tool_calling", "06_throughput_benchmark"} <= handed
    # 08 kills one of its own replicas; 09 launches from its panel, on the panel's port.
    assert not handed & {"08_data_parallel_router", "09_deploy_panel"}


def test_default_parameters_are_the_parameters_cell():
    chat = runner.default_parameters(runner.NOTEBOOKS_DIR / "01_chat.ipynb")
    assert chat["VARIANT"] == "instruct" and chat["SERVER"] == {}


class _StubServer:
    started: list = []

    def __init__(self, variant, engine, progress=True, startup_timeout_s=None, **launch):
        self.variant, self.engine, self.alive, self.startup_s = variant, engine, False, None

    def start(self, announce=None):
        _StubServer.started.append(self.variant)
        self.alive, self.startup_s = True, 1.5
        return self

    def stop(self):
        self.alive = False

    def describe(self, command=True):
        return f"<stub {self.variant}>"

    def share_entry(self):
        return {"variant": self.variant, "engine": self.engine,
                "request": {"variant": self.variant, "engine": self.engine}}  # fmt: skip


def test_shared_servers_start_one_server_per_launch_and_clean_up(monkeypatch):
    import os

    from cookbook import server as server_module

    monkeypatch.setattr(server_module, "Server", _StubServer)
    _StubServer.started = []
    monkeypatch.delenv(server_module.SHARED_ENV, raising=False)
    shared = runner.SharedServers("sglang-cpu", echo=lambda *a, **k: None)
    registry = Path(os.environ[server_module.SHARED_ENV])
    order = [
        "01_chat",
        "02_reasoning",
        "03_tool_calling",
        "08_data_parallel_router",
        "06_throughput_benchmark",
    ]
    spent = [
        shared.prepare(runner.NOTEBOOKS_DIR / f"{stem}.ipynb", {"ENGINE": "sglang-cpu"})
        for stem in order
    ]
    assert _StubServer.started == ["instruct", "thinking"]
    assert spent == [1.5, 1.5, None, None, None]  # 03 and 06 reuse 01's; 08 gets none
    assert [e["variant"] for e in json.loads(registry.read_text())] == ["instruct", "thinking"]
    assert registry.stat().st_mode & 0o077 == 0  # private: it names the key files
    # Once no notebook still to run asks for a model, its server goes (06 needs instruct only).
    thinking = shared.servers[("thinking", "sglang-cpu")]
    later = {shared.wanted(runner.NOTEBOOKS_DIR / f"{stem}.ipynb", {}) for stem in order[3:]}
    assert later == {None, ("instruct", "sglang-cpu")}  # 08 launches replicas of its own
    shared.release_all_but(later)
    assert not thinking.alive and list(shared.servers) == [("instruct", "sglang-cpu")]
    assert [e["variant"] for e in json.loads(registry.read_text())] == ["instruct"]
    # A --variant override is one launch for every notebook.
    assert (
        shared.prepare(runner.NOTEBOOKS_DIR / "02_reasoning.ipynb", {"VARIANT": "instruct"}) is None
    )
    stubs = list(shared.servers.values())
    shared.close()
    assert not any(s.alive for s in stubs) and not registry.parent.exists()
    assert server_module.SHARED_ENV not in os.environ


def test_a_notebook_kernel_adopts_the_shared_server(monkeypatch, tmp_path):
    from cookbook import server as server_module
    from cookbook.launch_plans import plan_launch
    from tests.fake_openai import FakeServer

    with FakeServer() as fake:
        key_file = tmp_path / "api-key"
        key_file.write_text("shared-key")
        plan = plan_launch("instruct", "sglang-cpu", port=fake.port)
        request = server_module.LaunchRequest("instruct", "sglang-cpu")
        entry = {"variant": "instruct", "engine": "sglang-cpu",
                 "request": __import__("dataclasses").asdict(request),
                 "base_url": f"http://127.0.0.1:{fake.port}", "port": fake.port,
                 "log_path": str(tmp_path / "engine.log"), "key_file": str(key_file),
                 "plan": __import__("dataclasses").asdict(plan)}  # fmt: skip
        registry = tmp_path / "servers.json"
        registry.write_text(json.dumps([entry]))
        monkeypatch.setenv(server_module.SHARED_ENV, str(registry))
        said = []
        server = server_module.launch("instruct", "sglang-cpu", echo=said.append)
        assert "`cookbook run` started it" in said[0]
        assert isinstance(server, server_module.HandedOverServer)
        assert server.engine == "sglang-cpu" and server.plan.is_fixture
        assert server.api_key == "shared-key" and server.key_file() == key_file
        server.stop()  # the runner's to stop, not the notebook's
        assert server.alive
        # Another launch (the thinking model) is not the shared one: it would start its own.
        thinking = server_module.LaunchRequest("thinking", "sglang-cpu")
        assert server_module.shared_server(thinking) is None


class _Served:
    variant, engine, model, startup_s, stopped = "instruct", "sglang-cpu", "fixture/x", 1.5, False

    def stop(self):
        self.stopped = True


def test_finish_records_where_cookbook_run_says_and_stops_the_server(tmp_path, monkeypatch):
    path = tmp_path / "01_chat.results.json"
    monkeypatch.setenv(results.RESULTS_ENV, str(path))
    served = _Served()
    results.finish(served, chunks=3, startup_s=2.5)
    assert served.stopped and json.loads(path.read_text()) == {
        "variant": "instruct",
        "engine": "sglang-cpu",
        "model": "fixture/x",
        "startup_s": 2.5,
        "chunks": 3,
    }  # fmt: skip  (the server's own, then the notebook's: a result of the same name wins)
    # Run by hand: no file named, nothing recorded; the server is stopped all the same.
    monkeypatch.delenv(results.RESULTS_ENV)
    served = _Served()
    results.finish(served)
    assert served.stopped and sorted(tmp_path.iterdir()) == [path]


def test_the_runner_names_the_results_file_in_the_kernels_environment(tmp_path, monkeypatch):
    import os

    import papermill

    seen = {}

    def fake_execute(source, executed, parameters, **kwargs):
        # What the kernel inherits: the runner's environment at the time it starts.
        seen["parameters"] = parameters
        results.record(os.environ[results.RESULTS_ENV], chunks=3, engine="sglang-cpu")

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    run = runner.run_one(NOTEBOOKS[0], tmp_path, {"ENGINE": "sglang-cpu"}, 60)
    assert run.status == "passed" and run.results == {"chunks": 3} and run.engine == "sglang-cpu"
    assert seen["parameters"] == {"ENGINE": "sglang-cpu"}  # no RESULTS_PATH parameter
    assert results.RESULTS_ENV not in os.environ  # set for the notebook only


def test_the_runners_kernel_listens_on_private_unix_sockets(tmp_path, capfd):
    # A real kernel: the runner asks for Unix sockets in a folder of its own, so the kernel
    # listens on no TCP port and ipykernel prints no unencrypted-TCP warning into `make run`.
    source = tmp_path / "notebooks" / "transport.ipynb"
    source.parent.mkdir()
    probe = (
        "import os\n"
        "from ipykernel.kernelapp import IPKernelApp\n"
        "from cookbook import results\n"
        "app = IPKernelApp.instance()\n"
        "results.record(os.environ[results.RESULTS_ENV], transport=app.transport, ip=app.ip)"
    )
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(probe)]), source)
    run = runner.run_one(source, tmp_path, {}, 60)
    assert run.status == "passed", run.error
    assert run.results["transport"] == "ipc"
    folder = Path(run.results["ip"]).parent
    assert folder.name.startswith("cookbook-kernel-") and not folder.exists()  # removed after
    assert "without encryption" not in capfd.readouterr().err


def test_a_notebook_given_server_options_launches_its_own(monkeypatch):
    shared = runner.SharedServers.__new__(runner.SharedServers)
    shared.engine = "sglang-cpu"
    chat = runner.NOTEBOOKS_DIR / "01_chat.ipynb"
    assert shared.wanted(chat, {}) == ("instruct", "sglang-cpu")
    assert shared.wanted(chat, {"SERVER": {"startup_timeout_s": 600}}) == ("instruct", "sglang-cpu")
    for options in ({"hw": "h100"}, {"model": "/models/x"}, {"base_url": "http://h:1/v1"}):
        assert shared.wanted(chat, {"SERVER": options}) is None


def scaffolding_share(path: Path) -> tuple[int, int]:
    """(scaffolding lines, code lines), blank lines not counted. Scaffolding: the parameters cell,
    the Colab set-up cell, the launch cell(s) and the `finish` cell, what every notebook repeats."""
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    marks = ("google.colab", "cookbook.launch(", "launch_replicas(", "finish(")
    params = {c.source for c in nb.cells if "parameters" in c.metadata.get("tags", [])}
    lines = [sum(1 for line in source.splitlines() if line.strip()) for source in code]
    scaffolding = [s in params or any(m in s for m in marks) for s in code]
    return sum(n for n, s in zip(lines, scaffolding, strict=True) if s), sum(lines)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_scaffolding_is_at_most_a_fifth_of_the_code(path: Path):
    scaffolding, total = scaffolding_share(path)
    assert scaffolding / total <= 0.20, (scaffolding, total)
