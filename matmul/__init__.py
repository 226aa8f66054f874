"""Transformer matmul kernels in Apache TVM: build, schedule, run, verify.

Typical use::

    from matmul import kernel_shape, build, verify
    k = build("full", kernel_shape("qkv", 128))
    verify(k)              # raises VerificationError on a wrong result
    print(k.source("asm"))

The package is layered; each layer imports only the layers below it:

1. :mod:`matmul.core`: hardware facts, workloads, the kernel, verification,
   compile and run, the variant registry, files and provenance;
2. :mod:`matmul.schedules`: the schedule families, each registering itself;
3. :mod:`matmul.measure`: timing, references, the interleaved timer and
   the studies built on it;
4. :mod:`matmul.report`: tables and plots from saved runs;
5. :mod:`matmul.cli`: ``python -m matmul``.
"""

from .core import pools  # noqa: F401  (first: sets the pools' idle spin before NumPy and TVM load)

# isort: split
from . import schedules  # noqa: F401  (registers every schedule family)
from .core.gpu import GpuSpec, gpu_present, gpu_spec
from .core.hardware import (
    HardwareError,
    HostFacts,
    configure_runtime_threads,
    facts_for,
    host_facts,
    resolve_target,
)
from .core.kernel import DTYPES, GPU_DTYPES, LAYOUTS, matmul_func, matmul_module
from .core.registry import Variant, get_variant, register, schedule, variant_names
from .core.runner import CompiledKernel, CudaKernel, build, build_cached, build_gpu, count_vector_fma
from .core.verify import VerificationError, compare, make_inputs, reference, verify
from .core.workloads import (
    KERNELS,
    M_SWEEP,
    MODELS,
    MatmulShape,
    ModelConfig,
    Workload,
    bert_shapes,
    kernel_shape,
    workloads,
)
from .schedules.manual import Recipe

__all__ = [
    "DTYPES",
    "GPU_DTYPES",
    "KERNELS",
    "LAYOUTS",
    "MODELS",
    "M_SWEEP",
    "CompiledKernel",
    "CudaKernel",
    "GpuSpec",
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
    "build_gpu",
    "compare",
    "configure_runtime_threads",
    "count_vector_fma",
    "facts_for",
    "get_variant",
    "gpu_present",
    "gpu_spec",
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
