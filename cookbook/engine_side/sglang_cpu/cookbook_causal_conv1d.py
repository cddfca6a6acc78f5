"""LFM2's causal depthwise convolution in plain torch, in place of SGLang's Triton kernels.

Same signatures and in-place state updates as `sglang.kernels.ops.mamba.causal_conv1d_triton`'s
`causal_conv1d_fn` (prefill) and `causal_conv1d_update` (decode). Layouts, as SGLang passes them:

- x: (dim, total_tokens) for prefill, the sequences side by side (`query_start_loc` marks them);
  (batch, dim) or (batch, dim, seqlen) for decode.
- weight: (dim, width); bias: (dim,) or None.
- conv_states / conv_state: (slots, dim, width - 1), one slot per request, updated in place.
- cache_indices / conv_state_indices: the slot of each sequence; `pad_slot_id` marks a padded
  entry, which is skipped (its output stays zero, its slot untouched).

Features the Triton kernels have and LFM2 on the CPU never uses (speculative decoding's windows,
circular buffers, paged blocks) raise NotImplementedError naming the argument.
"""

from __future__ import annotations

import torch

PAD_SLOT_ID = -1


def _silu_if(activation) -> bool:
    if activation in (None, False):
        return False
    if activation in (True, "silu", "swish"):
        return True
    raise NotImplementedError(
        f"causal_conv1d stand-in: activation {activation!r} (valid: None, silu, swish)"
    )


def _refuse(**given) -> None:
    used = sorted(name for name, value in given.items() if value is not None)
    if used:
        raise NotImplementedError(
            f"the cookbook's CPU causal_conv1d stand-in does not implement {', '.join(used)} "
            "(speculative decoding or paged conv state); launch without it"
        )


def _conv(window: torch.Tensor, weight: torch.Tensor, bias, silu: bool, length: int):
    """window: (..., dim, width - 1 + length) -> (..., dim, length), in float32."""
    width = weight.shape[1]
    w = weight.float()
    out = sum(window[..., k : k + length] * w[:, k : k + 1] for k in range(width))
    if bias is not None:
        out = out + bias.float()[:, None]
    return torch.nn.functional.silu(out) if silu else out


def causal_conv1d_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv_states: torch.Tensor | None,
    query_start_loc: torch.Tensor,
    seq_lens_cpu=None,
    cache_indices: torch.Tensor | None = None,
    has_initial_state: torch.Tensor | None = None,
    activation="silu",
    pad_slot_id: int = PAD_SLOT_ID,
    validate_data: bool = False,
    block_table: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    _refuse(block_table=block_table, **kwargs)
    silu = _silu_if(activation)
    dim, _ = x.shape
    state_len = weight.shape[1] - 1
    if conv_states is not None and conv_states.shape[-1] != state_len:
        raise NotImplementedError(
            f"causal_conv1d stand-in: conv state of {conv_states.shape[-1]} columns for a kernel "
            f"of width {weight.shape[1]} (only width - 1 is implemented)"
        )
    out = torch.zeros_like(x)
    bounds = query_start_loc.tolist()
    slots = cache_indices.tolist() if cache_indices is not None else range(len(bounds) - 1)
    initial = has_initial_state.tolist() if has_initial_state is not None else None
    for i, slot in enumerate(slots):
        if cache_indices is not None and slot == pad_slot_id:
            continue
        start, end = bounds[i], bounds[i + 1]
        seq = x[:, start:end].float()
        if conv_states is not None and initial is not None and initial[i]:
            before = conv_states[slot].float()
        else:
            before = seq.new_zeros(dim, state_len)
        window = torch.cat([before, seq], dim=1)
        out[:, start:end] = _conv(window, weight, bias, silu, end - start).to(x.dtype)
        if conv_states is not None:
            conv_states[slot] = window[:, window.shape[1] - state_len :].to(conv_states.dtype)
    return out


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation=None,
    cache_seqlens: torch.Tensor | None = None,
    conv_state_indices: torch.Tensor | None = None,
    num_accept_tokens: torch.Tensor | None = None,
    intermediate_conv_window: torch.Tensor | None = None,
    intermediate_state_indices: torch.Tensor | None = None,
    retrieve_next_token: torch.Tensor | None = None,
    retrieve_next_sibling: torch.Tensor | None = None,
    retrieve_parent_token: torch.Tensor | None = None,
    pad_slot_id: int = PAD_SLOT_ID,
    metadata=None,
    validate_data: bool = False,
) -> torch.Tensor:
    _refuse(
        cache_seqlens=cache_seqlens,
        num_accept_tokens=num_accept_tokens,
        intermediate_conv_window=intermediate_conv_window,
        intermediate_state_indices=intermediate_state_indices,
        retrieve_next_token=retrieve_next_token,
        retrieve_next_sibling=retrieve_next_sibling,
        retrieve_parent_token=retrieve_parent_token,
    )
    silu = _silu_if(activation)
    single = x.dim() == 2
    xs = x.unsqueeze(-1) if single else x  # (batch, dim, seqlen)
    batch, _, seqlen = xs.shape
    width = weight.shape[1]
    slots = torch.arange(batch) if conv_state_indices is None else conv_state_indices.long()
    keep = slots != pad_slot_id
    out = torch.zeros_like(xs)
    if bool(keep.any()):
        rows, used = keep.nonzero().flatten(), slots[keep]
        state = conv_state[used].float()  # (n, dim, state_len)
        window = torch.cat([state, xs[rows].float()], dim=2)
        conv_in = window[..., window.shape[2] - (width - 1 + seqlen) :]
        out[rows] = _conv(conv_in, weight, bias, silu, seqlen).to(x.dtype)
        conv_state[used] = window[..., window.shape[2] - state.shape[2] :].to(conv_state.dtype)
    return out.squeeze(-1) if single else out
