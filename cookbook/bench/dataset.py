"""Prompts of an exact token length, built from the served model's own tokenizer (its /tokenize
and /detokenize endpoints), so a run's input lengths are what it says, with no local tokenizer."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from cookbook.bench.checks import json_of
from cookbook.bench.config import BenchConfig, BenchError, sample_lengths


class ServerTokenizer:
    """The server's own tokenizer through its /tokenize and /detokenize endpoints (vLLM and
    SGLang both serve them at the root), so prompt lengths are exact for the model served."""

    def __init__(self, config: BenchConfig, timeout_s: float = 30.0):
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._client = httpx.Client(base_url=config.server_root, headers=headers, timeout=timeout_s)
        self._model = config.model
        self.vocab_size = self._vocab_size()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._client.post(path, json={"model": self._model, **body})
        except httpx.HTTPError as exc:
            raise BenchError(f"{path} on {self._client.base_url}: {exc}") from None
        if response.status_code != 200:
            text = " ".join(response.text[:300].split())
            raise BenchError(
                f"{path} on {self._client.base_url} answered {response.status_code}: "
                f"{text} (the benchmark needs the server's tokenize endpoints)"
            )
        return json_of(response, f"{self._client.base_url}{path}")

    def _field(self, path: str, answer: Any, names: tuple[str, ...]) -> Any:
        """The first of `names` in the answer (vLLM and SGLang name some fields differently)."""
        if isinstance(answer, dict):
            for name in names:
                if name in answer:
                    return answer[name]
        raise BenchError(
            f"{path} on {self._client.base_url} answered without {' or '.join(map(repr, names))}: "
            f"{str(answer)[:200]} (the benchmark needs vLLM's or SGLang's tokenize endpoints)"
        )

    def encode(self, text: str) -> list[int]:
        body = {"prompt": text, "add_special_tokens": False}
        return list(self._field("/tokenize", self._post("/tokenize", body), ("tokens",)))

    def decode(self, ids: Sequence[int]) -> str:
        answer = self._post("/detokenize", {"tokens": list(ids)})
        return self._field("/detokenize", answer, ("prompt", "text"))  # vLLM / SGLang

    def _vocab_size(self) -> int:
        # The largest id a long, varied text maps to bounds the ordinary vocabulary from below;
        # ids are then drawn from the range the text itself produced (no special tokens).
        probe = " ".join(f"{w}{i}" for i, w in enumerate(_WORDS * 4))
        return max(self.encode(probe)) + 1

    def close(self) -> None:
        self._client.close()


_WORDS = (  # noqa: SIM905 - one readable block of common words
    "the of and to in is was for on that with as by at from his an were are which this be has "
    "or had not but first one their its new after who they have her she two been other when "
    "there all during into school time may years more most only over city some world would where "
    "later up such used many can state about national out known university united then made"
).split()


def single_token_words(tokenizer: Any, rng: random.Random, want: int = 256) -> list[str]:
    """Words (a space, then letters) that the tokenizer keeps as exactly one token each.

    Byte-level BPE splits text at spaces before merging, so a string of such words encodes to one
    token per word: prompts of an exact length without decode/re-encode drift.
    """
    pool: list[str] = []
    candidates = list(range(tokenizer.vocab_size))
    rng.shuffle(candidates)
    for token_id in candidates:
        text = tokenizer.decode([token_id])
        if len(text) > 2 and text[0] == " " and text[1:].isascii() and text[1:].isalpha():
            pool.append(text)
            if len(pool) >= want * 2:
                break
    if not pool:
        raise BenchError("the tokenizer has no single-token words to build prompts from")
    # One encode checks them all: keep the words that stayed one token in running text.
    ids = tokenizer.encode("".join(pool))
    if len(ids) == len(pool):
        return pool[:want]
    return [w for w in pool if len(tokenizer.encode(w)) == 1][:want]


def token_exact_prompt(tokenizer: Any, length: int, rng: random.Random, words: list[str]) -> str:
    """A text of `length` single-token words; checked against the tokenizer, never assumed."""
    text = "".join(rng.choice(words) for _ in range(length))
    got = len(tokenizer.encode(text))
    if got != length:
        raise BenchError(f"a prompt meant to be {length} tokens encodes to {got}")
    return text


@dataclass(frozen=True)
class Prompt:
    text: str
    input_len: int  # tokens of the text itself (no chat template, no BOS)
    output_len: int


def build_dataset(
    config: BenchConfig, tokenizer: Any, deadline: float | None = None
) -> list[Prompt]:
    """The warm-up and measured prompts, each exactly its sampled length on the server's own
    tokenizer. Past `deadline` (time.monotonic()) it stops with BenchError: the run timeout
    bounds prompt building too."""
    rng = random.Random(config.seed)
    n = config.num_prompts + config.warmup
    ins = sample_lengths(n, config.input_len, config.range_ratio, config.range_convention, rng)
    outs = sample_lengths(n, config.output_len, config.range_ratio, config.range_convention, rng)
    words = single_token_words(tokenizer, random.Random(config.seed))
    prompts = []
    for i, o in zip(ins, outs, strict=True):
        if deadline is not None and time.monotonic() > deadline:
            raise BenchError(
                f"the run timeout of {config.run_timeout_s} s passed while building the prompts "
                f"({len(prompts)} of {n} built): raise --run-timeout or ask for fewer prompts"
            )
        prompts.append(Prompt(token_exact_prompt(tokenizer, i, rng, words), i, o))
    return prompts
