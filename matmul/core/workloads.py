"""Matmul workloads of Transformer models.

A Transformer encoder layer runs three distinct GEMMs per token batch of M
rows: the Q/K/V (and output) projections ``M x H x H``, the MLP expansion
``M x H x I`` and the MLP reduction ``M x I x H``, where H is the hidden size
and I the intermediate (feed-forward) size. So a model is one table row
``(hidden, intermediate)``; no weights are downloaded.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable, Iterator, Sequence

#: The M sweep of the seed research (sequence length x batch rows).
M_SWEEP: tuple[int, ...] = (16, 32, 64, 96, 128, 192, 256, 384)


def positive_int(value: object, what: str = "value") -> int:
    """``value`` as an int if it is a positive integer; a ValueError naming ``what`` otherwise.

    bool is an Integral but never a size; floats like 8.0 are refused too,
    because a silently truncated 8.5 would build the wrong kernel.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{what} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def parse_positive_int(text: str, what: str | None = None) -> int:
    """A positive integer from text (a command-line option); a ValueError naming ``what`` and the text otherwise."""
    prefix = f"{what}: " if what else ""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{prefix}{text!r} is not an integer") from None
    if value <= 0:
        raise ValueError(f"{prefix}{text!r} must be positive")
    return value


@dataclasses.dataclass(frozen=True, order=True)
class MatmulShape:
    """``C[M, N] = A[M, K] @ B[K, N]``; every extent a positive integer.

    Raises
    ------
    ValueError
        Naming the field (``M``, ``K`` or ``N``) that is not a positive integer.
    """

    M: int
    K: int
    N: int

    def __post_init__(self) -> None:
        for name in ("M", "K", "N"):
            object.__setattr__(self, name, positive_int(getattr(self, name), name))

    @property
    def flops(self) -> int:
        """Floating-point operations of one matmul (one multiply + one add per MAC)."""
        return 2 * self.M * self.N * self.K

    def __str__(self) -> str:
        return f"{self.M}x{self.K}x{self.N}"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The sizes of a Transformer layer: hidden and intermediate fix its GEMM shapes, heads its attention."""

    name: str
    hidden: int
    intermediate: int
    heads: int = 1

    def __post_init__(self) -> None:
        positive_int(self.hidden, "hidden")
        positive_int(self.intermediate, "intermediate")
        positive_int(self.heads, "heads")
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not a multiple of heads {self.heads}")


# Sizes from the models' published configurations (hidden_size, intermediate_size, num_attention_heads).
MODELS: dict[str, ModelConfig] = {
    m.name: m
    for m in (
        ModelConfig("bert-base", 768, 3072, 12),
        ModelConfig("bert-large", 1024, 4096, 16),
        ModelConfig("distilbert", 768, 3072, 12),
        ModelConfig("roberta-large", 1024, 4096, 16),
        ModelConfig("albert-xxlarge", 4096, 16384, 64),
        ModelConfig("gpt2-medium", 1024, 4096, 16),
        ModelConfig("t5-small", 512, 2048, 8),
        ModelConfig("vit-huge", 1280, 5120, 16),
        ModelConfig("llama2-7b", 4096, 11008, 32),
    )
}

#: The GEMMs of one Transformer layer, by name, with what they compute.
KERNELS: dict[str, str] = {
    "qkv": "Q/K/V projection: M x hidden x hidden",
    "mlp_expand": "MLP expansion: M x hidden x intermediate",
    "mlp_reduce": "MLP reduction: M x intermediate x hidden",
}


def _lookup(kind: str, name: str, table: Iterable[str]) -> None:
    known = sorted(table)
    if name not in known:
        raise ValueError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(known)}")


def model_config(model: str | ModelConfig) -> ModelConfig:
    """Return a :class:`ModelConfig` by name (or pass one through)."""
    if isinstance(model, ModelConfig):
        return model
    _lookup("model", model, MODELS)
    return MODELS[model]


def kernel_shape(kernel: str, M: int, model: str | ModelConfig = "bert-base") -> MatmulShape:
    """Shape of one Transformer GEMM.

    Parameters
    ----------
    kernel : {"qkv", "mlp_expand", "mlp_reduce"}
    M : int
        Rows (tokens in the batch).
    model : str or ModelConfig
        A name from :data:`MODELS` or a custom configuration.
    """
    _lookup("kernel", kernel, KERNELS)
    cfg = model_config(model)
    h, i = cfg.hidden, cfg.intermediate
    k, n = {"qkv": (h, h), "mlp_expand": (h, i), "mlp_reduce": (i, h)}[kernel]
    return MatmulShape(M, k, n)


@dataclasses.dataclass(frozen=True)
class Workload:
    """A named shape: which kernel of which model at which M."""

    kernel: str
    M: int
    model: str = "bert-base"

    @property
    def shape(self) -> MatmulShape:
        return kernel_shape(self.kernel, self.M, self.model)

    @property
    def id(self) -> str:
        prefix = "" if self.model == "bert-base" else f"{self.model}-"
        return f"{prefix}{self.kernel}-M{self.M}"


@dataclasses.dataclass(frozen=True)
class ShapeWorkload:
    """An explicit M x K x N outside the model rows (a LoRA rank, a classifier head), named like a Workload."""

    given: MatmulShape
    kernel: str = "shape"
    model: str = ""

    @property
    def M(self) -> int:
        return self.given.M

    @property
    def shape(self) -> MatmulShape:
        return self.given

    @property
    def id(self) -> str:
        return f"M{self.given.M}xK{self.given.K}xN{self.given.N}"


def workloads(
    kernels: Sequence[str] | None = None,
    m_values: Sequence[int] | None = None,
    model: str = "bert-base",
) -> Iterator[Workload]:
    """Kernel x M grid (default, for None: the 24 BERT-base shapes), kernels outermost.

    Raises
    ------
    ValueError
        An unknown kernel or model, an M that is not a positive integer, or
        an empty list (None means "all"; an empty list is a mistake, never
        silently "all").
    """
    for what, given in (("kernels", kernels), ("M values", m_values)):
        if given is not None and len(given) == 0:
            raise ValueError(f"no {what} given; leave the option out for the default")
    model_config(model)
    for kernel in tuple(KERNELS) if kernels is None else kernels:
        _lookup("kernel", kernel, KERNELS)
        for m in M_SWEEP if m_values is None else m_values:
            positive_int(m, "M")
            yield Workload(kernel, int(m), model)


def bert_shapes() -> list[Workload]:
    """The 24 BERT-base shapes of the seed research (3 kernels x 8 M values)."""
    return list(workloads())


def identify(shape: MatmulShape) -> tuple[str, str]:
    """``(model, kernel)`` of a Transformer shape by its K and N, else ``("", "K<K>xN<N>")``."""
    for model in MODELS:
        for kernel in KERNELS:
            s = kernel_shape(kernel, shape.M, model)
            if (s.K, s.N) == (shape.K, shape.N):
                return model, kernel
    return "", f"K{shape.K}xN{shape.N}"


def kernel_of(label: str) -> str:
    """The kernel part of a workload id: ``qkv-M16`` -> ``qkv``; any other label is its own group."""
    head, sep, tail = label.rpartition("-M")
    return head if sep and tail.isdigit() else label
