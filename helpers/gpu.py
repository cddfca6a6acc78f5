"""GPU detection: ask `nvidia-smi` what is installed and map it to a hardware id of the recipes."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

from helpers.recipes import Recipes, load_recipes

NVIDIA_SMI_QUERY = ["--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"]
# Drivers before compute_cap was queryable still answer this one.
NVIDIA_SMI_QUERY_OLD = ["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
NVIDIA_SMI_TIMEOUT_S = 15


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int | None = None
    compute_capability: str | None = None


@dataclass(frozen=True)
class Detection:
    gpus: tuple[Gpu, ...] = ()
    hw: str | None = None  # hardware id in the recipes, None when no GPU or an unknown one
    error: str | None = None  # why nothing was detected, when it was not simply "no GPU"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def summary(self) -> str:
        if not self.gpus:
            return f"no NVIDIA GPU ({self.error})" if self.error else "no NVIDIA GPU"
        names = ", ".join(sorted({g.name for g in self.gpus}))
        label = self.hw or "not in the recipes"
        return f"{len(self.gpus)}x {names} -> {label}"


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """Parse `nvidia-smi --query-gpu=name,memory.total[,compute_cap] --format=csv,noheader`."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        memory = re.sub(r"\s*MiB$", "", parts[1]) if len(parts) > 1 else ""
        cap = parts[2] if len(parts) > 2 and re.fullmatch(r"\d+\.\d+", parts[2]) else None
        gpus.append(Gpu(parts[0], int(memory) if memory.isdigit() else None, cap))
    return gpus


def hw_for_name(name: str, recipes: Recipes | None = None) -> str | None:
    """The hardware id whose nvidia-smi pattern names this GPU (whole tokens, longest first)."""
    recipes = recipes or load_recipes()
    patterns = [(p, hw_id) for hw_id, hw in recipes.hardware.items() for p in hw.nvidia_smi]
    for pattern, hw_id in sorted(patterns, key=lambda item: -len(item[0])):
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(pattern)}(?![A-Za-z0-9])", name, re.IGNORECASE):
            return hw_id
    return None


def detect_from_text(text: str, recipes: Recipes | None = None) -> Detection:
    gpus = parse_nvidia_smi(text)
    if not gpus:
        return Detection(error="nvidia-smi listed no GPU")
    ids = [hw_for_name(g.name, recipes) for g in gpus]
    notes = []
    if len(set(ids)) > 1:
        notes.append("mixed GPU models; using the first one")
    if ids[0] is None:
        notes.append(f"{gpus[0].name!r} is not in the recipes; pass --hw explicitly")
    return Detection(tuple(gpus), ids[0], None, tuple(notes))


def run_nvidia_smi(executable: str | None = None) -> tuple[str | None, str | None]:
    """(stdout, error). No nvidia-smi on PATH is not an error: it means no NVIDIA GPU."""
    exe = executable or shutil.which("nvidia-smi")
    if exe is None:
        return None, None
    last_error = None
    for query in (NVIDIA_SMI_QUERY, NVIDIA_SMI_QUERY_OLD):
        try:
            proc = subprocess.run(
                [exe, *query], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            return None, f"nvidia-smi did not answer within {NVIDIA_SMI_TIMEOUT_S} s"
        except OSError as exc:
            return None, f"nvidia-smi could not run: {exc}"
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
    return detect_from_text(text, recipes)
