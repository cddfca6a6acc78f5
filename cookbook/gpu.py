"""GPU detection: ask `nvidia-smi` what is installed and map it to a hardware id of the recipes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from cookbook.recipes import Recipes, load_recipes

NVIDIA_SMI_QUERY = [
    "--query-gpu=name,memory.total,compute_cap,driver_version",
    "--format=csv,noheader,nounits",
]
# Drivers before compute_cap was queryable still answer this one.
NVIDIA_SMI_QUERY_OLD = [
    "--query-gpu=name,memory.total,driver_version",
    "--format=csv,noheader,nounits",
]
NVIDIA_SMI_TIMEOUT_S = 15


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int | None = None
    compute_capability: str | None = None
    driver: str | None = None  # the NVIDIA driver's version, e.g. "580.65.06"


@dataclass(frozen=True)
class Detection:
    gpus: tuple[Gpu, ...] = ()
    hw: str | None = None  # hardware id of the GPU the server will use (None: none or unknown)
    error: str | None = None  # why nothing was detected, when it was not simply "no GPU"
    notes: tuple[str, ...] = field(default_factory=tuple)
    index: int = 0  # nvidia-smi index of the GPU the server will use

    @property
    def gpu(self) -> Gpu | None:
        """The GPU the server will use: CUDA_VISIBLE_DEVICES' first entry, else GPU 0."""
        return self.gpus[self.index] if self.gpus else None

    @property
    def memory_gib(self) -> float | None:
        gpu = self.gpu
        return gpu.memory_mib / 1024 if gpu and gpu.memory_mib else None

    @property
    def summary(self) -> str:
        if not self.gpus:
            return f"no NVIDIA GPU ({self.error})" if self.error else "no NVIDIA GPU"
        names = ", ".join(sorted({g.name for g in self.gpus}))
        label = self.hw or "not in the recipes"
        used = f" (using GPU {self.index}: {self.gpu.name})" if len(set(self.gpus)) > 1 else ""
        return f"{len(self.gpus)}x {names} -> {label}{used}"


def visible_index(visible: str | None, count: int) -> tuple[int | None, str | None]:
    """(index of the GPU CUDA will call device 0, a note). None: no GPU is visible."""
    if visible is None:
        return 0, None
    first = visible.split(",")[0].strip()
    if first == "" or first.startswith("-"):
        return None, f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    if first.isdigit() and int(first) < count:
        return int(first), None
    if first.isdigit():
        return None, f"CUDA_VISIBLE_DEVICES={visible!r} names GPU {first}; nvidia-smi lists {count}"
    # UUIDs and MIG ids: nvidia-smi's name query does not list them, so fall back to GPU 0.
    return 0, (
        f"CUDA_VISIBLE_DEVICES={visible!r} is not an index (a UUID or MIG id): the recipe is "
        "GPU 0's, which may not be the GPU CUDA uses; set an index to be sure"
    )


def not_a_gpu_list(text: str) -> str | None:
    """The first line of nvidia-smi's answer that is no GPU of the query (name, memory, ...)."""
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if line.strip() and (len(parts) < 2 or not re.fullmatch(r"\d+(\s*MiB)?", parts[1])):
            return line.strip()[:200]
    return None


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """Parse `nvidia-smi --query-gpu=name,memory.total[,compute_cap][,driver_version]
    --format=csv,noheader` (a compute capability is one dot, a driver version two or more)."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        memory = re.sub(r"\s*MiB$", "", parts[1]) if len(parts) > 1 else ""
        cap = next((p for p in parts[2:] if re.fullmatch(r"\d+\.\d+", p)), None)
        driver = next((p for p in parts[2:] if re.fullmatch(r"\d+\.\d+\.\d+", p)), None)
        gpus.append(Gpu(parts[0], int(memory) if memory.isdigit() else None, cap, driver))
    return gpus


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def hw_for_name(name: str, recipes: Recipes | None = None) -> str | None:
    """The hardware id whose nvidia-smi pattern names this GPU (whole tokens, longest first)."""
    recipes = recipes or load_recipes()
    patterns = [(p, hw_id) for hw_id, hw in recipes.hardware.items() for p in hw.nvidia_smi]
    for pattern, hw_id in sorted(patterns, key=lambda item: -len(item[0])):
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(pattern)}(?![A-Za-z0-9])", name, re.IGNORECASE):
            return hw_id
    return None


def detect_from_text(
    text: str, recipes: Recipes | None = None, visible: str | None = None
) -> Detection:
    """Map nvidia-smi's answer to the GPU the server will use. `visible` is
    CUDA_VISIBLE_DEVICES; the servers launch with CUDA_DEVICE_ORDER=PCI_BUS_ID, so its indices
    are nvidia-smi's."""
    gpus = parse_nvidia_smi(text)
    if not gpus:
        return Detection(error="nvidia-smi listed no GPU")
    index, note = visible_index(visible, len(gpus))
    if index is None:
        hidden = visible is not None and not visible.split(",")[0].strip().isdigit()
        # Hidden on purpose means no GPU for the server; a bad index is an error.
        return Detection(notes=(note,)) if hidden else Detection(error=note)
    ids = [hw_for_name(g.name, recipes) for g in gpus]
    notes = [note] if note else []
    if len({g.name for g in gpus}) > 1:
        by_index = visible is not None and visible.split(",")[0].strip().isdigit()
        how = "chosen by CUDA_VISIBLE_DEVICES" if by_index else "the default"
        notes.append(
            f"mixed GPU models: the server will use GPU {index} ({gpus[index].name}, {how}); "
            "set CUDA_VISIBLE_DEVICES=<index> to pick another"
        )
    if ids[index] is None:
        notes.append(f"{gpus[index].name!r} is not in the recipes; pass --hw explicitly")
    return Detection(tuple(gpus), ids[index], None, tuple(notes), index)


def run_nvidia_smi(executable: str | None = None) -> tuple[str | None, str | None]:
    """(stdout, error). No nvidia-smi on PATH is not an error: it means no NVIDIA GPU."""
    exe = executable or shutil.which("nvidia-smi")
    if exe is None:
        return None, None
    last_error = None
    for query in (NVIDIA_SMI_QUERY, NVIDIA_SMI_QUERY_OLD):
        try:
            proc = subprocess.run(
                [exe, *query], capture_output=True, text=True, errors="replace",
                timeout=NVIDIA_SMI_TIMEOUT_S,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return None, f"nvidia-smi did not answer within {NVIDIA_SMI_TIMEOUT_S} s"
        except OSError as exc:
            return None, f"nvidia-smi could not run: {exc}"
        if proc.returncode == 0 and not_a_gpu_list(proc.stdout):
            # Some drivers print an NVML error and still exit 0: that is no list of GPUs.
            return None, f"nvidia-smi answered {not_a_gpu_list(proc.stdout)!r}, not a GPU list"
        if proc.returncode == 0:
            return proc.stdout, None
        last_error = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [
            f"exit {proc.returncode}"
        ]
    return None, f"nvidia-smi failed: {last_error[0]}"


def detect(recipes: Recipes | None = None, executable: str | None = None) -> Detection:
    """Detect the local GPU and map it to a hardware id (None when there is none)."""
    text, error = run_nvidia_smi(executable)
    if text is None:
        return Detection(error=error)
    return detect_from_text(text, recipes, os.environ.get("CUDA_VISIBLE_DEVICES"))


@dataclass(frozen=True)
class GpuUse:
    """What is already on one GPU: memory in use and the compute processes nvidia-smi lists."""

    index: int
    used_mib: int
    total_mib: int
    pids: tuple[int, ...] = ()

    @property
    def used_fraction(self) -> float:
        return self.used_mib / self.total_mib if self.total_mib else 0.0


def gpu_use(index: int = 0, executable: str | None = None) -> GpuUse | None:
    """Memory in use on GPU `index` and its compute processes; None when nvidia-smi cannot say.
    (Processes of other containers may be missing from the list; the memory is still counted.)"""
    exe = executable or shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        memory = subprocess.run(
            [exe, f"--id={index}", "--query-gpu=memory.used,memory.total",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, errors="replace", timeout=NVIDIA_SMI_TIMEOUT_S,
        )  # fmt: skip
        apps = subprocess.run(
            [exe, f"--id={index}", "--query-compute-apps=pid", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, errors="replace", timeout=NVIDIA_SMI_TIMEOUT_S,
        )  # fmt: skip
    except (subprocess.TimeoutExpired, OSError):
        return None
    numbers = re.findall(r"\d+", memory.stdout) if memory.returncode == 0 else []
    if len(numbers) < 2:
        return None
    pids = tuple(int(p) for p in re.findall(r"^\s*(\d+)", apps.stdout, re.M))
    return GpuUse(index, int(numbers[0]), int(numbers[1]), pids if apps.returncode == 0 else ())
