"""A stand-in for `sgl_kernel`, SGLang's kernel package, in SGLang servers the cookbook runs on a
CPU. The real package's CPU build needs a Xeon with AMX and cannot be installed from PyPI; its
CUDA build cannot run here. SGLang 0.5.23 with SGLANG_USE_CPU_ENGINE=1 imports it regardless.

What it holds:
- `assign_req_to_token_pool_cpu`: the one operation LFM2 on the CPU calls (writes each request's
  newly allocated KV-cache locations into its row of the request-to-token table), in torch.
- `torch.ops.sgl_kernel`: SGLang reads some of its names at import time (READ_AT_IMPORT); each is
  an operation that raises NotImplementedError naming itself if it is ever called. Every other
  name is absent, so SGLang's checks for a fast path find none and it takes its torch paths.
- Any other name imported from here fails at import, naming it (Python's own ImportError).
"""

from __future__ import annotations

import torch

__version__ = "0.0.0+cookbook-cpu-stand-in"

# The torch.ops.sgl_kernel names SGLang 0.5.23 reads when its modules are imported on a CPU (on
# the paths LFM2 takes). Every other name is absent, as it is without the real package: SGLang
# asks `hasattr(torch.ops.sgl_kernel, NAME)` to choose its AMX and fused paths, and a present name
# would send it to a kernel this stand-in does not have.
READ_AT_IMPORT = frozenset(
    {
        "fused_gdn_gating_cpu",
        "fused_sigmoid_gating_delta_rule_update_cpu",
    }
)
# The names SGLang 0.5.23 imports from sgl_kernel and its submodules (`from sgl_kernel.mamba
# import NAME`) when its modules load on a CPU, besides the two defined below. Each is a function
# that raises if called; any other name fails to import, as it would without the package.
IMPORTED_AT_LOAD: dict[str, frozenset[str]] = {
    "sgl_kernel.mamba": frozenset(
        {
            "causal_conv1d_fn_cpu",
            "chunk_gated_delta_rule_cpu",
            "causal_conv1d_update_cpu",
        }
    ),
    "sgl_kernel": frozenset(
        {
            "assign_draft_cache_locs_contiguous_cpu",
            "assign_extend_cache_locs_cpu",
            "build_tree_kernel_efficient_cpu",
            "fill_accept_out_cache_loc_cpu",
            "fill_bonus_tokens_cpu",
            "verify_tree_greedy_cpu",
        }
    ),
}


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """req_to_token[req_pool_indices[i], start_offset[i]:end_offset[i]] = the i-th run of
    out_cache_loc (the runs lie back to back, in batch order)."""
    taken = 0
    for row, start, end in zip(
        req_pool_indices.tolist(), start_offset.tolist(), end_offset.tolist(), strict=True
    ):
        if not 0 <= start <= end <= pool_len:
            raise IndexError(f"token pool slice [{start}:{end}] outside a row of {pool_len}")
        count = end - start
        req_to_token[row, start:end] = out_cache_loc[taken : taken + count]
        taken += count


def _not_stood_in(name: str):
    def missing(*args, **kwargs):
        raise NotImplementedError(
            f"sgl_kernel.{name} was called, and the cookbook's CPU stand-in for sgl_kernel has no "
            "implementation of it: this model or flag needs a kernel only CUDA or an AMX CPU has"
        )

    missing.__name__ = name
    missing.default = missing  # torch.ops.sgl_kernel.NAME.default, as an OpOverload is used
    return missing


def copy_all_layer_kv_cache_cpu(*args, **kwargs):
    _not_stood_in("copy_all_layer_kv_cache_cpu")(*args, **kwargs)


def module_getattr(module: str):
    """The `__getattr__` of the stand-in package or one of its submodules."""

    def lookup(name: str):
        if name in IMPORTED_AT_LOAD.get(module, ()):
            return _not_stood_in(
                f"{module.removeprefix('sgl_kernel').lstrip('.')}.{name}".lstrip(".")
            )
        raise AttributeError(f"module {module!r} has no attribute {name!r} (cookbook CPU stand-in)")

    return lookup


__getattr__ = module_getattr(__name__)


class _OpNamespace:
    """torch.ops.sgl_kernel: the names SGLang reads at import, none of them implemented."""

    def __getattr__(self, name: str):
        if name not in READ_AT_IMPORT:
            raise AttributeError(f"torch.ops.sgl_kernel has no {name} (cookbook CPU stand-in)")
        op = _not_stood_in(name)
        setattr(self, name, op)
        return op


torch.ops.sgl_kernel = _OpNamespace()
