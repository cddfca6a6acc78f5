"""More than one replica: SGLang's router (sglang-router) in front of data-parallel workers.

Two halves, like the rest of the cookbook:
  * commands for a GPU box, generated from a verified cell (never a second copy of its flags):
    the one-command form (`sglang_router.launch_server --dp-size N`), the two-step form (N plain
    cells, then `sglang_router.launch_router --worker-urls ...`), and multi-node tensor
    parallelism, all Not Verified (data/recipes.yaml: scale_out);
  * `launch_replicas`, which the notebook uses: N servers of one model (cookbook.server, one API
    key for all of them) and a router in front, owned like any server: bound to 127.0.0.1, the
    key required, and stopped with its owner, even when the owner is killed.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cookbook import commands, gpu, server_metrics
from cookbook.engine_side.cookbook_router import KEY_ENV as ROUTER_KEY_ENV
from cookbook.errors import CookbookError
from cookbook.launch_plans import resolve_engine
from cookbook.paths import ENGINE_SIDE_DIR
from cookbook.processes import (
    LOG_TAIL_LINES,
    STOP_GRACE_S,
    OwnedProcess,
    free_port,
    log_directory,
    tail,
)
from cookbook.recipes import Recipes, load_recipes
from cookbook.server import Server, ServerStartError, check_options, make_room, new_api_key

_CONTINUATION = " \\\n"


class RouterError(CookbookError, RuntimeError):
    """The router did not start, or a replica set is not what a router can front."""


# ----- commands for a GPU box -----------------------------------------------------------------


@dataclass(frozen=True)
class ScaleOutCommands:
    replicas: int
    policy: str
    one_command: str  # launch_server --dp-size N: workers and router from one command
    workers: tuple[str, ...]  # the two-step form: one verified cell per GPU and port ...
    router: str  # ... then the router in front of them
    source_cell: str  # the verified (or derived) cell every replica runs
    verified: bool = False  # no scale-out command was run upstream

    def render(self) -> str:
        lines = [
            f"# Not Verified: {self.replicas} replicas of the {self.source_cell} cell behind "
            f"sglang-router ({self.policy})",
            "# one command (workers on ports from 31000, router on --host/--port):",
            self.one_command,
            "",
            "# or in two steps: each replica on its own GPU and port, then the router",
            *(f"{w} &" for w in self.workers),
            self.router,
        ]
        return "\n".join(lines)


def _check_policy(policy: str, recipes: Recipes) -> str:
    if policy not in recipes.scale_out.policies:
        raise RouterError(
            f"router policy {policy!r} is not one of sglang-router's: "
            f"{', '.join(recipes.scale_out.policies)}"
        )
    return policy


def _check_replicas(replicas: object) -> int:
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 2:
        raise RouterError(f"replicas {replicas!r}: give a whole number of at least 2")
    return replicas


def scale_out_commands(
    hw: str,
    variant: str,
    replicas: int | None = None,
    policy: str | None = None,
    host: str = "0.0.0.0",
    port: int = 30000,
    recipes: Recipes | None = None,
) -> ScaleOutCommands:
    """N replicas of the cell for (hw, variant) behind the router, in both of its forms."""
    recipes = recipes or load_recipes()
    scale = recipes.scale_out
    replicas = _check_replicas(scale.replicas if replicas is None else replicas)
    policy = _check_policy(policy or scale.policy, recipes)
    spec = commands.launch_spec(hw, variant, recipes=recipes)
    public = commands.Placeholders.resolve({"HOST_IP": host, "PORT": port}, recipes=recipes)
    one = commands.bare_lines(spec, public, recipes)
    one[len(spec.env)] = scale.one_command  # in place of `sglang serve`, the cell's flags kept
    one += [f"  {scale.dp_flag} {replicas}", f"  --router-policy {policy}"]
    tp = int(commands._flag_value(list(spec.flags), "--tp") or 1)
    workers, urls = [], []
    for i in range(replicas):
        worker_port = scale.first_worker_port + i
        local = commands.Placeholders.resolve(
            {"HOST_IP": "127.0.0.1", "PORT": worker_port}, recipes=recipes
        )
        gpus = ",".join(str(i * tp + k) for k in range(tp))
        lines = [f"CUDA_VISIBLE_DEVICES={gpus}", *commands.bare_lines(spec, local, recipes)]
        workers.append(_CONTINUATION.join(lines))
        urls.append(f"http://127.0.0.1:{worker_port}")
    router = [
        scale.router_command,
        f"  --worker-urls {' '.join(urls)}",
        f"  --policy {policy}",
        f"  --host {host} --port {port}",
    ]
    return ScaleOutCommands(
        replicas,
        policy,
        _CONTINUATION.join(one),
        tuple(workers),
        _CONTINUATION.join(router),
        spec.derived_from or spec.cell_id,
    )


def multi_node_command(
    hw: str,
    variant: str,
    node_rank: int,
    head_ip: str = "10.0.0.1",
    recipes: Recipes | None = None,
) -> str:
    """The cell split over two nodes with tensor parallelism: run it on each, node_rank 0 first."""
    recipes = recipes or load_recipes()
    multi = recipes.scale_out.multi_node
    if node_rank not in range(2):
        raise RouterError(f"node_rank {node_rank!r}: 0 (the head node) or 1")
    spec = commands.with_tp(commands.launch_spec(hw, variant, recipes=recipes), multi.tp, recipes)
    lines = commands.bare_lines(spec, commands.Placeholders.resolve(recipes=recipes), recipes)
    node = {"NODE_RANK": str(node_rank), "HEAD_IP": head_ip}
    extra = [commands._PLACEHOLDER.sub(lambda m: node[m.group(1)], f) for f in multi.flags]
    return _CONTINUATION.join([*lines, *(f"  {f}" for f in extra)])


# ----- replicas and a router, launched here ---------------------------------------------------


class Router:
    """sglang-router's `launch_router` in front of `workers`, owned like a Server."""

    def __init__(
        self,
        workers: list[Server],
        policy: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout_s: float | None = None,
        log_dir: str | Path | None = None,
    ):
        recipes = load_recipes()
        self.policy = _check_policy(policy or recipes.scale_out.policy, recipes)
        keys = {w.api_key for w in workers}
        if len(workers) < 1 or len(keys) != 1 or None in keys:
            raise RouterError(
                "a router forwards the client's key to every worker: give it started workers "
                "that share one API key (launch_replicas does)"
            )
        models = {w.model for w in workers}
        if len(models) != 1:
            raise RouterError(f"the workers serve different models {sorted(models)}: give one")
        self.workers = list(workers)
        self.api_key = keys.pop()
        self.model = models.pop()  # the router lists "unknown": clients must send this name
        self.host, self.port = host, port or free_port(host)
        self.startup_timeout_s = startup_timeout_s or recipes.scale_out.startup_timeout_s
        self.interval_s = recipes.scale_out.health_check_interval_secs
        self.log_dir = log_dir
        self.log_path: Path | None = None
        self._owned: OwnedProcess | None = None
        self.startup_s: float | None = None

    @property
    def argv(self) -> list[str]:
        """The router's command line (the key is not in it: the wrapper reads it from the env)."""
        return [
            sys.executable,
            "-m",
            "cookbook_router",
            "--worker-urls",
            *(w.base_url for w in self.workers),
            "--policy",
            self.policy,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--health-check-interval-secs",
            str(self.interval_s),
        ]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._owned.proc.pid if self._owned else None

    @property
    def alive(self) -> bool:
        return self._owned is not None and self._owned.alive

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines)

    def start(self) -> Router:
        if self.alive:
            return self
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = log_directory(self.log_dir) / f"router-{self.port}-{stamp}.log"
        path = [str(ENGINE_SIDE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), ROUTER_KEY_ENV: self.api_key}
        self._owned = OwnedProcess.start(self.argv, env, self.log_path)
        limit = f"{self.startup_timeout_s:.0f} s"
        try:  # ready when /workers lists every worker healthy (the router asks them itself)
            seconds = self._owned.wait_ready(
                lambda: len(self._healthy_urls(timeout_s=2.0) or []) == len(self.workers),
                self.startup_timeout_s,
                self._fail,
                not_ready=f"did not list its workers healthy within {limit}",
                poll_s=0.25,
            )
        except BaseException:
            self.stop(grace_s=2.0)
            raise
        self.startup_s = round(seconds, 1)
        return self

    def _fail(self, what: str) -> RouterError:
        return RouterError(
            f"router ({' '.join(self.argv[2:])}) {what}.\nLog: {self.log_path} (last lines)\n"
            + "\n".join("    " + line for line in self.log_tail().splitlines())
        )

    def workers_status(self, timeout_s: float = 5.0) -> list[dict]:
        """The router's own view of its workers (GET /workers: url, is_healthy, load, ...)."""
        resp = httpx.get(
            f"{self.base_url}/workers",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=timeout_s,
        )
        resp.raise_for_status()
        return resp.json()["workers"]

    def _healthy_urls(self, timeout_s: float) -> list[str] | None:
        try:
            return [w["url"] for w in self.workers_status(timeout_s) if w.get("is_healthy")]
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def wait_until_unhealthy(self, worker: Server, timeout_s: float = 30.0) -> float:
        """Seconds until the router marks `worker` unhealthy; RouterError after timeout_s."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            healthy = self._healthy_urls(timeout_s=2.0)
            if healthy is not None and worker.base_url not in healthy:
                return round(time.monotonic() - started, 1)
            time.sleep(0.25)
        raise RouterError(f"the router still lists {worker.base_url} healthy after {timeout_s} s")

    @property
    def client(self):
        import openai

        return openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key=self.api_key, max_retries=0, timeout=300.0
        )

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        owned, self._owned = self._owned, None
        if owned is not None:
            owned.end(grace_s)

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<Router {self.policy} {self.base_url} -> {len(self.workers)} workers {state}>"


@dataclass
class Replicas:
    """N servers of one model and the router in front of them; stop() ends them all."""

    workers: list[Server]
    router: Router
    engine: str
    notes: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.router.model

    @property
    def variant(self) -> str:
        return self.workers[0].variant

    @property
    def startup_s(self) -> float:
        """Start-up of the whole set: the workers one after another, then the router."""
        return round(sum(w.startup_s or 0 for w in self.workers) + (self.router.startup_s or 0), 1)

    def stop(self) -> None:
        self.router.stop()
        for worker in self.workers:
            worker.stop()

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _worker_layout(engine: str, replicas: int, recipes: Recipes) -> tuple[list[dict], list[str]]:
    """Per replica: extra launch arguments and environment. On a GPU each replica gets its own
    device; with fewer GPUs than replicas they share GPU 0 with a smaller memory share."""
    if engine != "sglang":  # on the CPU: one machine, no devices to place (and metrics are on)
        return [{} for _ in range(replicas)], []
    scale = recipes.scale_out
    flags = tuple(t for f in scale.sglang_worker_flags for t in f.split())
    detection = gpu.detect(recipes)
    count = len(detection.gpus)
    if count >= replicas:
        devices = [str((detection.index + i) % count) for i in range(replicas)]
        layout = [{"extra_args": flags, "env": {"CUDA_VISIBLE_DEVICES": d}} for d in devices]
        return layout, [f"{replicas} replicas on GPUs {', '.join(devices)}"]
    share = ("--mem-fraction-static", str(scale.shared_gpu_mem_fraction))
    note = (
        f"{count} GPU for {replicas} replicas: they share GPU {detection.index}, each with "
        f"--mem-fraction-static {scale.shared_gpu_mem_fraction} (this shows the router at work, "
        "not the scaling: that needs a GPU per replica)"
    )
    return [
        {"extra_args": flags + share, "env": {"CUDA_VISIBLE_DEVICES": str(detection.index)}}
        for _ in range(replicas)
    ], [note]


def launch_replicas(
    variant: str = "instruct",
    engine: str = "auto",
    replicas: int | None = None,
    policy: str | None = None,
    *,
    model: str | None = None,
    hw: str | None = None,
    startup_timeout_s: float | None = None,
    echo=print,
    **others,
) -> Replicas:
    """Start `replicas` servers of one variant with one shared key, one after the other (on a
    GPU two SGLang servers must not size their memory pools at the same moment), then the router.
    Anything that fails to start stops what was already running. A notebook's SERVER options
    other than model, hw and startup_timeout_s do not apply: the replicas are started here."""
    check_options(others, ("model", "hw", "startup_timeout_s", "echo"), "launch_replicas")

    recipes = load_recipes()
    replicas = _check_replicas(recipes.scale_out.replicas if replicas is None else replicas)
    engine = resolve_engine(engine)
    make_room("the replicas need the machine", echo)
    key = new_api_key()
    layout, notes = _worker_layout(engine, replicas, recipes)
    workers: list[Server] = []
    try:
        for i, place in enumerate(layout):
            worker = Server(
                variant,
                engine,
                model=model,
                hw=hw,
                progress=False,
                startup_timeout_s=startup_timeout_s,
                api_key=key,
                extra_args=place.get("extra_args", ()),
                env=place.get("env"),
                check_gpu_free=(i == 0),
            )
            workers.append(worker)
            worker.start()
            echo(f"worker {i}: {worker!r} ready in {worker.startup_s} s")
        router = Router(workers, policy=policy).start()
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    echo(f"router: {router!r} ready in {router.startup_s} s")
    return Replicas(workers, router, engine, notes)


def request_counts(workers: list[Server], timeout_s: float = 10.0) -> list[int]:
    """Each worker's finished requests so far: its /metrics counter, summed over its labels."""
    counters = load_recipes().scale_out.request_counters
    out = []
    for worker in workers:
        name = counters.get(worker.engine)
        if name is None:
            raise ServerStartError(f"no request counter known for engine {worker.engine!r}")
        text = server_metrics.scrape(worker.base_url, worker.api_key, timeout_s)
        total = server_metrics.counter_total(text, name)
        out.append(int(total))
    return out
