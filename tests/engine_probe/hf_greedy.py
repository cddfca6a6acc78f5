"""Runs inside the SGLang environment (it has torch and transformers): Hugging Face transformers'
greedy `generate` on a fixture, the reference tests/test_sglang_cpu_standins.py holds SGLang's
output to. Reads one JSON object on stdin, prints one on stdout.

    in:  {"model": DIR, "dtype": "bfloat16",
          "prompts": [{"messages": [...], "tools": [...]} | {"text": "..."}, with "max_new_tokens": N and
                      optionally "continue_after": M, ...]}
    out: {"dtype": the dtype the model ran in, "eos_token_id": [...],
          "results": [{"input_ids": [...], "output_ids": [...], "margins": [...]}, ...]}

`margins`: at each generated position, the top-1 minus top-2 logit (float32), so that a mismatch
can be told apart from a near-tie. Each prompt runs alone (batch of one): no padding, no masks.
With "continue_after": M the prompt is the chat or text followed by the first M tokens of its own
greedy answer: a prompt whose prefix a server has already seen (its prefix cache holds it).
"""

from __future__ import annotations

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

# One thread: on a model this small a second one only waits (20-40x the CPU time for the same
# tokens on two cores shared with a server starting up).
torch.set_num_threads(1)
torch.manual_seed(0)
request = json.load(sys.stdin)
tokenizer = AutoTokenizer.from_pretrained(request["model"])
model = AutoModelForCausalLM.from_pretrained(
    request["model"], dtype=getattr(torch, request["dtype"])
).eval()


def greedy(ids: list[int], max_new_tokens: int) -> tuple[list[int], list[float]]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            output_scores=True,
            return_dict_in_generate=True,
        )
    margins = []
    for scores in out.scores:  # one (1, vocab) tensor per generated token
        top = scores[0].float().topk(2).values
        margins.append(round(float(top[0] - top[1]), 5))
    return out.sequences[0, len(ids) :].tolist(), margins


results = []
for prompt in request["prompts"]:
    if "messages" in prompt:
        ids = tokenizer.apply_chat_template(
            prompt["messages"],
            tools=prompt.get("tools"),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
    else:
        ids = tokenizer(prompt["text"], add_special_tokens=True)["input_ids"]
    ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
    if prompt.get("continue_after"):
        ids += greedy(ids, prompt["continue_after"])[0]
    output_ids, margins = greedy(ids, prompt["max_new_tokens"])
    results.append({"input_ids": ids, "output_ids": output_ids, "margins": margins})

eos = model.generation_config.eos_token_id
json.dump(
    {
        "dtype": str(model.dtype).removeprefix("torch."),
        "eos_token_id": eos if isinstance(eos, list) else [eos],
        "results": results,
    },
    sys.stdout,
)
