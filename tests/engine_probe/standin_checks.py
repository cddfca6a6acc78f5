"""Runs inside the SGLang environment (it has torch): each CPU stand-in of
cookbook/engine_side/sglang_cpu against an independent reference on random inputs. Prints one JSON
object, case -> largest absolute difference (or a boolean), for tests/test_sglang_cpu_standins.py.

    PYTHONPATH=cookbook/engine_side/sglang_cpu .venvs/sglang/bin/python \
        tests/engine_probe/standin_checks.py [NAME ...]

Each NAME (a name SGLang probes torch.ops.sgl_kernel for) is reported under "probes_present":
whether the stand-in's torch.ops.sgl_kernel answers hasattr() for it (it must not).

The references: torch's own conv1d in float64 over each whole sequence (for the convolution), and
a vectorised index scatter (for the token pool), neither sharing code with the stand-ins."""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

import cookbook_causal_conv1d as conv
import sgl_kernel
import sgl_kernel.mamba

torch.set_num_threads(1)  # tiny tensors: a second thread only waits
torch.manual_seed(0)
DIM, WIDTH, PAD, SLOTS = 24, 3, conv.PAD_SLOT_ID, 8


def reference(seq: torch.Tensor, weight, bias, before: torch.Tensor | None, silu: bool):
    """Causal depthwise conv of seq (dim, n) after `before` (dim, width-1) or zeros, float64;
    and the state left after it (the last width-1 columns)."""
    before = torch.zeros(seq.shape[0], WIDTH - 1, dtype=torch.float64) if before is None else before
    full = torch.cat([before.double(), seq.double()], dim=1)[None]
    out = F.conv1d(full, weight.double()[:, None, :], None if bias is None else bias.double(),
                   groups=seq.shape[0])[0]  # fmt: skip
    return (F.silu(out) if silu else out), full[0, :, -(WIDTH - 1) :]


def diff(a, b) -> float:
    return float((a.double() - b.double()).abs().max())


def prefill_case(lengths, initial, slots, silu, bias_on):
    """One causal_conv1d_fn call over several sequences side by side, each with its slot."""
    weight, bias = torch.randn(DIM, WIDTH), torch.randn(DIM) if bias_on else None
    x = torch.randn(DIM, sum(lengths))
    states = torch.randn(SLOTS, DIM, WIDTH - 1)
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
    others = [s for s in range(SLOTS) if s not in used]  # slot 7 among them: what -1 would hit
    pads_untouched &= bool(torch.equal(states[others], before_call[others]))
    return worst, pads_untouched


def decode_case(batch=5, prompt=7, steps=6, silu=False):
    """Prefill each sequence, then decode `steps` tokens one at a time (several sequences per
    step, a padded entry among them): every output equals the conv over the whole sequence, and
    the slots no sequence owns (the last one, which index -1 would reach, among them) keep their
    contents."""
    weight, bias = torch.randn(DIM, WIDTH), torch.randn(DIM)
    slots = [6, 2, 0, 5, 3][:batch]
    states = torch.randn(SLOTS, DIM, WIDTH - 1)  # garbage: has_initial_state=False ignores it
    before = states.clone()
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
    others = [s for s in range(SLOTS) if s not in slots]
    return worst, pad_zero, bool(torch.equal(states[others], before[others]))


def prefill_fresh(seqs, lengths, slots, weight, bias, states):
    """One prefill call over the first `lengths` columns of each sequence, side by side, into
    `slots` with no cached state (no activation): (out, query_start_loc)."""
    loc = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    x = torch.cat([s[:, :n] for s, n in zip(seqs, lengths, strict=True)], dim=1)
    out = conv.causal_conv1d_fn(x, weight, bias, states, loc, list(lengths),
                                cache_indices=torch.tensor(slots, dtype=torch.int32),
                                has_initial_state=torch.zeros(len(slots), dtype=torch.bool),
                                activation=None)  # fmt: skip
    return out, loc


def bfloat16_case(lengths=(9, 1, 4), steps=4):
    """As SGLang runs LFM2 here: activations, weights and conv state in bfloat16. The outputs are
    the float64 reference rounded once (within one bfloat16 step of it: the float32 sum can fall
    on the other side of a rounding boundary), and the state holds the inputs bit for bit."""
    dt = torch.bfloat16
    weight, bias = torch.randn(DIM, WIDTH, dtype=dt), None
    slots = [4, 1, 7]
    states = torch.zeros(SLOTS, DIM, WIDTH - 1, dtype=dt)
    seqs = [torch.randn(DIM, n + steps, dtype=dt) for n in lengths]
    out, loc = prefill_fresh(seqs, lengths, slots, weight, bias, states)
    outs = [[out[:, loc[i] : loc[i + 1]]] for i in range(len(slots))]
    for t in range(steps):
        step = torch.stack([s[:, n + t] for s, n in zip(seqs, lengths, strict=True)])
        one = conv.causal_conv1d_update(step, states, weight, bias, None,
                                        conv_state_indices=torch.tensor(slots, dtype=torch.int32))  # fmt: skip
        for i in range(len(slots)):
            outs[i].append(one[i][:, None])
    worst_steps, state_exact = 0.0, True
    for i, (seq, slot) in enumerate(zip(seqs, slots, strict=True)):
        got = torch.cat(outs[i], dim=1).double()
        want, _ = reference(seq, weight, bias, None, silu=False)
        step = 2.0 ** (torch.floor(torch.log2(want.abs().clamp_min(1e-30))) - 7)  # bf16 spacing
        worst_steps = max(worst_steps, float(((got - want).abs() / step).max()))
        state_exact &= bool(torch.equal(states[slot], seq[:, -(WIDTH - 1) :]))
    return worst_steps, state_exact, str(out.dtype)


def float32_bfloat16_state_case(lengths=(6, 1, 3), steps=4):
    """As the float32 launch runs LFM2 here: activations and weights in float32, the conv state in
    bfloat16 (SGLang's SGLANG_MAMBA_CONV_DTYPE default, whatever the model's dtype). Within a call
    the inputs are used as given; what crosses from one call to the next is the state, rounded to
    bfloat16 once. The reference rounds exactly those inputs."""
    weight, bias = torch.randn(DIM, WIDTH), torch.randn(DIM)
    slots = [2, 5, 0]
    states = torch.zeros(SLOTS, DIM, WIDTH - 1, dtype=torch.bfloat16)
    seqs = [torch.randn(DIM, n + steps) for n in lengths]
    out, loc = prefill_fresh(seqs, lengths, slots, weight, bias, states)
    worst = max(
        diff(out[:, loc[i] : loc[i + 1]], reference(seqs[i][:, :n], weight, bias, None, False)[0])
        for i, n in enumerate(lengths)
    )
    for t in range(steps):
        step = torch.stack([s[:, n + t] for s, n in zip(seqs, lengths, strict=True)])
        one = conv.causal_conv1d_update(step, states, weight, bias, None,
                                        conv_state_indices=torch.tensor(slots, dtype=torch.int32))  # fmt: skip
        for i, (seq, n) in enumerate(zip(seqs, lengths, strict=True)):
            seen = seq[:, : n + t + 1].clone()
            seen[:, :-1] = seen[:, :-1].bfloat16().float()  # what came through the state
            worst = max(worst, diff(one[i], reference(seen, weight, bias, None, False)[0][:, -1]))
    state_exact = all(
        torch.equal(states[slot], seq[:, -(WIDTH - 1) :].bfloat16())
        for seq, slot in zip(seqs, slots, strict=True)
    )
    return worst, state_exact, str(out.dtype), str(states.dtype)


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


def error_of(call) -> str:
    """The error a call raises, as "Type: message" ("no error" when it returns)."""
    try:
        call()
    except Exception as exc:  # the type is part of what is checked
        return f"{type(exc).__name__}: {exc}"
    return "no error"


results = {}
for name, kwargs in {
    "prefill_no_state": dict(lengths=[5], initial=[False], slots=[3], silu=False, bias_on=True),
    "prefill_with_state": dict(lengths=[4], initial=[True], slots=[1], silu=False, bias_on=False),
    "prefill_batch_mixed": dict(lengths=[7, 1, 2, 12], initial=[True, False, True, False],
                                slots=[5, 0, 6, 2], silu=True, bias_on=True),
    "prefill_shorter_than_kernel": dict(lengths=[1, 1], initial=[True, True], slots=[4, 6],
                                        silu=False, bias_on=True),
    "prefill_padded_slot": dict(lengths=[3, 4, 2], initial=[False, True, False],
                                slots=[1, PAD, 2], silu=False, bias_on=True),
}.items():  # fmt: skip
    worst, pads_ok = prefill_case(**kwargs)
    results[name] = {"max_abs_diff": worst, "untouched_slots_kept": pads_ok}
for name, silu in (("decode_steps", False), ("decode_steps_silu", True)):
    worst, pad_zero, kept = decode_case(silu=silu)
    results[name] = {"max_abs_diff": worst, "padded_entry_zero": pad_zero,
                     "untouched_slots_kept": kept}  # fmt: skip
worst_steps, state_exact, dtype = bfloat16_case()
results["bfloat16"] = {"max_bf16_steps": worst_steps, "state_exact": state_exact, "dtype": dtype}
worst, state_exact, out_dtype, state_dtype = float32_bfloat16_state_case()
results["float32_bfloat16_state"] = {"max_abs_diff": worst, "state_exact": state_exact,
                                     "dtypes": [out_dtype, state_dtype]}  # fmt: skip
results["token_pool_scatter"] = {"equal": all(token_pool_case() for _ in range(20))}

# What is not stood in fails at once, naming itself.
x1, state1, w1 = torch.ones(1, DIM), torch.zeros(1, DIM, WIDTH - 1), torch.ones(DIM, WIDTH)
loc1 = torch.tensor([0, 1], dtype=torch.int32)
results["missing"] = {
    "op_read_at_import": error_of(lambda: torch.ops.sgl_kernel.fused_gdn_gating_cpu(x1)),
    "op_default_overload": error_of(lambda: torch.ops.sgl_kernel.fused_gdn_gating_cpu.default(x1)),
    "mamba_import": error_of(lambda: sgl_kernel.mamba.causal_conv1d_fn_cpu(x1)),
    "package_import": error_of(lambda: sgl_kernel.verify_tree_greedy_cpu(x1)),
    "copy_all_layer_kv_cache_cpu": error_of(lambda: sgl_kernel.copy_all_layer_kv_cache_cpu(x1)),
    "unlisted_name": error_of(lambda: sgl_kernel.rmsnorm_cpu),
    "unlisted_op": error_of(lambda: torch.ops.sgl_kernel.rmsnorm_cpu),
}
results["unsupported"] = {
    "num_accept_tokens": error_of(lambda: conv.causal_conv1d_update(
        x1, state1, w1, num_accept_tokens=torch.ones(1))),
    "cache_seqlens": error_of(lambda: conv.causal_conv1d_update(
        x1, state1, w1, cache_seqlens=torch.ones(1, dtype=torch.int32))),
    "block_table": error_of(lambda: conv.causal_conv1d_fn(
        x1.T, w1, None, state1, loc1, [1], block_table=torch.zeros(1, 2, dtype=torch.int32))),
    "activation": error_of(lambda: conv.causal_conv1d_update(x1, state1, w1, activation="gelu")),
    "wide_state": error_of(lambda: conv.causal_conv1d_fn(
        x1.T, w1, None, torch.zeros(1, DIM, WIDTH), loc1, [1])),
}  # fmt: skip
results["probes_present"] = {n: hasattr(torch.ops.sgl_kernel, n) for n in sys.argv[1:]}
results["lists"] = {
    "READ_AT_IMPORT": sorted(sgl_kernel.READ_AT_IMPORT),
    "IMPORTED_AT_LOAD": {m: sorted(names) for m, names in sgl_kernel.IMPORTED_AT_LOAD.items()},
    # the operations the package defines itself (every op SGLang calls ends in _cpu)
    "DEFINED": sorted(n for n, v in vars(sgl_kernel).items() if callable(v) and n.endswith("_cpu")),
}
json.dump(results, sys.stdout)
