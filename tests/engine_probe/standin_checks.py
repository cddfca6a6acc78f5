"""Runs inside the SGLang environment (it has torch): each CPU stand-in of
helpers/engine_side/sglang_cpu against an independent reference on random inputs. Prints one JSON
object, case -> largest absolute difference (or a boolean), for tests/test_sglang_cpu_standins.py.

The references: torch's own conv1d in float64 over each whole sequence (for the convolution), and
a vectorised index scatter (for the token pool), neither sharing code with the stand-ins."""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

import cookbook_causal_conv1d as conv
import sgl_kernel

torch.manual_seed(0)
DIM, WIDTH, PAD = 24, 3, conv.PAD_SLOT_ID


def reference(seq: torch.Tensor, weight, bias, before: torch.Tensor | None, silu: bool):
    """Causal depthwise conv of seq (dim, n) after `before` (dim, width-1) or zeros, float64."""
    before = torch.zeros(seq.shape[0], WIDTH - 1, dtype=torch.float64) if before is None else before
    full = torch.cat([before.double(), seq.double()], dim=1)[None]
    out = F.conv1d(full, weight.double()[:, None, :], None if bias is None else bias.double(),
                   groups=seq.shape[0])[0]  # fmt: skip
    return (F.silu(out) if silu else out), full[0, :, -(WIDTH - 1) :]


def diff(a, b) -> float:
    return float((a.double() - b.double()).abs().max())


def prefill_case(lengths, initial, slots, silu, bias_on, slots_total=8):
    weight, bias = torch.randn(DIM, WIDTH), torch.randn(DIM) if bias_on else None
    x = torch.randn(DIM, sum(lengths))
    states = torch.randn(slots_total, DIM, WIDTH - 1)
    before_call = states.clone()
    loc = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    out = conv.causal_conv1d_fn(
        x, weight, bias, states, loc, lengths,
        cache_indices=torch.tensor(slots, dtype=torch.int32),
        has_initial_state=torch.tensor(initial), activation="silu" if silu else None,
    )  # fmt: skip
    worst, pads_untouched = 0.0, True
    for i, slot in enumerate(slots):
        seq = x[:, loc[i] : loc[i + 1]]
        if slot == PAD:
            pads_untouched &= bool((out[:, loc[i] : loc[i + 1]] == 0).all())
            continue
        want, state = reference(seq, weight, bias, before_call[slot] if initial[i] else None, silu)
        worst = max(worst, diff(out[:, loc[i] : loc[i + 1]], want), diff(states[slot], state))
    used = {s for s in slots if s != PAD}
    others = [s for s in range(slots_total) if s not in used]
    pads_untouched &= bool(torch.equal(states[others], before_call[others]))
    return worst, pads_untouched


def decode_case(batch=5, prompt=7, steps=6, silu=False):
    """Prefill each sequence, then decode `steps` tokens one at a time (several sequences per
    step, a padded entry among them): every output equals the conv over the whole sequence."""
    weight, bias = torch.randn(DIM, WIDTH), torch.randn(DIM)
    slots = [6, 2, 0, 5, 3][:batch]
    states = torch.zeros(8, DIM, WIDTH - 1)
    seqs = torch.randn(batch, DIM, prompt + steps)
    loc = torch.arange(0, (batch + 1) * prompt, prompt, dtype=torch.int32)
    x = torch.cat(list(seqs[:, :, :prompt]), dim=1)
    conv.causal_conv1d_fn(x, weight, bias, states, loc, [prompt] * batch,
                          cache_indices=torch.tensor(slots, dtype=torch.int32),
                          has_initial_state=torch.zeros(batch, dtype=torch.bool),
                          activation="silu" if silu else None)  # fmt: skip
    worst, pad_zero = 0.0, True
    for t in range(prompt, prompt + steps):
        indices = torch.tensor([*slots, PAD], dtype=torch.int32)  # a padded entry, as in a graph
        step = torch.cat([seqs[:, :, t], torch.randn(1, DIM)])  # (batch + 1, dim)
        out = conv.causal_conv1d_update(step, states, weight, bias, "silu" if silu else None,
                                        conv_state_indices=indices)  # fmt: skip
        pad_zero &= bool((out[-1] == 0).all())
        for b in range(batch):
            want, _ = reference(seqs[b, :, : t + 1], weight, bias, None, silu)
            worst = max(worst, diff(out[b], want[:, -1]))
    return worst, pad_zero


def token_pool_case(batch=6, pool_len=64, rows=10):
    table = torch.full((rows, pool_len), -1, dtype=torch.int32)
    want = table.clone()
    rows_used = torch.randperm(rows)[:batch]
    start = torch.randint(0, pool_len // 2, (batch,))
    end = start + torch.randint(0, pool_len // 2, (batch,))
    out_cache_loc = torch.randperm(10_000)[: int((end - start).sum())].to(torch.int64)
    sgl_kernel.assign_req_to_token_pool_cpu(rows_used, table, start, end, out_cache_loc, pool_len)
    # reference: one vectorised scatter over (row, column) pairs
    lengths = end - start
    row_of = torch.repeat_interleave(rows_used, lengths)
    offset_in_run = torch.arange(int(lengths.sum())) - torch.repeat_interleave(
        lengths.cumsum(0) - lengths, lengths
    )
    col_of = torch.repeat_interleave(start, lengths) + offset_in_run
    want[row_of, col_of] = out_cache_loc.to(torch.int32)
    return bool(torch.equal(table, want))


results = {}
for name, kwargs in {
    "prefill_no_state": dict(lengths=[5], initial=[False], slots=[3], silu=False, bias_on=True),
    "prefill_with_state": dict(lengths=[4], initial=[True], slots=[1], silu=False, bias_on=False),
    "prefill_batch_mixed": dict(lengths=[7, 1, 2, 12], initial=[True, False, True, False],
                                slots=[5, 0, 7, 2], silu=True, bias_on=True),
    "prefill_shorter_than_kernel": dict(lengths=[1, 1], initial=[True, True], slots=[4, 6],
                                        silu=False, bias_on=True),
    "prefill_padded_slot": dict(lengths=[3, 4, 2], initial=[False, True, False],
                                slots=[1, PAD, 2], silu=False, bias_on=True),
}.items():  # fmt: skip
    worst, pads_ok = prefill_case(**kwargs)
    results[name] = {"max_abs_diff": worst, "untouched_slots_kept": pads_ok}
for name, silu in (("decode_steps", False), ("decode_steps_silu", True)):
    worst, pad_zero = decode_case(silu=silu)
    results[name] = {"max_abs_diff": worst, "padded_entry_zero": pad_zero}
results["token_pool_scatter"] = {"equal": all(token_pool_case() for _ in range(20))}

# What is not stood in fails at once, naming itself.
try:
    torch.ops.sgl_kernel.rmsnorm_cpu(torch.ones(1))
    results["missing_op"] = "no error"
except NotImplementedError as exc:
    results["missing_op"] = str(exc)
try:
    conv.causal_conv1d_update(torch.ones(1, DIM), torch.zeros(1, DIM, WIDTH - 1),
                              torch.ones(DIM, WIDTH), num_accept_tokens=torch.ones(1))  # fmt: skip
    results["unsupported_argument"] = "no error"
except NotImplementedError as exc:
    results["unsupported_argument"] = str(exc)
results["probes_absent"] = {
    n: hasattr(torch.ops.sgl_kernel, n) for n in sorted(sgl_kernel.CAPABILITY_PROBES)
}
json.dump(results, sys.stdout)
