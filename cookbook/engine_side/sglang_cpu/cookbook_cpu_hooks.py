"""Puts the torch stand-ins in place in an SGLang process on a CPU (called from sitecustomize)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

CONV_MODULE = "sglang.kernels.ops.mamba.causal_conv1d_triton"
CONV_FUNCTIONS = ("causal_conv1d_fn", "causal_conv1d_update")


class PatchOnLoad(importlib.abc.MetaPathFinder):
    """When the module `name` is loaded, `patch(module)` runs right after the module's own code,
    before anything else can import names from it. (The test probe of SGLang's routes uses it
    too: tests/engine_probe/sglang_site.)"""

    def __init__(self, name: str, patch):
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            self.patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _torch_conv(module) -> None:
    import cookbook_causal_conv1d as torch_conv

    for name in CONV_FUNCTIONS:
        setattr(module, name, getattr(torch_conv, name))
    module.COOKBOOK_CPU_STAND_IN = True


class _StandIns(PatchOnLoad):
    """Before SGLang's first module loads, the `sgl_kernel` stand-in (and with it the
    torch.ops.sgl_kernel namespace some modules read at import); when SGLang's Triton conv module
    loads, its two kernel entry points replaced by the torch ones, before any other module copies
    them (`from ... import causal_conv1d_fn`)."""

    def __init__(self):
        super().__init__(CONV_MODULE, _torch_conv)
        self.kernel_package_loaded = False

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("sglang"):
            return None
        if not self.kernel_package_loaded:
            self.kernel_package_loaded = True
            import sgl_kernel  # noqa: F401  (the stand-in: this folder comes first on the path)
        return super().find_spec(fullname, path, target)


def install() -> None:
    if not any(isinstance(f, _StandIns) for f in sys.meta_path):
        sys.meta_path.insert(0, _StandIns())
