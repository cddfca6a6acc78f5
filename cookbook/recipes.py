"""Recipes as data: the schema of ``data/recipes.yaml`` and its loader.

Every flag, model id and preset lives in the YAML file; this module only says what shape it must
have. A malformed file fails with :class:`RecipeError` naming the offending key path.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cookbook.errors import BadInputError
from cookbook.paths import DATA_DIR

RECIPES_PATH = DATA_DIR / "recipes.yaml"
RECIPES_ENV = "COOKBOOK_RECIPES"  # another recipes file, e.g. a fork's edited copy

_FLAG_LINE = re.compile(r"^--?[a-z0-9][a-z0-9-]*([ =].*)?$")
_ENV_ASSIGN = re.compile(r"^[A-Z_][A-Z0-9_]*=[A-Za-z0-9_.,:/@%+=-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Outside quotes a shell would act on these; inside double quotes on $, ` and \.
_SHELL_META = set(";&|<>()$`\\{}*?[]!#\n\r\t")
_TP_FLAGS = ("--tp", "--tp-size", "--tensor-parallel-size")
PLACEHOLDER_NAMES = ("HOST_IP", "PORT", "HF_TOKEN", "CURL_HOST", "CURL_PORT")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def is_port(value: object) -> bool:
    """A TCP port number 1-65535, as an int or a string of ASCII digits."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            return False
        value = int(value)
    return isinstance(value, int) and 1 <= value <= 65535


def is_host(text: str) -> bool:
    """An IP address (IPv6 optionally in brackets) or a DNS host name (RFC 1123 labels): never
    anything a command line could read as a flag, a second word or shell syntax."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ipaddress.ip_address(inner)
    except ValueError:
        address = None
    if inner != text:  # brackets hold an IPv6 address only
        return isinstance(address, ipaddress.IPv6Address)
    if address is not None:
        return True
    labels = text.removesuffix(".").split(".")
    if len(text) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        return False
    return not all(label.isdigit() for label in labels)  # 999.1.1.1 is no address, nor a name


def placeholder_problem(name: str, value: str) -> str | None:
    """Why `value` cannot stand for placeholder `name` in a command (None: it can)."""
    if name in ("PORT", "CURL_PORT") and not is_port(value):
        return f"{name} must be a port number 1-65535, got {value!r}"
    if name in ("HOST_IP", "CURL_HOST"):
        # The server's --host takes an IPv6 address bare; only a URL (the cURL check) brackets it.
        bracketed = value.startswith("[")
        if not is_host(value) or bracketed != (name == "CURL_HOST" and ":" in value):
            return (
                f"{name} must be a host name or IP address, got {value!r} (e.g. 0.0.0.0, "
                "127.0.0.1, my-host.example.com; IPv6 bare in HOST_IP, in brackets in CURL_HOST)"
            )
    if name == "HF_TOKEN" and (value.startswith("hf_") or not _ENV_NAME.match(value)):
        # Never echo the value: it may be a real token.
        return (
            "HF_TOKEN takes the NAME of the environment variable that holds your token "
            "(e.g. HF_TOKEN), not the token itself"
        )
    return None


def shell_problem(line: str) -> str | None:
    """What a shell would do to this line besides splitting words (None: nothing).
    {{NAME}} placeholders are substituted with checked values before any shell sees them."""
    quote = None
    for ch in _PLACEHOLDER.sub("X", line):
        if quote == "'":
            quote = None if ch == "'" else quote
        elif quote == '"':
            if ch in "$`\\":
                return f"{ch!r} inside double quotes is shell syntax"
            quote = None if ch == '"' else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _SHELL_META:
            return f"{ch!r} is a shell metacharacter (quote it, or leave it out)"
    return "a quote is not closed" if quote else None


def _flag_values(tokens: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for i, token in enumerate(tokens):
        if token.startswith("--") and "=" in token:
            pairs.append(tuple(token.split("=", 1)))
        elif token.startswith("-") and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            pairs.append((token, tokens[i + 1]))
    return pairs


def _check_shell_lines(lines: list[str]) -> list[str]:
    """Lines of a command users paste: no shell syntax, and TP sizes and ports that exist."""
    for line in lines:
        problem = shell_problem(line)
        if problem:
            raise ValueError(f"{line!r}: {problem}")
        for flag, value in _flag_values(shlex.split(line)):
            if _PLACEHOLDER.fullmatch(value):
                continue
            if flag in _TP_FLAGS and not (value.isascii() and value.isdigit() and int(value) >= 1):
                raise ValueError(f"{line!r}: {flag} takes a GPU count of 1 or more")
            if flag == "--port" and not is_port(value):
                raise ValueError(f"{line!r}: --port takes a port number 1-65535")
    return lines


class RecipeError(BadInputError, ValueError):
    names_command = False
    """The recipes file is missing, unreadable or does not match the schema."""


class CookbookChoiceError(BadInputError, ValueError):
    names_command = False
    """A name given by the user is not one of the valid choices."""

    def __init__(self, what: str, given: object, valid: list[str]):
        self.what, self.given, self.valid = what, given, valid
        shown = (
            repr(given)
            if len(repr(given)) <= 80
            else f"{repr(given)[:60]}... ({len(str(given))} characters)"
        )
        super().__init__(f"unknown {what} {shown}; valid: {', '.join(valid)}")


class _Strict(BaseModel):
    # Unknown keys are typos until proven otherwise.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_flag_lines(lines: list[str]) -> list[str]:
    for line in lines:
        if not _FLAG_LINE.match(line):
            raise ValueError(f"{line!r} is not a flag line (expected '--flag' or '--flag value')")
    return _check_shell_lines(lines)


def _check_env(lines: list[str]) -> list[str]:
    for line in lines:
        if not _ENV_ASSIGN.match(line):
            raise ValueError(f"{line!r} is not an environment assignment NAME=value")
    return lines


class Source(_Strict):
    title: str
    publisher: str


class Capabilities(_Strict):
    reasoning_parser: str | None = None
    tools: bool
    vision: bool = False
    base: bool = False


class Model(_Strict):
    hf_id: str = Field(pattern=r"^LiquidAI/LFM2\.5-[A-Za-z0-9.-]+$")
    serving: bool = False
    params: str
    params_b: float = Field(gt=0)
    context: Literal["32K", "128K"]
    role: str
    architecture: Literal["Lfm2ForCausalLM", "Lfm2MoeForCausalLM", "Lfm2VlForConditionalGeneration"]
    capabilities: Capabilities
    choose_when: str | None = None
    based_on: str | None = None
    sampling: str | None = None
    page: str = "lfm2.5"  # the SGLang cookbook page whose Deploy panel has it (pages)
    note: str | None = None

    @property
    def display_name(self) -> str:
        return self.hf_id.split("/", 1)[1]


class SamplingPreset(_Strict):
    temperature: float = Field(ge=0, le=2)
    extra_body: dict[Literal["top_k", "min_p", "repetition_penalty"], float | int]


def cc_tuple(cc: str) -> tuple[int, int]:
    major, minor = cc.split(".")
    return int(major), int(minor)


_CC = Field(pattern=r"^\d+\.\d+$")


class Hardware(_Strict):
    name: str
    family: str
    compute_capability: str = _CC
    bf16: bool
    memory_gib: list[float] = Field(min_length=1)
    nvidia_smi: list[str] = Field(min_length=1)
    derive_from: str | None = None
    unsupported: str | None = None  # why no recipe can start on it (then no derive_from)
    evidence: list[str] = Field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.derive_from is None and self.unsupported is None

    @property
    def supported(self) -> bool:
        return self.unsupported is None

    @property
    def status(self) -> str:
        return "verified" if self.verified else "unsupported" if self.unsupported else "derived"


class CcRange(_Strict):
    min_cc: str = _CC
    max_cc: str = _CC

    def covers(self, cc: str) -> bool:
        return cc_tuple(self.min_cc) <= cc_tuple(cc) <= cc_tuple(self.max_cc)


class DefaultBackend(CcRange):
    backend: str


class GpuRules(_Strict):
    attention_backends: dict[str, CcRange]
    default_attention_backend: list[DefaultBackend] = Field(min_length=1)
    max_weights_fraction: float = Field(gt=0, le=1)
    warn_weights_fraction: float = Field(gt=0, le=1)
    bytes_per_param: float = Field(gt=0)

    def default_backend(self, cc: str) -> str | None:
        return next((d.backend for d in self.default_attention_backend if d.covers(cc)), None)


class Deploy(_Strict):
    program: str
    quant: str
    strategy: str
    nodes: str
    common_flags: list[str]
    tail_flags: list[str]
    vision_env: list[str]
    vision_env_note: str
    cells: dict[str, dict[str, list[str]]]

    _flags = field_validator("common_flags", "tail_flags")(_check_flag_lines)
    _env = field_validator("vision_env")(_check_env)

    @field_validator("cells")
    @classmethod
    def _cell_flags(cls, cells: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
        for hw, row in cells.items():
            for variant, flags in row.items():
                try:
                    _check_flag_lines(flags)
                except ValueError as exc:
                    raise ValueError(f"cells.{hw}.{variant}: {exc}") from None
        return cells


class Placeholder(_Strict):
    default: str
    help: str


# A Docker image reference (registry/name:tag or @sha256:digest): nothing a shell would read.
IMAGE = r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"


def _check_pasted_text(text: str) -> str:
    """A multi-line command users paste: each line, its trailing continuation `\\` aside, has no
    shell syntax outside quotes."""
    for line in text.splitlines():
        problem = shell_problem(line.removesuffix("\\").rstrip())
        if problem:
            raise ValueError(f"{line!r}: {problem}")
    return text


class ParserToggle(_Strict):
    label: str
    flag: str

    @field_validator("flag")
    @classmethod
    def _one_flag(cls, flag: str) -> str:
        return _check_flag_lines([flag])[0]


class Page(_Strict):
    """One SGLang cookbook page: its own Deploy panel, Docker image and Playground knobs."""

    source: str
    config: str  # upstream paths in sgl-project/sglang
    benchmarks: str
    docker_image: str = Field(pattern=IMAGE)
    cookbook_model: str  # the Submit form's `model`
    tp_values: list[Annotated[int, Field(ge=1)] | None]
    latency_statistic: str
    curl_check: str
    upstream_variants: dict[str, str] = Field(default_factory=dict)
    parser_toggles: dict[str, ParserToggle] = Field(default_factory=dict)

    _curl = field_validator("curl_check")(_check_pasted_text)


class Docker(_Strict):
    run_options: list[str]
    after_env_options: list[str]

    _lines = field_validator("run_options", "after_env_options")(_check_shell_lines)


class Install(_Strict):
    python: list[str]
    note: str

    _lines = field_validator("python")(_check_shell_lines)


class Submit(_Strict):
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    issue_template: str


class Playground(_Strict):
    tp_variants: list[str]
    submit: Submit


class EngineLaunch(_Strict):
    image: str = Field(pattern=IMAGE)
    lines: list[str] = Field(min_length=1)

    _lines = field_validator("lines")(_check_shell_lines)


class LambdaRecipe(_Strict):
    source: str
    model: str
    served_model_name: str
    port: int = Field(ge=1, le=65535)
    benchmarked_on: list[str]
    tp: int = Field(ge=1)
    docker_run: list[str]
    sglang: EngineLaunch
    vllm: EngineLaunch
    notes: list[str]
    verify: str
    verify_expect: str
    claude_code_env: dict[str, str]

    _lines = field_validator("docker_run")(_check_shell_lines)


class MultiNode(_Strict):
    tp: int = Field(ge=2)
    flags: list[str] = Field(min_length=1)

    _flags = field_validator("flags")(_check_flag_lines)


class ScaleOut(_Strict):
    one_command: str
    dp_flag: str
    router_command: str
    first_worker_port: int = Field(ge=1, le=65535)
    policies: list[str] = Field(min_length=1)
    policy: str
    multi_node: MultiNode
    service_discovery_flags: list[str]
    router_open_paths: list[Annotated[str, Field(pattern=r"^/[A-Za-z0-9_./-]*$")]]
    router_model_name: str
    startup_timeout_s: float = Field(gt=0)
    replicas: int = Field(ge=2)
    health_check_interval_secs: int = Field(ge=1)
    shared_gpu_mem_fraction: float = Field(gt=0, lt=0.5)
    request_counters: dict[str, str]
    sglang_worker_flags: list[str]

    _flags = field_validator("service_discovery_flags", "sglang_worker_flags")(_check_flag_lines)

    @model_validator(mode="after")
    def _known_policy(self) -> ScaleOut:
        if self.policy not in self.policies:
            raise ValueError(f"scale_out.policy {self.policy!r}; valid: {', '.join(self.policies)}")
        return self


class GpuEngine(_Strict):
    startup_timeout_s: float = Field(gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    busy_gpu_fraction: float = Field(default=1.0, gt=0, le=1)
    flags: list[str] = Field(default_factory=list)
    tool_flags: list[str] = Field(default_factory=list)

    _flags = field_validator("flags", "tool_flags")(_check_flag_lines)


class CpuEngine(GpuEngine):
    module: str
    label: str


class KeyGuard(_Strict):
    flags: list[str] = Field(min_length=1)
    open_paths: list[Annotated[str, Field(pattern=r"^/[A-Za-z0-9_./-]*$")]]

    _flags = field_validator("flags")(_check_flag_lines)


class SglangEngine(GpuEngine):
    # What SGLang's own --api-key leaves open (its code; tests/test_key_guard.py checks it).
    key_leaves_open: list[str]
    key_note: str
    # The oldest NVIDIA driver its CUDA build runs on, and why (a CUDA release's requirement).
    min_driver: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    min_driver_why: str


class SglangCpuEngine(_Strict):
    startup_timeout_s: float = Field(gt=0)
    base_hw: str  # the verified cell row the CPU launch departs from
    drop_env: list[str] = Field(default_factory=list)
    drop_flags: list[Annotated[str, Field(pattern=r"^--[a-z0-9-]+$")]] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    standins_dir: str
    label: str

    _flags = field_validator("flags")(_check_flag_lines)


class Environments(_Strict):
    """What set-up makes besides .venv: the disk each takes once installed, and the spare room
    it wants while pip installs."""

    size_gb: dict[Literal["sglang", "cpu-engine"], float]
    margin_gb: float = Field(ge=0)


class Engines(_Strict):
    sglang: SglangEngine
    sglang_cpu: SglangCpuEngine
    vllm: GpuEngine
    vllm_cpu: CpuEngine
    key_guard: KeyGuard
    vllm_reasoning_parsers: dict[str, str]


class Recipes(_Strict):
    schema_version: Literal[1]
    sources: dict[str, Source]
    pages: dict[str, Page]
    models: dict[str, Model]
    sampling: dict[str, SamplingPreset]
    sampling_note: str
    sampling_vl_note: str
    base_note: str
    hardware: dict[str, Hardware]
    gpu_rules: GpuRules
    deploy: Deploy
    placeholders: dict[str, Placeholder]
    docker: Docker
    install: Install
    playground: Playground
    lambda_8b_a1b: LambdaRecipe
    scale_out: ScaleOut
    engines: Engines
    environments: Environments
    fixtures: dict[str, str]

    @model_validator(mode="after")
    def _cross_references(self) -> Recipes:
        """Every name the file uses is defined, in the order a reader meets them: hardware
        and cells, pages and models, placeholders, then fixtures, engines and guides."""
        self._check_hardware_and_cells()
        self._check_pages_and_models()
        self._check_placeholders()
        self._check_fixtures_engines_and_guides()
        return self

    def _check_hardware_and_cells(self) -> None:
        """Each GPU is verified, derived or unsupported; the cells cover the serving variants."""
        variants = self.variants
        for hw_id, hw in self.hardware.items():
            if hw.unsupported is not None and (hw.derive_from or hw_id in self.deploy.cells):
                raise ValueError(f"hardware.{hw_id}: an unsupported GPU has no cells or recipe")
            if hw.unsupported is not None and not hw.evidence:
                raise ValueError(f"hardware.{hw_id}: say why it is unsupported in evidence")
            if hw.verified and hw_id not in self.deploy.cells:
                raise ValueError(
                    f"hardware.{hw_id}: neither a verified cell row, derive_from nor unsupported"
                )
            if hw.derive_from is not None and hw.derive_from not in self.deploy.cells:
                raise ValueError(
                    f"hardware.{hw_id}.derive_from: {hw.derive_from!r} has no verified cells; "
                    f"valid: {', '.join(self.deploy.cells)}"
                )
        for hw_id, row in self.deploy.cells.items():
            if hw_id not in self.hardware:
                raise ValueError(
                    f"deploy.cells.{hw_id}: unknown hardware; valid: {', '.join(self.hardware)}"
                )
            if self.hardware[hw_id].derive_from is not None:
                raise ValueError(
                    f"deploy.cells.{hw_id}: a derived GPU cannot also have verified cells"
                )
            if sorted(row) != sorted(variants):
                missing = sorted(set(variants) - set(row))
                extra = sorted(set(row) - set(variants))
                raise ValueError(
                    f"deploy.cells.{hw_id}: cells must cover exactly the serving variants "
                    f"(missing: {missing or 'none'}, not a serving variant: {extra or 'none'})"
                )

    def _check_pages_and_models(self) -> None:
        """Pages name their source and models; models their page, preset and base."""
        variants = self.variants
        for model_id, model in self.models.items():
            if model.page not in self.pages:
                raise ValueError(
                    f"models.{model_id}.page: unknown page {model.page!r}; "
                    f"valid: {', '.join(self.pages)}"
                )
        for page_id, page in self.pages.items():
            if page.source not in self.sources:
                raise ValueError(f"pages.{page_id}.source: unknown source {page.source!r}")
            for model_id in page.upstream_variants:
                if model_id not in self.models or self.models[model_id].page != page_id:
                    raise ValueError(
                        f"pages.{page_id}.upstream_variants: {model_id!r} is not a model of "
                        "this page"
                    )
        for model_id, model in self.models.items():
            preset = model.sampling or model_id
            if preset not in self.sampling:
                raise ValueError(f"models.{model_id}.sampling: no preset {preset!r} in sampling")
            if model.serving == (model.based_on is not None):
                raise ValueError(
                    f"models.{model_id}: a serving variant has no based_on; "
                    "any other model needs one"
                )
            if model.based_on is not None and model.based_on not in variants:
                raise ValueError(
                    f"models.{model_id}.based_on: {model.based_on!r} is not a serving variant; "
                    f"valid: {', '.join(variants)}"
                )

    def _check_placeholders(self) -> None:
        """UPPER_CASE names, all of the required ones, defaults that are valid values."""
        for name in self.placeholders:
            if not re.fullmatch(r"[A-Z_]+", name):
                raise ValueError(f"placeholders.{name}: placeholder names are UPPER_CASE")
        missing = [n for n in PLACEHOLDER_NAMES if n not in self.placeholders]
        if missing:
            raise ValueError(f"placeholders: missing {', '.join(missing)}")
        defaults = {n: p.default for n, p in self.placeholders.items()}
        for name in PLACEHOLDER_NAMES:  # defaults may follow others: CURL_PORT is {{PORT}}
            value = _PLACEHOLDER.sub(lambda m: defaults.get(m.group(1), m.group(0)), defaults[name])
            problem = placeholder_problem(name, value)
            if problem:
                raise ValueError(f"placeholders.{name}.default: {problem}")

    def _check_fixtures_engines_and_guides(self) -> None:
        """A fixture per model, engine settings and the Lambda guide that name real entries."""
        variants = self.variants
        if sorted(self.fixtures) != sorted(self.models):
            missing = sorted(set(self.models) - set(self.fixtures))
            extra = sorted(set(self.fixtures) - set(self.models))
            raise ValueError(f"fixtures: one per model (missing: {missing}, unknown: {extra})")
        for model_id, model in self.models.items():
            parser = model.capabilities.reasoning_parser
            if parser and parser not in self.engines.vllm_reasoning_parsers:
                raise ValueError(
                    f"engines.vllm_reasoning_parsers: no vLLM equivalent of {parser!r} "
                    f"(used by models.{model_id})"
                )
        if self.engines.sglang_cpu.base_hw not in self.deploy.cells:
            raise ValueError(
                f"engines.sglang_cpu.base_hw: {self.engines.sglang_cpu.base_hw!r} has no verified "
                f"cells; valid: {', '.join(self.deploy.cells)}"
            )
        for variant in self.playground.tp_variants:
            if variant not in variants:
                raise ValueError(
                    f"playground.tp_variants: {variant!r} is not a serving variant; "
                    f"valid: {', '.join(variants)}"
                )
        lam = self.lambda_8b_a1b
        if lam.source not in self.sources:
            raise ValueError(f"lambda_8b_a1b.source: unknown source {lam.source!r}")
        if lam.model not in self.models:
            raise ValueError(f"lambda_8b_a1b.model: unknown model {lam.model!r}")
        for hw_id in lam.benchmarked_on:
            if hw_id not in self.hardware:
                raise ValueError(f"lambda_8b_a1b.benchmarked_on: unknown hardware {hw_id!r}")

    # ----- lookups with clear errors ------------------------------------------------------
    @property
    def variants(self) -> list[str]:
        """The serving variants of the Deploy panel, in file order."""
        return [key for key, model in self.models.items() if model.serving]

    @property
    def verified_hardware(self) -> list[str]:
        return list(self.deploy.cells)

    def model(self, model_id: str) -> Model:
        if model_id not in self.models:
            raise CookbookChoiceError("variant", model_id, list(self.models))
        return self.models[model_id]

    def hw(self, hw_id: str) -> Hardware:
        if hw_id not in self.hardware:
            raise CookbookChoiceError("hardware", hw_id, list(self.hardware))
        return self.hardware[hw_id]

    def page_of(self, model_id: str) -> Page:
        """The SGLang cookbook page of a model (a Base repo: its based_on's)."""
        model = self.model(model_id)
        return self.pages[self.models[model.based_on].page if model.based_on else model.page]

    def sampling_for(self, model_id: str) -> SamplingPreset:
        model = self.model(model_id)
        return self.sampling[model.sampling or model_id]


def _error_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<top level>"


def parse_recipes(raw: Any, origin: str = "recipes") -> Recipes:
    """Validate already-loaded YAML data; raise RecipeError naming the bad key(s)."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{origin}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return Recipes.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = _error_path(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (not in the schema)"
            problems.append(f"{path}: {msg}")
        # One line, every bad key named: what a terminal and a notebook both show whole.
        raise RecipeError(f"{origin} is malformed: " + "; ".join(problems)) from None


def _duplicate_key(node: yaml.Node, path: tuple[str, ...], seen: set[int]) -> str | None:
    """The first key a mapping repeats (YAML would silently keep the last), with its path."""
    if id(node) in seen:  # an alias: checked where its anchor is
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys = set()
        for key_node, value_node in node.value:
            key = (key_node.tag, getattr(key_node, "value", None))
            where = ".".join((*path, str(key[1])))
            if isinstance(key_node, yaml.ScalarNode) and key[1] != "<<":
                if key in keys:
                    return f"{where} (line {key_node.start_mark.line + 1})"
                keys.add(key)
            found = _duplicate_key(value_node, (*path, str(key[1])), seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, (*path, str(i)), seen)
            if found:
                return found
    return None


def _load_yaml(text: str, path: Path) -> Any:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicate = _duplicate_key(node, (), set())
        if duplicate:
            raise RecipeError(f"{path}: duplicate key {duplicate}: each key appears once")
        return loader.construct_document(node)
    finally:
        loader.dispose()


MAX_RECIPES_BYTES = 4 * 2**20  # the real file is ~40 KB: anything near this is not recipes


def load_recipes_file(path: Path | str) -> Recipes:
    path = Path(path)
    try:
        if path.exists() and not path.is_file() and not path.is_dir():
            raise RecipeError(
                f"{path} is not a regular file (a pipe or a device?): give a YAML file"
            )
        with path.open("rb") as fh:
            data = fh.read(MAX_RECIPES_BYTES + 1)
        if len(data) > MAX_RECIPES_BYTES:
            raise RecipeError(
                f"{path} is larger than {MAX_RECIPES_BYTES // 2**20} MB: not a recipes file"
            )
        text = data.decode("utf-8")
        raw = _load_yaml(text, path)
    except FileNotFoundError:
        raise RecipeError(f"recipes file not found: {path}") from None
    except IsADirectoryError:
        raise RecipeError(f"{path} is a directory, not a recipes file") from None
    except OSError as exc:
        raise RecipeError(f"cannot read the recipes file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"{path} is not UTF-8 text (byte {exc.start} is not valid UTF-8): save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path} is not valid YAML: {what}{where}") from None
    return parse_recipes(raw, origin=str(path))


@functools.cache
def load_recipes() -> Recipes:
    """The project's recipes (or $COOKBOOK_RECIPES, a file of the same schema), loaded once per
    process."""
    return load_recipes_file(os.environ.get(RECIPES_ENV) or RECIPES_PATH)


def placeholders_in(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))
