"""Schedule variants, in one registry keyed by name.

The registry knows nothing about any schedule family. Each family (the
seed's manual recipes, the rules, MetaSchedule, the learned model) lives in
its own module under :mod:`matmul.schedules` and registers itself here with
:func:`register` (or :func:`register_parametric` for a family whose names
take knobs, ``base[knob=value,...]``), as a dlight rule is one file plus one
import line.

A variant's contract is ``apply(sch, ctx)``: transform a
``tvm.s_tir.Schedule`` of the canonical kernel in place, or return a new
Schedule of the same function (a rule that schedules its own copy, as
dlight's do). Optional hooks:

* ``decisions(ctx) -> dict``: the concrete choices for one shape, saved with
  every benchmark; keys named in ``info_keys`` are also promoted to the
  benchmark's ``extra_info``.
* ``available(ctx) -> str | None``: why the variant cannot serve this case
  (None when it can), so the bench grid, the report and the CLI skip a case
  with the family's own reason and hold no family-specific code.

A variant may be *declared illegal*: applying it raises
``tvm.s_tir.ScheduleError``, and :attr:`Variant.illegal_because` holds the
phrase TVM's message contains, so tests can hold the registry to its word.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from tvm.s_tir import Schedule, ScheduleError

from .gpu import GpuSpec, gpu_spec
from .hardware import HostFacts, host_facts
from .kernel import BLOCK, DTYPES, LAYOUTS, check_dtype, check_layout, matmul_module
from .workloads import MatmulShape


@dataclasses.dataclass(frozen=True)
class ScheduleContext:
    """Everything a variant may look at besides the schedule itself."""

    shape: MatmulShape
    dtype: str
    layout: str
    facts: HostFacts
    #: The matmul block to schedule: ``C`` in the canonical kernel; a Relax model's fused function names it
    #: otherwise (``NT_matmul``). Its loops are ``[batch..., i, j, k]``: batched matmuls (attention) lead
    #: with their batch loops, which a variant leaves outermost.
    block: str = BLOCK
    #: The GPU a ``cuda`` variant schedules for; None for the CPU variants.
    gpu: GpuSpec | None = None
    #: How many matmuls of ``shape`` the block computes (the product of its batch loops); 1 for a kernel.
    slices: int = 1
    #: B is a constant (a model's weight) whose layout the caller chooses: a variant that packs B may read it
    #: pre-packed instead, and the caller packs it once (see ``matmul.schedules.rules.apply_config``).
    b_constant: bool = False


#: Target kinds a variant can be for: ``llvm`` (the host CPU) or ``cuda``.
TARGETS: tuple[str, ...] = ("llvm", "cuda")

ApplyFn = Callable[[Schedule, ScheduleContext], "Schedule | None"]


class Unavailable(LookupError):
    """A variant cannot serve this case (for example: no tuning record for it); the message says why."""


class VariantNameError(ValueError):
    """A variant name of the form ``base[knob=value,...]`` is malformed."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named way to schedule the canonical matmul.

    Attributes
    ----------
    name : str
        Registry key; also the benchmark parametrize id.
    family : str
        For example ``manual`` (seed variants), ``rule`` (hardware-aware
        rules), ``search`` (MetaSchedule), ``learned`` (ML-predicted).
    apply : callable
        ``apply(sch, ctx)``; transforms the schedule in place.
    summary : callable
        ``summary(facts) -> str``: the transforms, in words.
    illegal_because : str, optional
        For a declared-illegal variant, a phrase of the ``ScheduleError``
        message that applying it raises. None for legal variants.
    decisions : callable, optional
        ``decisions(ctx) -> dict``: the concrete choices (tiles, vector
        width, threads) for one shape; recorded with every benchmark.
    needs_record : bool
        True for a variant that replays a tuning record: it schedules only
        the shapes its database holds, so callers that schedule arbitrary
        shapes leave it out (``variant_names(standalone=True)``).
    available : callable, optional
        ``available(ctx) -> str | None``: a reason the variant cannot serve
        this case, or None. Cheap (files only, nothing built).
    info_keys : tuple of str
        Keys of :attr:`decisions` that the benchmark also saves at the top of
        its ``extra_info`` (for example the learned variant's ``fallback``).
    target : {"llvm", "cuda"}
        The target kind the variant schedules for. CPU callers
        (``variant_names()`` by default) see only ``llvm`` variants.
    dtypes, layouts : tuple of str
        The element types and layouts the variant declares legal; any other
        is refused with a ``ValueError`` naming these.
    b_constant : bool
        The default of the context's ``b_constant`` for this variant: B a
        constant packed once by the caller (a model's weight, packed when
        the model is loaded). Callers may also ask any variant for it
        (``schedule(..., b_constant=True)``).
    relayout_b : callable, optional
        ``relayout_b(b, ctx) -> array``: the caller's B as the kernel built
        under ``ctx`` reads it (B itself unless ``ctx.b_constant`` made the
        variant read B re-laid); applied once, outside any timed call (see
        :func:`relayout_b`).
    """

    name: str
    family: str
    apply: ApplyFn
    summary: Callable[[HostFacts], str]
    illegal_because: str | None = None
    decisions: Callable[[ScheduleContext], dict[str, Any]] | None = None
    needs_record: bool = False
    available: Callable[[ScheduleContext], str | None] | None = None
    info_keys: tuple[str, ...] = ()
    target: str = "llvm"
    dtypes: tuple[str, ...] = DTYPES
    layouts: tuple[str, ...] = LAYOUTS
    b_constant: bool = False
    relayout_b: Callable[[np.ndarray, ScheduleContext], np.ndarray] | None = None

    @property
    def legal(self) -> bool:
        return self.illegal_because is None


_REGISTRY: dict[str, Variant] = {}
#: Families whose names take knob overrides, ``base[knob=value,...]``:
#: base name -> factory(overrides) -> Variant.
_PARAMETRIC: dict[str, Callable[[dict[str, Any]], Variant]] = {}


def register(variant: Variant) -> Variant:
    """Add a variant to the registry; a duplicate name is a ``ValueError``."""
    if variant.name in _REGISTRY:
        raise ValueError(f"variant {variant.name!r} is already registered")
    _REGISTRY[variant.name] = variant
    return variant


def unregister(name: str) -> None:
    """Remove a variant (and its parametric form, if any); for tests that register a toy family."""
    _REGISTRY.pop(name, None)
    _PARAMETRIC.pop(name, None)


def register_parametric(base: str, factory: Callable[[dict[str, Any]], Variant]) -> Variant:
    """Register ``factory({})`` under ``base`` and let ``base[knob=value,...]`` build pinned copies.

    The factory checks the knobs itself and raises a ``ValueError`` subclass
    naming the bad one.
    """
    variant = register(factory({}))
    _PARAMETRIC[base] = factory
    return variant


def variant_names(
    *, legal_only: bool = False, family: str | None = None, standalone: bool = False, target: str | None = "llvm"
) -> list[str]:
    """Registered names in registration order, optionally filtered.

    ``standalone=True`` leaves out variants that need a tuning record, for
    callers that schedule arbitrary shapes. ``target`` keeps one target
    kind's variants (default: the CPU's, ``llvm``); None keeps all.
    """
    if target is not None and target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    return [
        v.name
        for v in _REGISTRY.values()
        if (v.legal or not legal_only) and (family is None or v.family == family)
        and not (standalone and v.needs_record) and (target is None or v.target == target)
    ]


_NAME = re.compile(r"^(?P<base>[A-Za-z_][\w]*)\[(?P<body>[^\]]*)\]$")


def parse_name(name: str) -> tuple[str, dict[str, Any]] | None:
    """``"rule_based[tk=64,order=ifirst]"`` -> ``("rule_based", {"tk": 64, "order": "ifirst"})``.

    Returns None when ``name`` has no bracket. Values are ints where they
    parse, booleans for ``true/false/on/off/yes/no``, strings otherwise. The
    knob names are the family's to check.

    Raises
    ------
    VariantNameError
        An item without ``=``, or a knob given twice.
    """
    m = _NAME.match(name)
    if not m:
        return None
    out: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in m["body"].split(","))):
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise VariantNameError(f"bad override {item!r} in {name!r}; write knob=value")
        if key in out:
            raise VariantNameError(f"knob {key!r} is given twice in {name!r}; give each knob once")
        low = raw.lower()
        if low in ("true", "on", "yes"):
            out[key] = True
        elif low in ("false", "off", "no"):
            out[key] = False
        else:
            try:
                out[key] = int(raw)
            except ValueError:
                out[key] = raw
    return m["base"], out


def get_variant(name: str) -> Variant:
    """Look a variant up by name.

    A parametric variant also answers to ``base[knob=value,...]`` (for example
    ``rule_based[tk=64,jpack=16]``), which pins those knobs.

    Raises
    ------
    ValueError
        For an unknown name (the message lists every known variant) or a bad
        override (the message lists the knobs).
    """
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    parsed = parse_name(name) if isinstance(name, str) and name.split("[", 1)[0] in _PARAMETRIC else None
    if parsed is not None:
        return _PARAMETRIC[parsed[0]](parsed[1])
    raise ValueError(f"unknown variant {name!r}; known variants: {', '.join(_REGISTRY)}")


def _context(
    v: Variant, shape: MatmulShape, dtype: str, layout: str, facts: HostFacts | None, gpu: GpuSpec | None = None,
    b_constant: bool | None = None,
) -> ScheduleContext:
    check_dtype(dtype, v.dtypes)
    check_layout(layout)
    if layout not in v.layouts:
        raise ValueError(f"variant {v.name!r} does not serve layout {layout!r}; it serves: {', '.join(v.layouts)}")
    if v.target == "cuda":
        gpu = gpu or gpu_spec()
    elif gpu is not None:
        raise ValueError(f"variant {v.name!r} is for the CPU (llvm), not {gpu.arch}; "
                         f"CUDA variants: {', '.join(variant_names(target='cuda')) or 'none registered'}")
    return ScheduleContext(shape, dtype, layout, facts or host_facts(), gpu=gpu,
                           b_constant=v.b_constant if b_constant is None else b_constant)


def relayout_b(variant: str, shape: MatmulShape, b: np.ndarray, *, dtype: str = "float32", layout: str = "NN",
               facts: HostFacts | None = None, b_constant: bool | None = None) -> np.ndarray:
    """B as ``variant``'s kernel reads it: re-laid once by the caller where B is a constant the variant reads
    pre-packed (its weight-packing, done when a model is loaded), else ``b`` itself. ``b_constant`` None: the
    variant's default."""
    v = get_variant(variant)
    ctx = _context(v, shape, dtype, layout, facts, b_constant=b_constant)
    return v.relayout_b(b, ctx) if ctx.b_constant and v.relayout_b is not None else b


def variant_decisions(
    variant: str, shape: MatmulShape, *, dtype: str = "float32", layout: str = "NN", facts: HostFacts | None = None,
    gpu: GpuSpec | None = None, b_constant: bool | None = None,
) -> dict[str, Any]:
    """A variant's concrete choices for one shape (empty if it records none)."""
    v = get_variant(variant)
    if v.decisions is None:
        return {}
    return v.decisions(_context(v, shape, dtype, layout, facts, gpu, b_constant))


def unavailable(
    variant: str, shape: MatmulShape, *, dtype: str = "float32", layout: str = "NN", facts: HostFacts | None = None,
    gpu: GpuSpec | None = None,
) -> str | None:
    """Why ``variant`` cannot serve this case (from its ``available`` hook), or None if it can."""
    v = get_variant(variant)
    if v.available is None:
        return None
    return v.available(_context(v, shape, dtype, layout, facts, gpu))


def schedule(
    variant: str,
    shape: MatmulShape,
    *,
    dtype: str = "float32",
    layout: str = "NN",
    facts: HostFacts | None = None,
    debug_mask: str | int = "all",
    gpu: GpuSpec | None = None,
    b_constant: bool | None = None,
) -> Schedule:
    """Build the canonical kernel and apply a variant to it.

    Parameters
    ----------
    variant : str
        A registered name (see :func:`variant_names`).
    shape : MatmulShape
    dtype, layout : str
        See :mod:`matmul.core.kernel`.
    facts : HostFacts, optional
        Hardware facts; default: the host.
    debug_mask : str or int
        ``"all"`` verifies the IR after every primitive (cheap for one block).
    gpu : GpuSpec, optional
        The GPU a ``cuda`` variant schedules for (default: this machine's GPU,
        else the nominal part of the default arch); refused for CPU variants.
    b_constant : bool, optional
        B is a constant the caller packs once (a model's weight): a variant
        that packs B reads it pre-packed instead (:func:`relayout_b` gives
        the array to pass). None: the variant's default.

    Raises
    ------
    ValueError
        Unknown variant, a dtype or layout the variant does not declare, or a
        GPU given to a CPU variant.
    tvm.s_tir.ScheduleError
        The variant is illegal for this kernel (declared-illegal variants
        always raise; the note added to the error says so).
    """
    v = get_variant(variant)
    ctx = _context(v, shape, dtype, layout, facts, gpu, b_constant)
    sch = Schedule(matmul_module(shape, ctx.dtype, ctx.layout), debug_mask=debug_mask)
    try:
        done = v.apply(sch, ctx)
    except ScheduleError as err:
        if v.legal:
            err.add_note(f"variant {variant!r} failed to schedule {shape} ({dtype}, {layout})")
        else:
            err.add_note(f"variant {variant!r} is declared illegal: {v.illegal_because}")
        raise
    return done if isinstance(done, Schedule) else sch


__all__ = [
    "TARGETS",
    "ScheduleContext",
    "Unavailable",
    "Variant",
    "VariantNameError",
    "get_variant",
    "parse_name",
    "register",
    "register_parametric",
    "relayout_b",
    "schedule",
    "unavailable",
    "unregister",
    "variant_decisions",
    "variant_names",
]
