"""One timed thing per (name, shape, layout): a TVM variant or a vendor reference.

:func:`prepare` builds (or binds) it, proves its output against the float64
NumPy reference, and hands back a zero-argument call with its inputs already
bound, so whoever times it (pytest-benchmark, the paired comparison) times
the kernel and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.hardware import HostFacts, host_facts
from ..core.hotloop import AsmError
from ..core.kernel import check_dtype, check_layout
from ..core.memory import operand_copy
from ..core.registry import get_variant, variant_decisions, variant_names
from ..core.runner import CompiledKernel, build, build_cached, compile_module
from ..core.verify import check_calls, make_inputs
from ..core.workloads import MatmulShape
from ..schedules.metaschedule.database import best_record
from ..schedules.metaschedule.traces import record_decisions
from .references import get_reference, is_reference, reference_names

log = logging.getLogger(__name__)


def candidate_names() -> list[str]:
    """Every legal TVM variant, then every vendor reference."""
    return variant_names(legal_only=True) + reference_names()


def check_candidate(name: str) -> str:
    """``"tvm"`` or ``"reference"``; a ValueError that lists the choices otherwise."""
    if is_reference(name):
        return "reference"
    try:
        v = get_variant(name)
    except ValueError:
        if "[" in name and name.split("[", 1)[0] in variant_names():
            raise  # a known family with a bad knob: its own message says which
        raise ValueError(f"unknown variant {name!r}; choose from: {', '.join(candidate_names())}") from None
    if not v.legal:
        raise ValueError(
            f"variant {name!r} is declared illegal ({v.illegal_because}); choose from: {', '.join(candidate_names())}"
        )
    return "tvm"


@dataclass
class Candidate:
    """A verified, ready-to-time matmul for one shape."""

    name: str
    kind: str  # "tvm" or "reference"
    shape: MatmulShape
    layout: str
    call: Callable[[], object]
    threads: int
    decisions: dict[str, Any] = field(default_factory=dict)
    family: str = "vendor"  # the variant's family; "vendor" for a reference
    #: What the family promotes from its decisions into a benchmark's extra_info (``Variant.info_keys``).
    promoted: dict[str, Any] = field(default_factory=dict)
    kernel: CompiledKernel | None = None
    args: tuple | None = None
    _pool: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext

    def describe(self) -> dict[str, Any]:
        """What a benchmark saves about this candidate: kind, family, threads, decisions, the promoted keys and,
        for a TVM kernel, its ``code`` (a digest of its assembly) and hot loop (:mod:`~matmul.core.hotloop`; None
        for a kernel with no packed FMA)."""
        out = {"kind": self.kind, "family": self.family, "threads": self.threads, "decisions": self.decisions,
               **self.promoted}
        if self.kernel is not None:
            out["hot_loop"] = None
            try:
                out["code"] = self.kernel.code_id()
                out["hot_loop"] = self.kernel.hot_loop().as_dict()
            except AsmError:  # no loop of packed FMAs (a scalar kernel)
                pass
            except Exception as err:  # noqa: BLE001 - a reader's failure must not cost the group its timings
                log.warning("assembly of %s on %s unread: %s", self.name, self.shape, err)
        return out

    def pool(self) -> contextlib.AbstractContextManager:
        """Context in which the call runs with its intended thread count."""
        return self._pool()

    def native_timer(self, number: int = 1) -> Callable[[], float]:
        """Per-call seconds of ``number`` calls of the kernel on the bound tensors, timed by TVM's own
        ``time_evaluator`` (which makes one untimed warm-up call first).

        Raises
        ------
        TypeError
            For a vendor reference, which TVM cannot time.
        """
        if self.kernel is None or self.args is None:
            raise TypeError(f"{self.name!r} is not a TVM kernel; only TVM kernels have a native timer")
        ev = self.kernel.evaluator(number=number, repeat=1)
        args = self.args
        return lambda: float(ev(*args).results[0])


def prepare(
    name: str,
    shape: MatmulShape,
    *,
    layout: str = "NN",
    dtype: str = "float32",
    facts: HostFacts | None = None,
    seed: int = 0,
    fresh: bool = False,
    b_constant: bool | None = None,
) -> Candidate:
    """Build or bind ``name`` for ``shape``, check its output, bind the inputs.

    ``fresh`` builds a TVM variant anew instead of reusing this process's
    cached build (the A/A control needs a second, separate copy). ``b_constant``
    builds it taking B as a weight packed once (always a fresh build; see
    :func:`~matmul.core.registry.schedule`).

    Raises
    ------
    ValueError
        Unknown or illegal name, bad layout or dtype.
    RuntimeError
        A reference that is not installed (the message says how to install it).
    VerificationError
        The output is wrong; nothing should time it.
    """
    kind = check_candidate(name)
    check_layout(layout)
    check_dtype(dtype)
    facts = facts or host_facts()
    threads = facts.runtime_threads
    a, b = make_inputs(shape, dtype=dtype, layout=layout, seed=seed)
    if kind == "tvm":
        variant = get_variant(name)
        decisions = variant_decisions(name, shape, dtype=dtype, layout=layout, facts=facts, b_constant=b_constant)
        kernel = (build(name, shape, dtype=dtype, layout=layout, facts=facts, b_constant=b_constant)
                  if fresh or b_constant is not None else build_cached(name, shape, dtype, layout))
        cand = _bind(name, kernel, decisions, a, b, variant.family)
        cand.promoted = {k: decisions[k] for k in variant.info_keys if k in decisions}
        return cand
    ref = get_reference(name)
    call, output = ref.prepare(operand_copy(a), operand_copy(b), layout, threads)  # as a TVM kernel's operands
    with ref.threads(threads):
        check_calls(call, output, a, b, layout=layout, what=f"{name} on {shape} ({layout})")
    return Candidate(name, kind, shape, layout, call, threads, {"library": ref.summary, "threads": threads},
                     _pool=lambda: ref.threads(threads))


def _bind(name: str, kernel: CompiledKernel, decisions: dict[str, Any], a, b, family: str) -> Candidate:
    """A compiled kernel as a verified candidate, its tensors bound once."""
    ta, tb, tc = kernel.tensors(a, b)
    func = kernel.func  # fetched once, outside any timed call

    def call() -> object:
        return func(ta, tb, tc)

    check_calls(call, tc.numpy, a, b, layout=kernel.layout, what=f"{name} on {kernel.shape} ({kernel.layout})")
    return Candidate(name, "tvm", kernel.shape, kernel.layout, call, kernel.facts.runtime_threads, decisions, family,
                     kernel=kernel, args=(ta, tb, tc))


def prepare_record(
    name: str,
    shape: MatmulShape,
    root: str | Path,
    *,
    layout: str = "NN",
    dtype: str = "float32",
    facts: HostFacts | None = None,
    seed: int = 0,
) -> Candidate:
    """MetaSchedule's best record for ``shape`` from the databases under ``root``, as a candidate named ``name``.

    Like ``prepare("metaschedule", ...)``, but from any database folder (the
    ``--root`` of ``tune``), so two databases can be timed side by side.

    Raises
    ------
    NoRecordError
        ``root`` holds no record for the shape on this CPU profile.
    DatabaseError
        A file there is corrupt, or a record was tuned for another CPU.
    VerificationError
        The kernel built from the record computes the wrong product.
    """
    check_layout(layout)
    check_dtype(dtype)
    facts = facts or host_facts()
    rec, sch = best_record(shape, dtype=dtype, layout=layout, facts=facts, root=root)
    kernel = CompiledKernel(name, shape, dtype, layout, facts, compile_module(sch, facts.target()), sch.mod)
    decisions = record_decisions(rec, shape, dtype=dtype, layout=layout, facts=facts, root=root)
    decisions["root"] = str(root)
    a, b = make_inputs(shape, dtype=dtype, layout=layout, seed=seed)
    return _bind(name, kernel, decisions, a, b, "search")


__all__ = ["Candidate", "candidate_names", "check_candidate", "prepare", "prepare_record"]
