"""The Deploy panel and Playground as Jupyter widgets, wired to the real server launcher.

Two layers:

* plain functions and dataclasses (no widgets): a :class:`Selection` (hardware, variant, TP
  override, Docker or not, HOST_IP, PORT) goes to :func:`panel_state`, which returns the command,
  the badge, the Playground diff, the submit URL and the cURL check; :func:`command_html` and
  friends turn a state into the HTML the panel shows. These are what the unit tests exercise.
* :class:`DeployPanel`: ipywidgets controls that build a Selection on every change and render its
  state, plus Launch / Stop / Check buttons that run a server through :mod:`cookbook.server`.

The Hugging Face token typed into the panel goes into the launched engine's environment and
nowhere else: commands name the variable (``--env HF_TOKEN``), never its value; the masked field
empties itself as soon as the kernel has the token, so a saved widget state cannot hold it; and
any text the panel shows from a log is redacted.
"""

from __future__ import annotations

import contextlib
import html
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cookbook import commands, gpu
from cookbook.commands import DiffLine, DiffLines, PlaceholderError, Placeholders
from cookbook.recipes import CookbookChoiceError, Recipes, load_recipes

NO_TP = 0  # the TP picker's value for "no override" (selection widgets cannot hold None)
VERIFIED, NOT_VERIFIED = "Verified", "Not Verified"
LAUNCH_HOST = "127.0.0.1"  # the panel's Launch binds loopback, whatever HOST_IP says
_TICK_S = 0.5
_KEEP: Any = object()  # select(): leave this control as it is

# Colours of the upstream panel's badge and diff (GitHub's palette).
_GREEN, _GREEN_BG = "#1a7f37", "#dafbe1"
_RED, _RED_BG = "#cf222e", "#ffebe9"
_AMBER = "#9a6700"
_MONO = "font-family: var(--jp-code-font-family, monospace); font-size: 12px;"


# ----- the pure part: selection -> state --------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What the panel's controls say. ``host_ip`` / ``port`` are the placeholders' text."""

    hw: str
    variant: str
    tp: int | None = None
    docker: bool = False
    parsers: tuple[str, ...] = ()  # the Playground's parser toggles turned on (pages.*)
    host_ip: str | None = None  # None: the recipes' default (0.0.0.0)
    port: str | int | None = None  # None: the recipes' default (30000)

    def placeholders(self, recipes: Recipes | None = None) -> Placeholders:
        # HF_TOKEN is not a field here: the command always names the variable, never its value.
        return Placeholders.resolve({"HOST_IP": self.host_ip, "PORT": self.port}, recipes=recipes)


@dataclass(frozen=True)
class PanelState(DiffLines):
    """Everything the panel shows for one selection."""

    selection: Selection
    command: str  # exactly what Copy puts on the clipboard
    base_command: str  # the Deploy cell before the Playground's override
    diff: tuple[DiffLine, ...]  # base -> command, line by line
    verified: bool
    reason: str  # one line: why the badge says what it says
    submit_url: str | None  # the pre-filled upstream issue, only while Not Verified
    curl: str
    model: str  # Hugging Face id
    derived_from: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def badge(self) -> str:
        return VERIFIED if self.verified else NOT_VERIFIED


def panel_state(selection: Selection, recipes: Recipes | None = None) -> PanelState:
    """The command, badge, diff, submit URL and cURL check for a selection.

    Raises CookbookChoiceError (unknown hardware, variant or TP value) or PlaceholderError (a bad
    HOST_IP or PORT), each naming what was wrong and what is valid.
    """
    recipes = recipes or load_recipes()
    values = selection.placeholders(recipes)
    result = commands.playground(
        selection.hw,
        selection.variant,
        tp=selection.tp,
        docker=selection.docker,
        values=values,
        recipes=recipes,
        parsers=selection.parsers,
    )
    base, spec = result.base, result.spec
    overrides = " and ".join(
        what for what, on in (("TP override", selection.tp), ("parser toggle", selection.parsers))
        if on
    )  # fmt: skip
    if spec.verified:
        reason = f"the verified {spec.cell_id} cell, exactly as upstream"
    elif base.verified:
        reason = f"the Playground's {overrides} changes the verified {base.cell_id} cell"
    else:
        reason = f"derived from the verified {base.derived_from} cell, not yet run end-to-end"
        if not result.added and not result.removed and selection.tp is not None:
            reason += " (the TP override changes nothing)"
        elif result.added or result.removed:
            reason += f", with the Playground's {overrides}"
    return PanelState(
        selection=selection,
        command=result.command,
        base_command=result.base_command,
        diff=result.diff,
        verified=spec.verified,
        reason=reason,
        submit_url=result.submit_url,
        curl=commands.render_curl(spec, values),
        model=spec.model,
        derived_from=spec.derived_from,
        notes=spec.notes,
    )


def hardware_options(recipes: Recipes | None = None) -> list[tuple[str, str]]:
    """(label, id) for the hardware picker: the verified GPUs first, then the derived ones."""
    recipes = recipes or load_recipes()
    verified = [
        (f"{hw.name} · verified", hw_id) for hw_id, hw in recipes.hardware.items() if hw.verified
    ]
    derived = [
        (f"{hw.name} · derived from {hw.derive_from} (Not Verified)", hw_id)
        for hw_id, hw in recipes.hardware.items()
        if hw.status == "derived"
    ]
    return verified + derived  # unsupported GPUs have no command to show


def variant_options(recipes: Recipes | None = None) -> list[tuple[str, str]]:
    """(label, id) for the variant picker: the Deploy panel's serving variants, then the others."""
    recipes = recipes or load_recipes()
    serving = [(f"{recipes.models[v].display_name} ({v})", v) for v in recipes.variants]
    others = [
        (f"{m.display_name} ({model_id}, from {m.based_on})", model_id)
        for model_id, m in recipes.models.items()
        if not m.serving
    ]
    return serving + others


def tp_options(recipes: Recipes | None = None) -> list[tuple[str, int]]:
    """Every page's TP values in order (a model's page may offer fewer: the panel disables them)."""
    recipes = recipes or load_recipes()
    values = dict.fromkeys(v for page in recipes.pages.values() for v in page.tp_values)
    return [("none" if v is None else str(v), NO_TP if v is None else v) for v in values]


def parser_toggle_options(recipes: Recipes | None = None) -> dict[str, str]:
    """Every page's parser toggles: id -> the label the panel shows (label and flag)."""
    recipes = recipes or load_recipes()
    return {
        toggle_id: f"{toggle.label} ({toggle.flag})"
        for page in recipes.pages.values()
        for toggle_id, toggle in page.parser_toggles.items()
    }


def initial_hardware(
    given: str | None, detection: gpu.Detection, recipes: Recipes | None = None
) -> tuple[str, str]:
    """(hardware id to preselect, one line saying why)."""
    recipes = recipes or load_recipes()
    if given:
        recipes.hw(given)  # a clear error for an unknown id
        return given, f"{given}: chosen by the HW parameter ({detection.summary})"
    default = recipes.verified_hardware[0]
    if detection.hw and not recipes.hw(detection.hw).supported:
        return default, (
            f"detected: {detection.summary}, which SGLang cannot run "
            f"({recipes.hw(detection.hw).unsupported}); showing the {default} cell"
        )
    if detection.hw:
        return detection.hw, f"detected: {detection.summary}"
    if detection.gpus:
        return default, f"detected: {detection.summary}; showing the {default} cell"
    return default, f"{detection.summary} here: showing the {default} cell for reference"


# ----- the pure part: state -> HTML -------------------------------------------------------------


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def command_html(state: PanelState) -> str:
    """The command as a diff against the Deploy cell: added lines green, removed struck in red.

    Lines keep their continuation backslashes as in the copied command; removed lines are shown
    without one (they are not part of it).
    """
    kept = [d for d in state.diff if d.tag != "-"]
    last = len(kept) - 1
    rows, n = [], 0
    for line in state.diff:
        if line.tag == "-":
            # Strike the text, not the indentation (struck spaces read as dashes).
            indent = line.text[: len(line.text) - len(line.text.lstrip())]
            struck = f'<s style="text-decoration:line-through;">{_esc(line.text.lstrip())}</s>'
            rows.append(
                f'<div class="cb-line cb-del" style="color:{_RED}; background:{_RED_BG};">'
                f"- {_esc(indent)}{struck}</div>"
            )
            continue
        text = line.text + (commands._CONTINUATION if n < last else "")
        n += 1
        if line.tag == "+":
            style = f"color:{_GREEN}; background:{_GREEN_BG};"
            rows.append(f'<div class="cb-line cb-add" style="{style}">+ {_esc(text)}</div>')
        else:
            prefix = "  " if state.added or state.removed else ""
            rows.append(f'<div class="cb-line">{_esc(prefix + text)}</div>')
    pre = (
        "margin:0; padding:8px; background:var(--jp-layout-color2, #f6f8fa); white-space:pre; "
        "line-height:1.5;"
    )
    return f'<div class="cb-command" style="{_MONO}{pre} overflow-x:auto;">{"".join(rows)}</div>'


def badge_html(state: PanelState) -> str:
    colour, mark = (_GREEN, "✔") if state.verified else (_AMBER, "⚠")
    cls = "cb-verified" if state.verified else "cb-not-verified"
    badge = (
        f'<span class="cb-badge {cls}" style="background:{colour}; color:white; '
        f'padding:2px 10px; border-radius:10px; font-weight:600;">{mark} {state.badge}</span>'
    )
    return f'{badge} <span class="cb-reason">{_esc(state.reason)}</span>'


def submit_html(state: PanelState) -> str:
    """The link to the pre-filled upstream issue; empty while the command is Verified."""
    if state.verified or not state.submit_url:
        return ""
    return (
        f'<a class="cb-submit" href="{_esc(state.submit_url)}" target="_blank" '
        f'rel="noopener noreferrer" style="color:{_AMBER}; text-decoration:underline;">'
        "Submit this combination upstream ↗</a> "
        "<small>(after you have run it: a pre-filled issue proposing it as a verified cell)</small>"
    )


# Runs in the browser: copy the hidden textarea's text, with the clipboard API where the page is a
# secure context (https, localhost) and the older selection + execCommand route elsewhere.
_COPY_JS = (
    "(function(b){var a=b.parentNode.querySelector('textarea');"
    "function done(ok){b.textContent=ok?'Copied':'Select and press Ctrl+C';"
    "setTimeout(function(){b.textContent='Copy'},2000);}"
    "function fallback(){a.style.display='block';a.select();var ok=false;"
    "try{ok=document.execCommand('copy');}catch(e){}if(ok){a.style.display='none';}done(ok);}"
    "if(navigator.clipboard&&window.isSecureContext){"
    "navigator.clipboard.writeText(a.value).then(function(){done(true);},fallback);}"
    "else{fallback();}})(this)"
)


def copy_button_html(text: str) -> str:
    """A Copy button that works in the browser alone (no clipboard on the kernel's side)."""
    textarea = (
        '<textarea class="cb-copy-text" readonly rows="4" '
        f'style="display:none; width:100%; {_MONO}">{_esc(text)}</textarea>'
    )
    button = (
        f'<button class="cb-copy jupyter-button" title="Copy the command" '
        f'onclick="{_esc(_COPY_JS)}">Copy</button>'
    )
    return f"<div>{button}{textarea}</div>"


def pre_html(text: str, cls: str, colour: str | None = None) -> str:
    style = f"{_MONO} margin:0; white-space:pre-wrap; line-height:1.4;"
    style += f" color:{colour};" if colour else ""
    return f'<pre class="{cls}" style="{style}">{_esc(text)}</pre>'


def redact(text: str, secrets: list[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<HF_TOKEN>")
    return text


# ----- the widgets ------------------------------------------------------------------------------


class DeployPanel:
    """The Deploy panel and Playground as widgets. Display it by ending a cell with it.

    Programmatic use (what the notebook runs under papermill) goes through the same controls::

        panel = DeployPanel(variant="instruct", engine="auto")
        panel.select(hw="b200", tp=2)   # sets the pickers, as a click would
        panel.state.badge               # "Not Verified"
        server = panel.launch()         # blocks until ready; raises with the log tail
        panel.stop()
    """

    def __init__(
        self,
        hw: str | None = None,
        variant: str = "instruct",
        *,
        engine: str = "auto",
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        startup_timeout_s: float | None = None,
        detection: gpu.Detection | None = None,
        recipes: Recipes | None = None,
        **others,
    ):
        from cookbook.server import SERVER_OPTIONS, check_options

        check_options(others, SERVER_OPTIONS, "DeployPanel")  # a notebook's SERVER, misspelt

        self.recipes = recipes or load_recipes()
        self.recipes.model(variant)  # a clear error for an unknown variant, before any widget
        self.detection = detection if detection is not None else gpu.detect(self.recipes)
        first_hw, why = initial_hardware(hw, self.detection, self.recipes)
        self.engine, self.model, self.startup_timeout_s = engine, model, startup_timeout_s
        self.base_url, self.api_key = base_url, api_key
        self.server = None
        self.state: PanelState | None = None
        self.error: str | None = None
        self._token: str | None = None
        self._starting = threading.Event()
        self._thread: threading.Thread | None = None
        self._make_controls(first_hw, variant)
        self._make_outputs(why)
        self._wire()
        self.widget = self._layout()
        self._refresh()

    def _make_controls(self, first_hw: str, variant: str) -> None:
        """The inputs: pickers, placeholders, the token, the Playground's override and toggles."""
        import ipywidgets as w

        ph = self.recipes.placeholders
        wide = w.Layout(width="auto", min_width="320px")
        self.hw = w.Dropdown(
            options=hardware_options(self.recipes),
            value=first_hw,
            description="Hardware",
            layout=wide,
        )
        self.variant = w.Dropdown(
            options=variant_options(self.recipes), value=variant, description="Variant", layout=wide
        )
        self.docker = w.ToggleButtons(
            options=[("Python", False), ("Docker", True)], value=False, description="Command"
        )
        self.host_ip = w.Text(
            value=ph["HOST_IP"].default,
            description="HOST_IP",
            continuous_update=False,
            tooltip=ph["HOST_IP"].help,
        )
        self.port = w.Text(
            value=ph["PORT"].default,
            description="PORT",
            continuous_update=False,
            tooltip=ph["PORT"].help,
        )
        self.hf_token = w.Password(
            value="",
            description="HF_TOKEN",
            continuous_update=False,
            placeholder="token for Launch (optional)",
        )
        self.tp = w.ToggleButtons(
            options=tp_options(self.recipes), value=NO_TP, description="TP override"
        )
        self.parsers = {
            toggle_id: w.Checkbox(value=False, description=label, indent=False)
            for toggle_id, label in parser_toggle_options(self.recipes).items()
        }

    def _make_outputs(self, why: str) -> None:
        """What the panel shows: badge, command, links, cURL check, buttons, progress and log."""
        import ipywidgets as w

        self.detected = w.HTML(f"<small>{_esc(why)}</small>")
        self.badge = w.HTML()
        self.command = w.HTML()
        self.copy = w.HTML()
        self.submit = w.HTML()
        self.notes = w.HTML()
        self.curl = w.HTML()
        self.launch_button = w.Button(description="Launch", button_style="success", icon="play")
        self.stop_button = w.Button(
            description="Stop", button_style="danger", icon="stop", disabled=True
        )
        self.check_button = w.Button(
            description="Send the check", icon="paper-plane", disabled=True
        )
        self.progress = w.FloatProgress(
            value=0, min=0, max=1, description="Server", layout=w.Layout(display="none")
        )
        self.status = w.HTML(f"<small>{_esc(self._launch_note())}</small>")
        self.log = w.HTML()

    def _wire(self) -> None:
        """CSS classes (the browser test finds widgets by them) and the handlers."""
        for name, widget in (
            ("hw", self.hw),
            ("variant", self.variant),
            ("docker", self.docker),
            ("host_ip", self.host_ip),
            ("port", self.port),
            ("tp", self.tp),
            *((f"parser-{toggle_id}", box) for toggle_id, box in self.parsers.items()),
        ):
            widget.add_class(f"cookbook-{name}")
            widget.observe(self._on_change, "value")
        for name, widget in (
            ("badge", self.badge),
            ("command", self.command),
            ("copy", self.copy),
            ("submit", self.submit),
            ("curl", self.curl),
            ("status", self.status),
            ("log", self.log),
            ("hf-token", self.hf_token),
        ):
            widget.add_class(f"cookbook-{name}")
        self.hf_token.observe(self._on_token, "value")
        self.launch_button.on_click(lambda _: self._launch_in_background())
        self.stop_button.on_click(lambda _: self.stop())
        self.check_button.on_click(lambda _: self._check_and_show())

    def _layout(self):
        """The panel's boxes, top to bottom: Deploy, Playground, Run it here."""
        import ipywidgets as w

        h3 = "<h3 style='margin:4px 0'>"
        panel = w.VBox(
            [
                w.HTML(f"{h3}Deploy · LFM2.5 on SGLang</h3>"),
                self.detected,
                w.HBox([self.hw, self.variant]),
                self.docker,
                w.HBox([self.host_ip, self.port, self.hf_token]),
                w.HTML(f"{h3}Playground</h3>"),
                self.tp,
                *self.parsers.values(),
                self.badge,
                self.command,
                w.HBox([self.copy, self.submit]),
                self.notes,
                w.HTML("<b>cURL check</b>"),
                self.curl,
                w.HTML(f"{h3}Run it here</h3>"),
                w.HBox([self.launch_button, self.stop_button, self.check_button]),
                self.progress,
                self.status,
                self.log,
            ]
        )
        panel.add_class("cookbook-deploy-panel")
        return panel

    # ----- display ---------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ----- the Deploy panel and Playground ---------------------------------------------------
    @property
    def selection(self) -> Selection:
        return Selection(
            hw=self.hw.value,
            variant=self.variant.value,
            tp=self.tp.value or None,
            docker=self.docker.value,
            parsers=tuple(t for t, box in self.parsers.items() if box.value),
            host_ip=self.host_ip.value.strip(),
            port=self.port.value.strip(),
        )

    def select(
        self,
        hw: str | None = None,
        variant: str | None = None,
        *,
        tp: int | None = _KEEP,
        parsers: tuple[str, ...] | None = None,
        docker: bool | None = None,
        host_ip: str | None = None,
        port: str | int | None = None,
    ) -> PanelState:
        """Set controls as a user would (unnamed ones stay); return the new state or raise."""
        if hw is not None:
            self.recipes.hw(hw)
            self.hw.value = hw
        if variant is not None:
            self.recipes.model(variant)
            self.variant.value = variant
        if tp is not _KEEP:
            options = tp_options(self.recipes)
            value = NO_TP if tp is None else tp
            if value not in [v for _, v in options]:
                raise CookbookChoiceError("TP override", tp, [label for label, _ in options])
            self.tp.value = value
        if parsers is not None:
            offered = commands.parser_toggles(self.variant.value, self.recipes)
            unknown = [t for t in parsers if t not in offered]
            if unknown:
                raise CookbookChoiceError(
                    f"parser toggle for {self.variant.value}", unknown[0], list(offered)
                )
            for toggle_id, box in self.parsers.items():
                box.value = toggle_id in parsers
        if docker is not None:
            self.docker.value = bool(docker)
        if host_ip is not None:
            self.host_ip.value = str(host_ip)
        if port is not None:
            self.port.value = str(port)
        if self.error:
            raise PlaceholderError(self.error)
        return self.state

    def _on_change(self, _change=None) -> None:
        self._refresh()

    def _refresh(self) -> None:
        # The seed offers the TP override on the larger checkpoints only (data: tp_variants).
        offered = commands.tp_offered(self.variant.value, self.recipes)
        self.tp.disabled = not offered
        self.tp.tooltip = "" if offered else "TP=2 is offered for the larger checkpoints only"
        if not offered and self.tp.value not in (NO_TP, 1):
            self.tp.value = NO_TP  # observed: this refreshes again with the override gone
            return
        # A parser toggle exists only on its model's page (the VL-3B page's tool-call parser).
        toggles = commands.parser_toggles(self.variant.value, self.recipes)
        for toggle_id, box in self.parsers.items():
            box.disabled = toggle_id not in toggles
            if box.disabled and box.value:
                box.value = False  # observed: this refreshes again with the toggle off
                return
        try:
            state = panel_state(self.selection, self.recipes)
        except (CookbookChoiceError, PlaceholderError) as exc:
            self.state, self.error = None, str(exc)
            self.badge.value = ""
            self.command.value = pre_html(f"✖ {exc}", "cb-error", _RED)
            self.copy.value = self.submit.value = self.notes.value = self.curl.value = ""
            return
        self.state, self.error = state, None
        self.badge.value = badge_html(state)
        self.command.value = command_html(state)
        self.copy.value = copy_button_html(state.command)
        self.submit.value = submit_html(state)
        self.notes.value = "".join(f"<div><small>{_esc(n)}</small></div>" for n in state.notes)
        self.curl.value = pre_html(state.curl, "cb-curl")

    # ----- the token --------------------------------------------------------------------------
    def _on_token(self, change) -> None:
        if not change["new"]:
            return
        # Keep it in the kernel only: empty the field so no widget state can carry it.
        self._token = change["new"].strip() or None
        self.hf_token.value = ""
        self.hf_token.placeholder = "set for Launch (hidden); type to replace"

    def set_hf_token(self, token: str | None) -> None:
        """What typing into the masked field does: the token goes to Launch's engine only."""
        self._token = token or None
        self.hf_token.placeholder = (
            "set for Launch (hidden); type to replace" if token else "token for Launch (optional)"
        )

    @property
    def hf_token_set(self) -> bool:
        return self._token is not None

    # ----- Launch / Stop / Check -----------------------------------------------------------
    def _launch_note(self) -> str:
        if self.base_url:
            return f"Launch connects to {self.base_url} (base_url) instead of starting a server."
        from cookbook.launch_plans import resolve_engine

        try:
            engine = resolve_engine(self.engine)
        except CookbookChoiceError as exc:
            return str(exc)
        if engine.endswith("-cpu"):
            return (
                f"Launch starts {engine} (engine={self.engine!r} on this machine) on "
                f"{LAUNCH_HOST}:PORT, serving "
                + (self.model or "the variant's tiny fixture model, not LFM2.5")
                + ". The command above is what you would run on the GPU."
            )
        return (
            f"Launch starts {engine} for the selected variant on {LAUNCH_HOST}:PORT "
            "(HOST_IP only changes the command text)."
        )

    def launch(self):
        """Start (or connect to) the server for the current selection; block until it is ready.

        Returns the :class:`cookbook.server.Server`; raises ServerError with the log's tail.
        """
        if self.server is not None and self.server.alive:
            return self.server
        if self.error:
            raise PlaceholderError(self.error)
        self._set_running(starting=True)
        self.log.value = ""
        done = threading.Event()
        ticker = None
        server = None
        try:
            from cookbook.server import launch

            def watch(starting) -> None:  # the panel shows start-up seconds and the log's tail
                nonlocal ticker
                ticker = threading.Thread(target=self._tick, args=(starting, done), daemon=True)
                ticker.start()

            selection = self.selection
            port = int(Placeholders.resolve({"PORT": selection.port}, self.recipes).PORT)
            server = launch(
                selection.variant,
                self.engine,
                model=self.model,
                hw=selection.hw,
                base_url=self.base_url,
                api_key=self.api_key,
                startup_timeout_s=self.startup_timeout_s,
                host=LAUNCH_HOST,
                port=port,
                tp=selection.tp,  # SGLang launches the Playground's command; others say so
                progress=False,
                secret_env={"HF_TOKEN": self._token} if self._token else {},
                on_start=watch,
                echo=lambda line: None,  # the panel's own status line says what happens
            )
        except BaseException as exc:
            self._stop_ticker(done, ticker)
            self.server = None
            self._set_running(starting=False)
            self._show_failure(exc)
            raise
        self._stop_ticker(done, ticker)
        self.server = server
        self._set_running(starting=False)
        self._show_ready()
        return server

    @staticmethod
    def _stop_ticker(done: threading.Event, ticker: threading.Thread | None) -> None:
        done.set()
        if ticker is not None:
            ticker.join(5 * _TICK_S)

    def _launch_in_background(self) -> None:
        if self._starting.is_set():
            return
        self._set_running(starting=True)  # before the thread runs: a second click does nothing

        def run():
            with contextlib.suppress(Exception):  # shown in the panel by launch()
                self.launch()

        self._thread = threading.Thread(target=run, daemon=True, name="cookbook-panel-launch")
        self._thread.start()

    def wait(self, timeout_s: float = 600) -> None:
        """Wait for a Launch started by the button (tests, scripts)."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def stop(self) -> None:
        """Stop the server the panel started (a connected one is left running)."""
        server, self.server = self.server, None
        self.log.value = ""  # a check's answer belonged to that server
        if server is not None:
            server.stop()
            code = f" (exit code {server.returncode})" if server.returncode is not None else ""
            self.status.value = f"<small>Stopped {_esc(repr(server))}{_esc(code)}.</small>"
        self._set_running(starting=False)

    def check(self) -> tuple[str, str]:
        """Send the cURL check's request to the running server: (curl text, answer)."""
        from cookbook.client import curl_check
        from cookbook.server import ServerError

        if self.server is None:
            raise ServerError("no server is running: launch one first")
        return curl_check(self.server)

    def _check_and_show(self) -> None:
        try:
            curl, answer = self.check()
        except Exception as exc:  # shown, not raised: this runs from a button
            self.log.value = pre_html(self._redact(f"check failed: {exc}"), "cb-log", _RED)
            return
        self.log.value = pre_html(f"{curl}\n-> {answer}", "cb-check")

    # ----- what the panel shows while it runs ------------------------------------------------
    def _redact(self, text: str) -> str:
        return redact(text, [self._token])

    def _tick(self, server, done: threading.Event) -> None:
        started = time.monotonic()
        self.progress.layout.display = None
        while not done.wait(_TICK_S):
            timeout = server.plan.startup_timeout_s if server.plan else self.startup_timeout_s
            elapsed = time.monotonic() - started
            self.progress.max = float(timeout or 1)
            self.progress.value = min(elapsed, self.progress.max)
            what = f"{server.plan.engine} ({server.plan.model})" if server.plan else "the server"
            limit = f"{timeout:.0f} s" if timeout else "?"
            self.status.value = (
                f"<small>Starting {_esc(what)}: {elapsed:.0f} s (timeout {limit})…</small>"
            )

    def _set_running(self, starting: bool) -> None:
        if starting:
            self._starting.set()
        else:
            self._starting.clear()
        running = self.server is not None
        self.launch_button.disabled = starting or running
        self.stop_button.disabled = starting or not running
        self.check_button.disabled = starting or not running
        if not starting:
            self.progress.layout.display = "none"

    def _show_ready(self) -> None:
        server = self.server
        lines = [
            f"Ready: {server.model} at {server.base_url}/v1 ({server.engine} engine"
            + (f", pid {server.pid})" if server.pid else ")")
        ]
        if server.plan is not None:
            lines.append(f"Command: {server.plan.display}")
            lines += [f"note: {n}" for n in server.plan.notes]
        if self._token:
            lines.append("HF_TOKEN: in the engine's environment (not shown).")
        self.status.value = pre_html(self._redact("\n".join(lines)), "cb-ready", _GREEN)

    def _show_failure(self, exc: BaseException) -> None:
        self.status.value = pre_html(
            self._redact(f"Launch failed: {type(exc).__name__}"), "cb-failed", _RED
        )
        self.log.value = pre_html(self._redact(str(exc)), "cb-log")
