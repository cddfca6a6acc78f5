"""What is checked before a run starts, so a mistake costs seconds, not a run: the server answers
and serves the model, the workload fits its context, and the result file can be written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from cookbook.bench.config import BenchConfig, BenchError, length_bounds


def json_of(response: httpx.Response, url: str) -> Any:
    """The answer's JSON, or an error that says what came instead (often: not the /v1 base)."""
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise BenchError(
            f"{url} answered {response.status_code} with {kind}, not JSON: is the base URL an "
            "OpenAI-compatible server's (e.g. http://HOST:PORT/v1)?"
        ) from None


def check_server(config: BenchConfig, timeout_s: float = 30.0) -> int | None:
    """Before any prompt is built: the server answers, takes the key and serves the model.
    Returns its max_model_len (vLLM and SGLang list it in /v1/models; None if not given)."""
    url = f"{config.api_base}/models"
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise BenchError(f"no server answered at {url} ({type(exc).__name__}: {exc})") from None
    if response.status_code in (401, 403):
        raise BenchError(
            f"{url} refused the API key (HTTP {response.status_code}): pass the server's key "
            "with --api-key or OPENAI_API_KEY"
        )
    if response.status_code != 200:
        raise BenchError(f"{url} answered HTTP {response.status_code}, not a list of models")
    data = json_of(response, url)
    try:
        cards = {str(card["id"]): card for card in data["data"]}
    except (KeyError, TypeError):
        raise BenchError(f"{url} answered JSON that is not an OpenAI model list") from None
    if config.model not in cards:
        raise BenchError(f"{config.server_root} serves {sorted(cards)}, not {config.model!r}")
    limit = cards[config.model].get("max_model_len")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def check_lengths(config: BenchConfig, max_model_len: int | None) -> None:
    """Refuse a workload whose longest prompt plus output cannot fit the model's context: the
    server would cut every such request short (or build a huge prompt to reject)."""
    if max_model_len is None:
        return
    high_in = length_bounds(config.input_len, config.range_ratio, config.range_convention)[1]
    high_out = length_bounds(config.output_len, config.range_ratio, config.range_convention)[1]
    if high_in + high_out > max_model_len:
        raise BenchError(
            f"input up to {high_in} + output up to {high_out} tokens exceed {config.model}'s "
            f"max_model_len of {max_model_len}: lower --input-len / --output-len"
        )


def check_out_path(path: str | Path) -> Path:
    """Fail before a run, not after it: the result file and its .requests.jsonl beside it must
    be files this process can write (made and removed here if they do not exist yet)."""
    try:
        path = Path(path).expanduser()
        path.resolve()  # a symbolic link loop raises here
        if path.exists() and not path.is_file() and not path.is_dir():
            raise BenchError(f"--out {str(path)!r} is not a regular file (a pipe or a device?)")
    except RuntimeError as exc:  # expanduser: ~name of no user; resolve: a link loop
        what = (
            "a symbolic link loop" if "loop" in str(exc).lower() else "no such user's home folder"
        )
        raise BenchError(f"--out {str(path)!r}: {what}") from None
    except OSError as exc:  # e.g. a symbolic link loop
        raise BenchError(f"--out {str(path)!r}: {exc.strerror or exc}") from None
    if not path.name or path.is_dir():
        raise BenchError(f"--out {str(path)!r} is a directory: give a file, e.g. results/run.json")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise BenchError(f"--out {str(path)!r}: {blocking} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for target in (path, path.with_suffix(".requests.jsonl")):
            existed = target.exists()
            with target.open("a"):
                pass
            if not existed:
                target.unlink()
    except OSError as exc:
        raise BenchError(
            f"--out {str(path)!r}: cannot write there ({exc.strerror or exc})"
        ) from None
    return path
