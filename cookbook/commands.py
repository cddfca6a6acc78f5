"""The command generator: recipes -> `sglang serve` commands, Docker wraps, cURL checks, Playground.

The text layout follows the upstream Deploy panel: env assignments one per line, then
``sglang serve \\`` and one flag per line indented by two spaces (four inside ``docker run``).
"""

from __future__ import annotations

import difflib
import importlib.metadata
import re
import shlex
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from cookbook.errors import BadInputError
from cookbook.recipes import CookbookChoiceError, Recipes, load_recipes, placeholder_problem

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_CONTINUATION = " \\"


class PlaceholderError(BadInputError, ValueError):
    names_command = False
    """A placeholder override is not acceptable (bad port, a token where a name belongs, ...)."""


class UnsupportedGpuError(BadInputError, ValueError):
    label = "unsupported"
    names_command = False
    """No recipe can start on this GPU (compute capability, backends or memory), with the reason."""


GIB = 1024**3


@dataclass(frozen=True)
class Placeholders:
    """Values substituted into commands. ``hf_token`` is the NAME of the variable with the token."""

    HOST_IP: str
    PORT: str
    HF_TOKEN: str
    CURL_HOST: str
    CURL_PORT: str

    @classmethod
    def resolve(cls, overrides: dict[str, object] | None = None, recipes: Recipes | None = None):
        recipes = recipes or load_recipes()
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        unknown = sorted(set(overrides) - set(recipes.placeholders))
        if unknown:
            raise PlaceholderError(
                f"unknown placeholder {unknown[0]!r}; valid: {', '.join(recipes.placeholders)}"
            )
        values = {name: str(p.default) for name, p in recipes.placeholders.items()}
        values.update({k: str(v) for k, v in overrides.items()})
        # Defaults may refer to other placeholders (CURL_PORT follows PORT).
        for name, value in values.items():
            values[name] = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), value)
        _validate_placeholders(values)
        return cls(**values)


def _validate_placeholders(values: dict[str, str]) -> None:
    for name, value in values.items():
        problem = placeholder_problem(name, value)
        if problem:
            raise PlaceholderError(problem)


@dataclass(frozen=True)
class LaunchSpec:
    """One launch: env assignments and flag lines (placeholders unresolved), plus provenance."""

    hw: str
    variant: str
    model: str  # Hugging Face id
    env: tuple[str, ...]
    flags: tuple[str, ...]
    verified: bool
    derived_from: str | None = None  # the verified cell a Not-Verified recipe was derived from
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cell_id(self) -> str:
        return f"{self.hw}/{self.variant}"


def _strip_flag(flags: list[str], name: str) -> list[str]:
    return [f for f in flags if f.split(" ", 1)[0].split("=", 1)[0] != name]


def verified_spec(hw: str, variant: str, recipes: Recipes | None = None) -> LaunchSpec:
    """The verified cell for a matrix GPU and a serving variant, exactly as upstream."""
    recipes = recipes or load_recipes()
    if hw not in recipes.deploy.cells:
        raise CookbookChoiceError("verified hardware", hw, recipes.verified_hardware)
    if variant not in recipes.variants:
        raise CookbookChoiceError("serving variant", variant, recipes.variants)
    model = recipes.models[variant]
    deploy = recipes.deploy
    env = tuple(deploy.vision_env) if model.capabilities.vision else ()
    flags = (*deploy.common_flags, *deploy.cells[hw][variant], *deploy.tail_flags)
    return LaunchSpec(hw, variant, model.hf_id, env, flags, verified=True)


def weights_gib(variant: str, recipes: Recipes | None = None) -> float:
    """GiB of the model's weights in bf16 (its parameters x 2 bytes)."""
    recipes = recipes or load_recipes()
    return recipes.model(variant).params_b * 1e9 * recipes.gpu_rules.bytes_per_param / GIB


def _flag_value(flags: list[str], name: str) -> str | None:
    for flag in flags:
        head, _, value = flag.partition(" ")
        if head == name:
            return value
    return None


def check_supported(hw: str, recipes: Recipes | None = None) -> None:
    """Raise UnsupportedGpuError when the data marks the GPU unsupported."""
    recipes = recipes or load_recipes()
    hardware = recipes.hw(hw)
    if hardware.unsupported:
        raise UnsupportedGpuError(
            f"{hardware.name} ({hw}, compute capability {hardware.compute_capability}) cannot run "
            f"the cookbook's SGLang recipes: {hardware.unsupported}"
        )


def attention_backend(hw: str, flags: list[str] | tuple[str, ...], recipes: Recipes) -> str:
    """The attention backend SGLang will run: the command's flag, else its default for the GPU."""
    cc = recipes.hw(hw).compute_capability
    return _flag_value(list(flags), "--attention-backend") or (
        recipes.gpu_rules.default_backend(cc) or "none"
    )


def check_startable(hw: str, variant: str, flags, recipes: Recipes) -> None:
    """The data's rule for a derived recipe: its attention backend must cover the GPU."""
    hardware = recipes.hw(hw)
    cc = hardware.compute_capability
    backend = attention_backend(hw, flags, recipes)
    rule = recipes.gpu_rules.attention_backends.get(backend)
    if rule is None or not rule.covers(cc):
        valid = [b for b, r in recipes.gpu_rules.attention_backends.items() if r.covers(cc)]
        raise UnsupportedGpuError(
            f"{hardware.name} ({hw}, compute capability {cc}): the {variant} recipe would run "
            f"attention backend {backend!r}, which LFM2 cannot use there; "
            f"backends for this GPU: {', '.join(valid) or 'none'}"
        )


def memory_notes(
    hw: str, variant: str, memory_gib: float | None = None, recipes: Recipes | None = None
) -> list[str]:
    """Refuse a model whose weights do not fit the GPU by the data's margin; note a tight fit.
    `memory_gib` is the detected size; without it, the largest size the GPU is sold with."""
    recipes = recipes or load_recipes()
    rules, hardware, model = recipes.gpu_rules, recipes.hw(hw), recipes.model(variant)
    weights = weights_gib(variant, recipes)
    sizes = [memory_gib] if memory_gib else sorted(hardware.memory_gib)
    needed = weights / rules.max_weights_fraction
    memory = sizes[-1]
    what = f"{memory:.0f} GiB detected" if memory_gib else f"{memory:.0f} GiB"
    if memory < needed:
        raise UnsupportedGpuError(
            f"{model.display_name} does not fit a {hardware.name} with {what}: its bf16 weights "
            f"take {weights:.1f} GiB ({model.params_b}B parameters x "
            f"{rules.bytes_per_param:g} bytes) and the cookbook keeps them under "
            f"{rules.max_weights_fraction:.0%} of the GPU, so it needs at least {needed:.1f} GiB; "
            "pick a smaller variant or a larger GPU"
        )
    notes = []
    small = [s for s in sizes if s < needed]
    if small:
        notes.append(
            f"{model.display_name} needs a GPU with at least {needed:.1f} GiB "
            f"({weights:.1f} GiB of bf16 weights): not the {', '.join(f'{s:.0f}' for s in small)}"
            f" GiB {hardware.name}."
        )
    if weights > rules.warn_weights_fraction * memory:
        notes.append(
            f"Tight fit: {weights:.1f} of {memory:.0f} GiB go to the weights, leaving little for "
            "the KV cache and conv state (fewer concurrent requests)."
        )
    return notes


def launch_spec(
    hw: str,
    variant: str,
    tp: int | None = None,
    recipes: Recipes | None = None,
    memory_gib: float | None = None,
) -> LaunchSpec:
    """The recipe for any GPU and any model: verified where the matrix has it, else derived.

    Raises UnsupportedGpuError where no recipe can start: a GPU the data marks unsupported, a
    derived recipe whose attention backend does not cover the GPU, or weights that do not fit
    (`memory_gib`: the detected GPU memory; default: the largest size the GPU comes in)."""
    recipes = recipes or load_recipes()
    hardware = recipes.hw(hw)
    model = recipes.model(variant)
    check_supported(hw, recipes)
    base_hw = hardware.derive_from or hw
    base_variant = model.based_on or variant
    spec = verified_spec(base_hw, base_variant, recipes)
    env, flags, notes = list(spec.env), list(spec.flags), []
    derived_from = None

    if model.based_on is not None:
        if not model.capabilities.tools:
            flags = _strip_flag(flags, "--tool-call-parser")
        if model.capabilities.reasoning_parser is None:
            flags = _strip_flag(flags, "--reasoning-parser")
        notes.append(f"{model.display_name}: the {base_variant} cell with the model path swapped.")
        if model.note:
            notes.append(model.note)
        if model.capabilities.base:
            notes.append(recipes.base_note)
        derived_from = spec.cell_id
    if hardware.derive_from is not None:
        check_startable(hw, variant, flags, recipes)
        notes.append(
            f"{hardware.name} is outside the verified matrix: derived from the "
            f"{hardware.derive_from} cell, not yet run end-to-end (SGLang will use the "
            f"{attention_backend(hw, flags, recipes)} attention backend there)."
        )
        derived_from = spec.cell_id
    notes += memory_notes(hw, variant, memory_gib, recipes)
    spec = LaunchSpec(
        hw,
        variant,
        model.hf_id,
        tuple(env),
        tuple(flags),
        verified=derived_from is None,
        derived_from=derived_from,
        notes=tuple(notes),
    )
    return with_tp(spec, tp, recipes) if tp is not None else spec


def cpu_launch_spec(
    variant: str, model_path: str, served_name: str, recipes: Recipes | None = None
) -> LaunchSpec:
    """SGLang on a CPU (engine sglang-cpu): the variant's recipe on engines.sglang_cpu.base_hw
    with the GPU-only flags and environment removed, the CPU flags added before --host, and a
    local model (a fixture) served under `served_name`. Never verified."""
    recipes = recipes or load_recipes()
    cpu = recipes.engines.sglang_cpu
    base = launch_spec(cpu.base_hw, variant, recipes=recipes)
    flags = list(base.flags)
    for name in cpu.drop_flags:
        flags = _strip_flag(flags, name)
    at = next(i for i, f in enumerate(flags) if f.startswith("--model-path")) + 1
    flags.insert(at, f"--served-model-name {served_name}")
    at = next(i for i, f in enumerate(flags) if f.startswith("--host"))
    flags[at:at] = cpu.flags
    env = [e for e in base.env if e.split("=", 1)[0] not in cpu.drop_env]
    env += [f"{k}={v}" for k, v in cpu.env.items()] + [f"PYTHONPATH={cpu.standins_dir}"]
    return LaunchSpec(
        "cpu",
        variant,
        model_path,
        tuple(env),
        tuple(flags),
        verified=False,
        derived_from=base.cell_id if base.verified else base.derived_from,
        notes=(cpu.label,),
    )


def cpu_launch_diff(
    variant: str, model_path: str, served_name: str, recipes: Recipes | None = None
) -> tuple[DiffLine, ...]:
    """How the CPU launch departs from the GPU command, as the Playground shows an override."""
    recipes = recipes or load_recipes()
    values = Placeholders.resolve({"HOST_IP": "127.0.0.1"}, recipes=recipes)
    base = launch_spec(recipes.engines.sglang_cpu.base_hw, variant, recipes=recipes)
    cpu = cpu_launch_spec(variant, model_path, served_name, recipes)
    return line_diff(render(base, values, recipes=recipes), render(cpu, values, recipes=recipes))


def tp_offered(variant: str, recipes: Recipes | None = None) -> bool:
    """Whether the Playground offers a TP override for this model (a Base repo: its based_on)."""
    recipes = recipes or load_recipes()
    model = recipes.model(variant)
    return (model.based_on or variant) in recipes.playground.tp_variants


def with_tp(spec: LaunchSpec, tp: int, recipes: Recipes | None = None) -> LaunchSpec:
    """The Playground's TP override: replace --tp, placed right after --model-path."""
    recipes = recipes or load_recipes()
    valid = [v for v in recipes.page_of(spec.variant).tp_values if v is not None]
    if tp not in valid:
        raise CookbookChoiceError("TP override", tp, [str(v) for v in valid])
    if str(tp) != _flag_value(list(spec.flags), "--tp") and not tp_offered(spec.variant, recipes):
        raise CookbookChoiceError(
            f"variant for a TP override (the seed offers TP=2 on the larger checkpoints only; "
            f"{spec.variant} is not one)",
            spec.variant,
            recipes.playground.tp_variants,
        )
    flags = _strip_flag(list(spec.flags), "--tp")
    at = next(i for i, f in enumerate(flags) if f.startswith("--model-path")) + 1
    flags.insert(at, f"--tp {tp}")
    unchanged = tuple(flags) == spec.flags
    return replace(spec, flags=tuple(flags), verified=spec.verified and unchanged)


def parser_toggles(variant: str, recipes: Recipes | None = None) -> dict[str, str]:
    """The Playground's parser items for a model's page: toggle id -> the flag it adds."""
    recipes = recipes or load_recipes()
    return {k: t.flag for k, t in recipes.page_of(variant).parser_toggles.items()}


def with_parser(spec: LaunchSpec, toggle: str, recipes: Recipes | None = None) -> LaunchSpec:
    """A Playground parser toggle turned on: its flag joins before the tail flags (--host,
    --port), where the LFM2.5 page's cells carry their parsers. A flag already there is kept."""
    recipes = recipes or load_recipes()
    toggles = parser_toggles(spec.variant, recipes)
    if not toggles:
        offered = [m for m in recipes.variants if parser_toggles(m, recipes)]
        raise CookbookChoiceError(
            f"variant for a parser toggle ({spec.variant}'s page has none: its parsers are in "
            "the verified cells)",
            spec.variant,
            offered,
        )
    if toggle not in toggles:
        raise CookbookChoiceError(f"parser toggle for {spec.variant}", toggle, list(toggles))
    flag = toggles[toggle]
    if flag in spec.flags:
        return spec
    flags = list(spec.flags)
    tail = next(i for i, f in enumerate(flags) if f in recipes.deploy.tail_flags)
    flags.insert(tail, flag)
    return replace(spec, flags=tuple(flags), verified=False)


# ----- rendering ----------------------------------------------------------------------------


def substitute(text: str, spec: LaunchSpec, values: Placeholders) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "MODEL_NAME":
            return spec.model
        if not hasattr(values, name):
            raise PlaceholderError(f"no value for placeholder {{{{{name}}}}} in {text!r}")
        return getattr(values, name)

    return _PLACEHOLDER.sub(one, text)


def bare_lines(spec: LaunchSpec, values: Placeholders, recipes: Recipes | None = None) -> list[str]:
    recipes = recipes or load_recipes()
    lines = [*spec.env, recipes.deploy.program, *("  " + f for f in spec.flags)]
    return [substitute(line, spec, values) for line in lines]


def docker_lines(
    spec: LaunchSpec, values: Placeholders, recipes: Recipes | None = None
) -> list[str]:
    recipes = recipes or load_recipes()
    docker = recipes.docker
    token_var = values.HF_TOKEN
    # Docker copies the variable from the caller's environment: the token never enters the text.
    hf_token = "--env HF_TOKEN" if token_var == "HF_TOKEN" else f'--env "HF_TOKEN=${token_var}"'
    options = [
        *docker.run_options,
        hf_token,
        *(f"--env {e}" for e in spec.env),
        *docker.after_env_options,
    ]
    first, *rest = options
    image = recipes.page_of(spec.variant).docker_image
    lines = [f"docker run {first}", *("  " + o for o in rest), "  " + image]
    lines += ["  " + recipes.deploy.program, *("    " + f for f in spec.flags)]
    return [substitute(line, spec, values) for line in lines]


def render(
    spec: LaunchSpec,
    values: Placeholders | None = None,
    docker: bool = False,
    recipes: Recipes | None = None,
) -> str:
    """The command as a user pastes it: one line per env var, option or flag, continued by \\."""
    values = values or Placeholders.resolve(recipes=recipes)
    lines = docker_lines(spec, values, recipes) if docker else bare_lines(spec, values, recipes)
    return (_CONTINUATION + "\n").join(lines)


def render_curl(
    spec: LaunchSpec, values: Placeholders | None = None, recipes: Recipes | None = None
) -> str:
    recipes = recipes or load_recipes()
    values = values or Placeholders.resolve(recipes=recipes)
    return substitute(recipes.page_of(spec.variant).curl_check, spec, values)


def server_argv(
    spec: LaunchSpec, values: Placeholders | None = None, recipes: Recipes | None = None
) -> tuple[dict[str, str], list[str]]:
    """(env, argv) to launch the spec without a shell: argv starts with the program words."""
    recipes = recipes or load_recipes()
    values = values or Placeholders.resolve(recipes=recipes)
    env = dict(substitute(e, spec, values).split("=", 1) for e in spec.env)
    argv = shlex.split(recipes.deploy.program)
    for flag in spec.flags:
        argv += shlex.split(substitute(flag, spec, values))
    return env, argv


# ----- Playground -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffLine:
    tag: str  # " " unchanged, "+" added by the override, "-" removed by it
    text: str


class DiffLines:
    """The lines an override added and removed, read from a `diff` of DiffLine (the Playground's
    result and the Deploy panel's state both show them)."""

    diff: tuple[DiffLine, ...]

    @property
    def added(self) -> list[str]:
        return [d.text for d in self.diff if d.tag == "+"]

    @property
    def removed(self) -> list[str]:
        return [d.text for d in self.diff if d.tag == "-"]


@dataclass(frozen=True)
class PlaygroundResult(DiffLines):
    base: LaunchSpec
    spec: LaunchSpec
    command: str
    base_command: str
    diff: tuple[DiffLine, ...]
    submit_url: str | None  # offered only while Not Verified

    @property
    def verified(self) -> bool:
        return self.spec.verified


def line_diff(base: str, new: str) -> tuple[DiffLine, ...]:
    """Line diff of two rendered commands, ignoring the trailing continuation backslashes."""
    a = [line.removesuffix(_CONTINUATION) for line in base.splitlines()]
    b = [line.removesuffix(_CONTINUATION) for line in new.splitlines()]
    out: list[DiffLine] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out += [DiffLine(" ", t) for t in a[i1:i2]]
            continue
        out += [DiffLine("-", t) for t in a[i1:i2]]
        out += [DiffLine("+", t) for t in b[j1:j2]]
    return tuple(out)


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _installed_sglang() -> str:
    version = package_version("sglang")
    # Without SGLang here the form's required field is left to the submitter.
    return f"sglang=={version}" if version else ""


def submit_issue_url(
    spec: LaunchSpec,
    command: str,
    recipes: Recipes | None = None,
    existing_command: str | None = None,
) -> str:
    """A pre-filled upstream issue proposing the combination as a new verified cell: the fields
    of upstream's form (3-playground-verified-cell.yml), the verified cell it departs from as
    `existing-cell`, and the SGLang installed here, if any, as `sglang-version`."""
    recipes = recipes or load_recipes()
    submit = recipes.playground.submit
    deploy = recipes.deploy
    combo = f"{spec.hw} / {spec.variant} / {deploy.quant} / {deploy.strategy} / {deploy.nodes}"
    params = {
        "template": submit.issue_template,
        "title": f"[Playground] Verified cell: {combo}",
        "model": recipes.page_of(spec.variant).cookbook_model,
        "combination": combo,
        "cell-snippet": f"```bash\n{command}\n```",
        "existing-cell": f"```bash\n{existing_command}\n```" if existing_command else "",
        "sglang-version": _installed_sglang(),
        "notes": "Generated by the LFM2.5 SGLang notebook cookbook's Playground.",
    }
    return f"https://github.com/{submit.repo}/issues/new?{urlencode(params)}"


def playground(
    hw: str,
    variant: str,
    tp: int | None = None,
    docker: bool = False,
    values: Placeholders | None = None,
    recipes: Recipes | None = None,
    parsers: tuple[str, ...] = (),
) -> PlaygroundResult:
    """Apply the Playground's overrides (TP, parser toggles) on top of the Deploy selection."""
    recipes = recipes or load_recipes()
    values = values or Placeholders.resolve(recipes=recipes)
    base = launch_spec(hw, variant, recipes=recipes)
    spec = with_tp(base, tp, recipes) if tp is not None else base
    for toggle in parsers:
        spec = with_parser(spec, toggle, recipes)
    base_command = render(base, values, docker, recipes)
    command = render(spec, values, docker, recipes)
    existing = base_command if base.verified else None  # a derived base is no verified cell
    url = None if spec.verified else submit_issue_url(spec, command, recipes, existing)
    return PlaygroundResult(
        base, spec, command, base_command, line_diff(base_command, command), url
    )


# ----- the Lambda guide's recipe ----------------------------------------------------------------

LAMBDA_ENGINES = ("sglang", "vllm")


def render_lambda(engine: str = "sglang", recipes: Recipes | None = None) -> str:
    """The Lambda guide's `docker run` command for one engine, laid out as the guide writes it."""
    recipes = recipes or load_recipes()
    if engine not in LAMBDA_ENGINES:
        raise CookbookChoiceError("engine", engine, list(LAMBDA_ENGINES))
    recipe = recipes.lambda_8b_a1b
    launch = getattr(recipe, engine)
    first, *options = recipe.docker_run
    lines = [first, *options, launch.image, *launch.lines]
    return (_CONTINUATION + "\n    ").join(lines)


def lambda_argv(engine: str = "sglang", recipes: Recipes | None = None) -> list[str]:
    """The engine's arguments in the Lambda recipe (after the program / image entrypoint)."""
    recipes = recipes or load_recipes()
    lines = list(getattr(recipes.lambda_8b_a1b, engine).lines)
    if engine == "sglang":
        lines = lines[1:]  # python3 -m sglang.launch_server
    return [token for line in lines for token in shlex.split(line)]
