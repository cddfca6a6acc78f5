"""sgl_kernel.mamba: the names SGLang imports from it on a CPU, none implemented (see __init__)."""

from sgl_kernel import module_getattr

__getattr__ = module_getattr(__name__)
