"""Transformer matmul kernels in Apache TVM: build, schedule, run, verify.

Typical use::

    from matmul import kernel_shape, build, verify
    k = build("full", kernel_shape("qkv", 128))
    verify(k)              # raises VerificationError on a wrong result
    print(k.source("asm"))
"""

from .hardware import HardwareError, HostFacts, configure_runtime_threads, facts_for, host_facts, resolve_target
from .kernel import DTYPES, LAYOUTS, matmul_func, matmul_module
from .runner import CompiledKernel, build, build_cached, count_vector_fma
from .variants import Recipe, Variant, get_variant, register, schedule, variant_names
from .verify import VerificationError, compare, make_inputs, reference, verify
from .workloads import KERNELS, M_SWEEP, MODELS, MatmulShape, ModelConfig, Workload, bert_shapes, kernel_shape, workloads

__all__ = [
    "DTYPES",
    "KERNELS",
    "LAYOUTS",
    "MODELS",
    "M_SWEEP",
    "CompiledKernel",
    "HardwareError",
    "HostFacts",
    "MatmulShape",
    "ModelConfig",
    "Recipe",
    "Variant",
    "VerificationError",
    "Workload",
    "bert_shapes",
    "build",
    "build_cached",
    "compare",
    "configure_runtime_threads",
    "count_vector_fma",
    "facts_for",
    "get_variant",
    "host_facts",
    "kernel_shape",
    "make_inputs",
    "matmul_func",
    "matmul_module",
    "reference",
    "register",
    "resolve_target",
    "schedule",
    "variant_names",
    "verify",
    "workloads",
]
