"""GPU detection: recorded nvidia-smi answers -> hardware ids; a misbehaving nvidia-smi is reported."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cookbook import gpu

ANSWERS = Path(__file__).parent / "data" / "nvidia-smi"
EXPECTED = {
    "h100-sxm": "h100",
    "h100-pcie": "h100",
    "h100-nvl": "h100",
    "h200": "h200",
    "gh200": "gh200",
    "b200": "b200",
    "a100-sxm4-80gb": "a100",
    "a100-pcie-40gb": "a100",
    "a10g": "a10g",
    "l4": "l4",
    "l40s": "l40s",
    "t4-colab": "t4",
    "t4-old-driver": "t4",
    "h100-sxm-driver-535": "h100",  # detected; its driver is refused later (test_machine.py)
    "v100": "v100",
    "rtx4090": None,
    "mixed-h100-a100": "h100",
    "mixed-a100-h100": "a100",  # GPU 0 is the A100: that is the one the server gets
}


def test_every_recorded_answer_has_an_expectation():
    assert {p.stem for p in ANSWERS.glob("*.txt")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_answers_map_to_hardware(name):
    detection = gpu.detect_from_text((ANSWERS / f"{name}.txt").read_text())
    assert detection.hw == EXPECTED[name]
    assert detection.gpus and detection.error is None


def test_parsed_fields():
    gpus = gpu.parse_nvidia_smi((ANSWERS / "b200.txt").read_text())
    assert len(gpus) == 4
    assert gpus[0] == gpu.Gpu("NVIDIA B200", 183359, "10.0")
    old = gpu.parse_nvidia_smi((ANSWERS / "t4-old-driver.txt").read_text())
    assert old == [gpu.Gpu("Tesla T4", 15109, None)]


def test_whole_token_matching():
    # "L4" must not claim an L40S or an L40; "H200" must not claim a GH200.
    assert gpu.hw_for_name("NVIDIA L40S") == "l40s"
    assert gpu.hw_for_name("NVIDIA L40") is None
    assert gpu.hw_for_name("NVIDIA GH200 480GB") == "gh200"
    assert gpu.hw_for_name("nvidia h200") == "h200"


def test_notes_for_unknown_and_mixed():
    unknown = gpu.detect_from_text((ANSWERS / "rtx4090.txt").read_text())
    assert "pass --hw explicitly" in unknown.notes[0] and "RTX 4090" in unknown.summary
    mixed = gpu.detect_from_text((ANSWERS / "mixed-a100-h100.txt").read_text())
    assert mixed.hw == "a100" and mixed.gpu.name == "NVIDIA A100-SXM4-80GB"
    assert mixed.notes == (
        "mixed GPU models: the server will use GPU 0 (NVIDIA A100-SXM4-80GB, the default); "
        "set CUDA_VISIBLE_DEVICES=<index> to pick another",
    )
    assert "(using GPU 0: NVIDIA A100-SXM4-80GB)" in mixed.summary


@pytest.mark.parametrize(
    ("visible", "hw", "index"), [("1", "h100", 1), ("1,0", "h100", 1), ("0", "a100", 0)]
)
def test_cuda_visible_devices_chooses_the_gpu(visible, hw, index):
    mixed = gpu.detect_from_text((ANSWERS / "mixed-a100-h100.txt").read_text(), visible=visible)
    assert (mixed.hw, mixed.index) == (hw, index)
    assert "chosen by CUDA_VISIBLE_DEVICES" in mixed.notes[0]
    assert mixed.memory_gib == pytest.approx(mixed.gpu.memory_mib / 1024)


def test_cuda_visible_devices_that_hide_or_miss_every_gpu():
    text = (ANSWERS / "h100-sxm.txt").read_text()
    hidden = gpu.detect_from_text(text, visible="")
    assert not hidden.gpus and hidden.error is None and "hides every GPU" in hidden.notes[0]
    missing = gpu.detect_from_text(text, visible="5")
    assert not missing.gpus and "names GPU 5; nvidia-smi lists 2" in missing.error
    uuid = gpu.detect_from_text(text, visible="GPU-8f0c1d2e")
    assert uuid.hw == "h100" and "is not an index (a UUID or MIG id)" in uuid.notes[0]


def _fake_smi(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def test_old_driver_falls_back_to_the_short_query(tmp_path):
    exe = _fake_smi(
        tmp_path,
        'case "$1" in *compute_cap*) echo \'Field "compute_cap" is not a valid field to query.\'; exit 2;;\n'
        f"*) cat {ANSWERS / 't4-old-driver.txt'};; esac\n",
    )
    assert gpu.detect(executable=exe).hw == "t4"


def test_driver_failure_is_reported(tmp_path):
    exe = _fake_smi(
        tmp_path,
        'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9\n',
    )
    detection = gpu.detect(executable=exe)
    assert detection.hw is None and "couldn't communicate with the NVIDIA driver" in detection.error


def test_hanging_nvidia_smi_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "NVIDIA_SMI_TIMEOUT_S", 1)
    detection = gpu.detect(executable=_fake_smi(tmp_path, "sleep 30\n"))
    assert detection.hw is None and "did not answer within 1 s" in detection.error


def test_no_nvidia_smi_means_no_gpu(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    detection = gpu.detect()
    assert detection.hw is None and detection.error is None and detection.summary == "no NVIDIA GPU"


def test_a_gpu_already_in_use_is_refused_with_the_reason(tmp_path, monkeypatch):
    from cookbook import server

    exe = _fake_smi(
        tmp_path,
        'case "$*" in *compute-apps*) echo 4242;; *memory.used*) echo "71234, 81559";;\n'
        f"*) cat {ANSWERS / 'h100-sxm.txt'};; esac\n",
    )
    use = gpu.gpu_use(0, executable=exe)
    assert use == gpu.GpuUse(0, 71234, 81559, (4242,)) and use.used_fraction > 0.8
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(server.ServerStartError) as info:
        server.check_gpu_is_free()
    text = str(info.value)
    assert (
        "GPU 0 (NVIDIA H100 80GB HBM3) already has 71234 of 81559 MiB in use by process 4242"
        in text
    )
    assert "Stop the other server first" in text and "no engine was started" in text


def test_an_idle_gpu_passes(tmp_path, monkeypatch):
    from cookbook import server

    _fake_smi(
        tmp_path,
        'case "$*" in *compute-apps*) ;; *memory.used*) echo "1, 81559";;\n'
        f"*) cat {ANSWERS / 'h100-sxm.txt'};; esac\n",
    )
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    server.check_gpu_is_free()  # no exception: 1 MiB in use is not another server
    assert gpu.gpu_use(0).pids == ()


def test_bytes_that_are_not_utf8_do_not_break_detection(tmp_path):
    exe = _fake_smi(tmp_path, "printf 'NVIDIA H100 80GB HBM3\\377, 81559, 9.0\\n'\n")
    detection = gpu.detect(executable=exe)
    assert detection.error is None and detection.gpu.name.startswith("NVIDIA H100")


def test_an_nvml_error_with_exit_status_0_is_no_gpu_list(tmp_path):
    exe = _fake_smi(tmp_path, "echo 'Failed to initialize NVML: Driver/library version mismatch'\n")
    detection = gpu.detect(executable=exe)
    assert detection.gpus == () and "Driver/library version mismatch" in detection.error
    assert "not a GPU list" in detection.error


@pytest.mark.parametrize("visible", ["GPU-5b8c2f3e-1111-2222-3333-444455556666", "MIG-1a2b3c4d"])
def test_a_uuid_in_cuda_visible_devices_is_not_said_to_choose_the_gpu(visible):
    text = (ANSWERS / "mixed-a100-h100.txt").read_text()
    detection = gpu.detect_from_text(text, visible=visible)
    notes = " ".join(detection.notes)
    assert detection.index == 0 and "not an index (a UUID or MIG id)" in notes
    assert "chosen by CUDA_VISIBLE_DEVICES" not in notes and "the default" in notes
