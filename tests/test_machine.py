"""What `auto` means on a machine, and what set-up installs there, with recorded nvidia-smi
answers on PATH (SGLang itself is never faked: 'no SGLang' is the only state tested)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import pytest

from cookbook import gpu, machine
from cookbook.machine import EngineUnavailableError, choose_engine
from tests.conftest import NVIDIA_SMI_ANSWERS, REPO, fake_nvidia_smi_env


def detection(answer: str) -> gpu.Detection:
    return gpu.detect_from_text((NVIDIA_SMI_ANSWERS / f"{answer}.txt").read_text())


NO_GPU = gpu.Detection()


def test_auto_is_sglang_with_a_gpu_and_sglang_and_cpu_without_a_gpu():
    assert choose_engine("auto", detection("h100-sxm"), sglang_present=True) == "sglang"
    assert choose_engine("auto", detection("l4"), sglang_present=True) == "sglang"
    assert choose_engine("auto", NO_GPU, sglang_present=True) == "sglang-cpu"
    # An explicit engine is taken as asked, GPU or not.
    assert choose_engine("vllm-cpu", detection("h100-sxm"), sglang_present=True) == "vllm-cpu"


def test_no_gpu_and_no_sglang_is_an_error_naming_the_install():
    with pytest.raises(EngineUnavailableError) as info:
        choose_engine("auto", NO_GPU, sglang_present=False)
    text = str(info.value)
    assert "SGLang is not installed" in text and "engine sglang-cpu" in text
    assert "`bash ci/setup.sh sglang`" in text and "ENGINE='vllm-cpu'" in text


def test_a_gpu_without_sglang_is_an_error_not_the_cpu_engine():
    with pytest.raises(EngineUnavailableError) as info:
        choose_engine("auto", detection("h100-sxm"), sglang_present=False)
    text = str(info.value)
    assert "has a GPU (2x NVIDIA H100 80GB HBM3 -> h100) but SGLang is not installed" in text
    assert "`bash ci/setup.sh sglang`" in text and machine.sglang_pin() in text
    assert "ENGINE='sglang-cpu'" in text


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ("t4-colab", "Pick an L4 or A100 runtime"),
        ("v100", "the triton backend is refused by LFM2"),
        ("rtx4090", "is not one of the GPUs the recipes know"),
    ],
)
def test_a_gpu_sglang_cannot_run_is_an_error_with_the_reason(answer, says):
    with pytest.raises(EngineUnavailableError, match=says):
        choose_engine("auto", detection(answer), sglang_present=True)


def test_a_failing_nvidia_smi_is_not_taken_for_no_gpu():
    broken = gpu.Detection(error="nvidia-smi failed: couldn't communicate with the NVIDIA driver")
    with pytest.raises(EngineUnavailableError, match="fix the driver, or set ENGINE='sglang-cpu'"):
        choose_engine("auto", broken, sglang_present=True)


def test_plans_name_what_set_up_installs(monkeypatch, tmp_path):
    monkeypatch.setattr(machine, "SGLANG_VENV", tmp_path / "none")  # nothing installed yet
    h100 = machine.plan("auto", detection("h100-sxm"))
    assert (h100.engine, h100.environments, h100.stop) == ("sglang", ("sglang",), None)
    assert any("the `gpu` extra" in line and "sglang==" in line for line in h100.lines())
    assert any(line.startswith(".venv ") for line in h100.lines())
    assert any("the verified cells" in line for line in h100.lines())
    # An L4 has no verified cell; Colab makes no .venv; an installed environment is not re-sold.
    l4 = dataclasses.replace(machine.plan("auto", detection("l4")), colab=True)
    assert any("derived from the nearest verified cell (Not Verified)" in x for x in l4.lines())
    assert not any(line.startswith(".venv ") for line in l4.lines())
    (tmp_path / "none" / "bin").mkdir(parents=True)
    (tmp_path / "none" / "bin" / "sglang").touch()
    assert any(line.startswith("present      .venvs/sglang") for line in h100.lines())
    assert not any("about 11 GB" in line for line in h100.lines())
    cpu = machine.plan("auto", NO_GPU)
    assert (cpu.engine, cpu.environments) == ("sglang-cpu", ("sglang",))
    t4 = machine.plan("auto", detection("t4-colab"))
    assert t4.engine is None and "sm75" in t4.stop and t4.shell() == "ENGINE=\nENVIRONMENTS=\n"
    forced = machine.plan("vllm-cpu", detection("t4-colab"))
    assert (forced.engine, forced.environments) == ("vllm-cpu", ("cpu-engine",))
    on_cpu = machine.plan("sglang-cpu", detection("t4-colab"))
    assert (on_cpu.engine, on_cpu.environments) == ("sglang-cpu", ("sglang",))


def test_cookbook_run_on_a_gpu_without_sglang_fails_in_seconds(cookbook_exe, tmp_path):
    env = fake_nvidia_smi_env(tmp_path, "h100-sxm", COOKBOOK_SGLANG_BIN=str(tmp_path / "no-sglang"))
    out_dir = tmp_path / "run"
    started = time.monotonic()
    out = subprocess.run(
        [cookbook_exe, "run", "01", "--out", str(out_dir)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.startswith("cookbook: error: this machine has a GPU (2x NVIDIA H100")
    assert "SGLang is not installed" in out.stderr and "Traceback" not in out.stderr
    # No notebook ran, so no fixture was served.
    assert not (out_dir / "01_chat.ipynb").exists()


def test_cookbook_serve_on_a_t4_says_why(cookbook_exe, tmp_path):
    env = fake_nvidia_smi_env(tmp_path, "t4-colab")
    out = subprocess.run(
        [cookbook_exe, "serve", "--variant", "350m"], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "NVIDIA T4 (t4, compute capability 7.5) cannot run" in out.stderr


@pytest.mark.parametrize(
    ("line", "driver", "capability"),
    [
        ("NVIDIA H100 80GB HBM3, 81559, 9.0, 580.65.06", "580.65.06", "9.0"),
        ("NVIDIA H100 80GB HBM3, 81559, 9.0", None, "9.0"),  # a fake that knows no driver
        ("Tesla V100-SXM2-16GB, 16160, 535.104.05", "535.104.05", None),  # the older query
    ],
)
def test_the_driver_version_is_read_apart_from_the_compute_capability(line, driver, capability):
    (found,) = gpu.parse_nvidia_smi(line)
    assert (found.driver, found.compute_capability) == (driver, capability)


def test_a_driver_older_than_sglangs_cuda_build_is_refused_naming_both_versions():
    old = detection("h100-sxm-driver-535")
    with pytest.raises(EngineUnavailableError) as info:
        choose_engine("auto", old, sglang_present=True)
    text = str(info.value)
    need = machine.load_recipes().engines.sglang.min_driver
    assert "535.104.05" in text and need in text and machine.sglang_pin() in text
    assert "Update the driver" in text and "ENGINE='sglang-cpu'" in text
    plan = machine.plan("auto", old)  # set-up stops before installing SGLang
    assert plan.engine is None and "535.104.05" in plan.stop
    new = gpu.detect_from_text(f"NVIDIA H100 80GB HBM3, 81559, 9.0, {need}")
    assert choose_engine("auto", new, sglang_present=True) == "sglang"
    assert machine.driver_problem(detection("h100-sxm")) is None  # not said: not refused


def test_cookbook_serve_on_an_old_driver_says_why(cookbook_exe, tmp_path):
    env = fake_nvidia_smi_env(tmp_path, "h100-sxm-driver-535")
    out = subprocess.run(
        [cookbook_exe, "serve", "--variant", "350m"], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "the NVIDIA driver here is 535.104.05" in out.stderr


# ----- ci/setup.sh ---------------------------------------------------------------------------


def setup(*args: str, env: dict, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "ci/setup.sh", *args], cwd=cwd, capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "engine", "code", "says"),
    [
        ("h100-sxm", "auto", 0, "sglang"),  # the environment: to install, or present
        ("mixed-a100-h100", "auto", 0, "the server will use GPU 0 (NVIDIA A100-SXM4-80GB"),
        (None, "auto", 0, "engine       sglang-cpu: SGLang on the CPU (the cookbook's torch"),
        ("t4-colab", "auto", 3, "Pick an L4 or A100 runtime"),
        ("t4-colab", "vllm-cpu", 0, "cpu-engine"),
    ],
)
def test_setup_plan(tmp_path, answer, engine, code, says):
    out = setup("plan", env=fake_nvidia_smi_env(tmp_path, answer, ENGINE=engine))
    assert out.returncode == code, out.stderr
    if says in ("sglang", "cpu-engine"):  # what the plan says of an environment depends on it
        there = (REPO / ".venvs" / says / "bin").is_dir()
        says = f"present      .venvs/{says}" if there else f"install      .venvs/{says}"
    assert says in out.stderr
    assert "preparing .venvs" not in out.stderr  # a plan installs no engine


def _copy_of_the_project(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(source.read_bytes())
    return dest


@pytest.mark.setup  # installs the cookbook into a new environment (about 100 s)
def test_setup_adopts_a_user_made_venv_and_deletes_nothing(tmp_path):
    project = _copy_of_the_project(tmp_path / "project")
    subprocess.run(["python3", "-m", "venv", str(project / ".venv")], check=True)
    mine = project / ".venv" / "my-notes.txt"
    mine.write_text("the user's own file")
    env = fake_nvidia_smi_env(tmp_path, None, JUPYTER_DATA_DIR=str(tmp_path / "jupyter"))
    out = setup("main", env=env, cwd=project)
    assert out.returncode == 0, out.stderr
    assert "adopting .venv (made outside the cookbook)" in out.stderr
    assert mine.read_text() == "the user's own file"
    assert (project / ".venv" / ".cookbook-adopted").exists()
    assert not (project / ".venv" / ".stamp").exists()  # never ours: never rebuilt or deleted
    assert (project / ".venv" / "bin" / "cookbook").exists()
    kernel = json.loads(
        (tmp_path / "jupyter" / "kernels" / "lfm25-cookbook" / "kernel.json").read_text()
    )
    assert kernel["display_name"] == "LFM2.5 cookbook"
    assert kernel["argv"][0].startswith(str(project / ".venv"))
    # `make clean` leaves it too.
    subprocess.run(["make", "clean"], cwd=project, check=True, capture_output=True)
    assert mine.exists()


def test_setup_stops_on_a_foreign_venv_it_cannot_use(tmp_path):
    project = _copy_of_the_project(tmp_path / "project")
    python = project / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho 'Python 3.8.10'\nexit 1\n")
    python.chmod(0o755)
    out = setup("main", env=fake_nvidia_smi_env(tmp_path, None), cwd=project)
    assert out.returncode == 1
    assert "was not made by this cookbook" in out.stderr and "Nothing was deleted" in out.stderr
    assert python.exists()


def test_an_explicit_sglang_launch_on_an_old_driver_is_refused_before_anything_runs(
    tmp_path, monkeypatch
):
    from cookbook.errors import ServerStartError
    from cookbook.launch_plans import plan_launch

    env = fake_nvidia_smi_env(tmp_path, "h100-sxm-driver-535")
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ServerStartError, match="the NVIDIA driver here is 535.104.05"):
        plan_launch("instruct", "sglang", port=31000)
    # The same GPU whose answer names no driver: planned as before.
    (tmp_path / "fake-bin" / "nvidia-smi").unlink()
    monkeypatch.setenv("PATH", fake_nvidia_smi_env(tmp_path, "h100-sxm")["PATH"])
    assert plan_launch("instruct", "sglang", port=31000).engine == "sglang"


def _free_space(monkeypatch, gb: float) -> None:
    usage = machine.shutil.disk_usage("/")
    monkeypatch.setattr(machine.shutil, "disk_usage", lambda _: usage._replace(free=int(gb * 1e9)))


def test_set_up_refuses_environments_the_disk_cannot_hold(monkeypatch, tmp_path):
    sizes = machine.load_recipes().environments
    both = sizes.size_gb["sglang"] + sizes.size_gb["cpu-engine"] + sizes.margin_gb
    folder = tmp_path / "project" / ".venvs"  # not made yet: the nearest folder's disk counts
    _free_space(monkeypatch, both - 0.5)
    problem = machine.disk_problem(["sglang", "cpu-engine"], folder)
    assert problem.startswith("not enough disk space for .venvs/sglang and .venvs/cpu-engine")
    assert f"wants {both:.1f} GB free" in problem and f"has {both - 0.5:.1f} GB free" in problem
    assert "Nothing was installed" in problem and "Free 0.5 GB or more" in problem
    _free_space(monkeypatch, both)
    assert machine.disk_problem(["sglang", "cpu-engine"], folder) is None
    # A finished environment needs no room (set-up keeps it or deletes it first); one an install
    # left half-made (no stamp) still needs all of it.
    (folder / "sglang").mkdir(parents=True)
    _free_space(monkeypatch, sizes.size_gb["cpu-engine"] + sizes.margin_gb)
    assert "for .venvs/sglang and .venvs/cpu-engine" in machine.disk_problem(
        ["sglang", "cpu-engine"], folder
    )
    (folder / "sglang" / ".stamp").write_text("built")
    assert machine.disk_problem(["sglang", "cpu-engine"], folder) is None
    with pytest.raises(machine.CookbookChoiceError, match="unknown environment 'vllm'; valid: sg"):
        machine.disk_problem(["vllm"], folder)


def _recipes_wanting(tmp_path: Path, size_gb: float) -> Path:
    import yaml

    raw = yaml.safe_load((REPO / "data" / "recipes.yaml").read_text())
    raw["environments"]["size_gb"] = {"sglang": size_gb, "cpu-engine": size_gb}
    path = tmp_path / "recipes.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("step", "says"),
    [("all", ".venvs/sglang and .venvs/cpu-engine"), ("machine", ".venvs/sglang:")],
)
def test_setup_stops_before_installing_what_would_not_fit(tmp_path, step, says):
    # A project without its engine environments, whose recipes say each takes a petabyte: set-up
    # must stop after .venv (linked to this checkout's, so nothing is installed) and make nothing.
    project = _copy_of_the_project(tmp_path / "project")
    (project / ".venv").symlink_to(REPO / ".venv")
    env = fake_nvidia_smi_env(
        tmp_path, None, COOKBOOK_RECIPES=str(_recipes_wanting(tmp_path, 1e6)), PIP_NO_INDEX="1"
    )
    out = setup(step, env=env, cwd=project)
    assert out.returncode == 4, out.stderr
    assert f"[setup] stopped: not enough disk space for {says}" in out.stderr
    assert "Nothing was installed" in out.stderr and "preparing" not in out.stderr
    assert not (project / ".venvs").exists()
