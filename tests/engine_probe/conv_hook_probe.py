"""Runs inside the SGLang environment: imports SGLang's LFM2 model module, as a server does, and
prints one JSON object saying which causal-conv functions SGLang ended up holding. Run by
tests/test_sglang_cpu_standins.py with and without SGLANG_USE_CPU_ENGINE=1, the stand-ins'
folder on the PYTHONPATH both times.

    held:    "module.attribute" -> where the function it holds was defined ("MODULE.NAME"), for
             every loaded sglang module attribute that is one of the two Triton entry points
             or one of their stand-ins (whatever name it was imported under)
    lfm2:    the names sglang.srt.models.lfm2 imported, the same way
    wrapper: what sglang.srt.layers.attention.mamba.causal_conv1d dispatches to off CUDA
    signatures: entry point -> {"sglang": ..., "stand_in": ...}, each parameter as
             [name, kind, default]; "sglang" is SGLang's own only where nothing replaced it
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import types

import sglang.srt.models.lfm2 as lfm2
from sglang.srt.layers.attention.mamba import causal_conv1d as wrapper

TRITON = "sglang.kernels.ops.mamba.causal_conv1d_triton"
ENTRY_POINTS = ("causal_conv1d_fn", "causal_conv1d_update")


def origin(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def is_conv_entry_point(value) -> bool:
    return (
        isinstance(value, types.FunctionType)
        and value.__name__ in ENTRY_POINTS
        and value.__module__ in (TRITON, "cookbook_causal_conv1d")
    )


def parameters(fn) -> list[list[str]]:
    return [
        [p.name, p.kind.name, "" if p.default is p.empty else repr(p.default)]
        for p in inspect.signature(fn).parameters.values()
    ]


held = {}
for name, module in list(sys.modules.items()):
    if not name.startswith("sglang") or module is None:
        continue
    for attribute, value in list(vars(module).items()):
        if is_conv_entry_point(value):
            held[f"{name}.{attribute}"] = origin(value)

triton_module = sys.modules[TRITON]
loaded = sorted(m for m in ("cookbook_causal_conv1d", "cookbook_cpu_hooks") if m in sys.modules)
stand_in = importlib.import_module("cookbook_causal_conv1d")  # on the PYTHONPATH either way
json.dump(
    {
        "held": held,
        "lfm2": {
            "causal_conv1d_update_triton": origin(lfm2.causal_conv1d_update_triton),
            "causal_conv1d_fn": origin(lfm2.causal_conv1d_fn),
            "causal_conv1d_update": origin(lfm2.causal_conv1d_update),
        },
        "wrapper": {
            "_causal_conv1d_fn_triton": origin(wrapper._causal_conv1d_fn_triton),
            "_causal_conv1d_update_triton": origin(wrapper._causal_conv1d_update_triton),
            "_HAS_CONV1D_KERNEL": wrapper._HAS_CONV1D_KERNEL,
        },
        "marked_stand_in": getattr(triton_module, "COOKBOOK_CPU_STAND_IN", False),
        "stand_in_modules_loaded": loaded,
        "sgl_kernel": getattr(sys.modules.get("sgl_kernel"), "__version__", None),
        "signatures": {
            name: {
                "sglang": parameters(getattr(triton_module, name)),
                "stand_in": parameters(getattr(stand_in, name)),
            }
            for name in ENTRY_POINTS
        },
    },
    sys.stdout,
)
