"""Host hardware facts, detected in one place and passed to everything else.

Every schedule decision that depends on the machine (SIMD width, core count,
cache sizes, thread count) reads a :class:`HostFacts` built here; no other
module hard-codes a vector width or a thread count.

Detection rules
---------------
* ``mcpu`` comes from LLVM's host detection (``llvm_get_system_cpu``). The
  LLVM default ``generic`` disables AVX and is never used implicitly.
* ``num_cores`` counts physical cores (MetaSchedule requires ``num-cores`` in
  the target), limited by the process CPU affinity.
* ``simd_lanes_fp32`` is derived from the *target's* LLVM feature set, so an
  overridden ``mcpu`` changes it consistently (AVX-512: 16, AVX/AVX2: 8,
  SSE/NEON: 4). ``llvm_get_vector_width`` is not used: in TVM 0.27 it reports
  512 bits even for AVX2-only CPUs.
* The TVM runtime thread pool sizes itself from ``TVM_NUM_THREADS`` when it is
  first used, and otherwise halves the hardware threads on x86. We set the
  variable (default: physical cores) before the pool starts and check it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tvm
from tvm.target import codegen as _codegen

from .fma import half_rate_fma

log = logging.getLogger(__name__)

#: Environment variable that overrides the compilation target (a JSON object,
#: for example ``{"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 4}``).
TARGET_ENV = "MATMUL_TARGET"
#: Environment variable read by the TVM runtime thread pool.
THREADS_ENV = "TVM_NUM_THREADS"

# (LLVM feature, fp32 lanes), widest first.
_SIMD_TABLE: tuple[tuple[str, int], ...] = (
    ("avx512f", 16),
    ("avx", 8),
    ("sse2", 4),
    ("neon", 4),
    ("sve", 4),  # SVE length is not static; 128-bit is the architectural minimum
)
# ISA flags recorded in facts and benchmark machine info.
_ISA_FLAGS = ("sse2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
              "avx512vnni", "avx512bf16", "amx-tile", "neon", "sve", "sve2")


class HardwareError(RuntimeError):
    """The host or the requested target cannot be used as asked."""


@dataclasses.dataclass(frozen=True)
class HostFacts:
    """What the scheduler needs to know about the machine it compiles for.

    Attributes
    ----------
    cpu_model : str
        Marketing name from ``/proc/cpuinfo`` (or ``platform.processor()``).
    mcpu : str
        LLVM CPU name used in the target.
    triple : str
        LLVM target triple of the host.
    num_cores : int
        Physical cores usable by this process.
    logical_cpus : int
        Logical CPUs usable by this process.
    simd_lanes_fp32 : int
        fp32 lanes of the widest SIMD register the target enables.
    isa : tuple of str
        ISA extensions the target enables (subset of a fixed list).
    l1d_bytes, l2_bytes, l3_bytes : int or None
        Per-core L1 data and L2 cache size, shared L3 size; None if unknown.
    l2_ways : int or None
        The L2's associativity (ways per set); None if unknown (facts saved before it was recorded).
    half_rate_fma : bool or None
        The widest vectors' FMAs issue at half the rate of half-width ones (AVX-512 on 256-bit units), measured
        (:mod:`matmul.core.fma`); None if not measured (a target this host cannot run, facts saved before).
    runtime_threads : int
        Threads the TVM runtime pool uses (``TVM_NUM_THREADS``).
    target_overridden : bool
        True when the target came from the caller or ``MATMUL_TARGET``.
    """

    cpu_model: str
    mcpu: str
    triple: str
    num_cores: int
    logical_cpus: int
    simd_lanes_fp32: int
    isa: tuple[str, ...]
    l1d_bytes: int | None
    l2_bytes: int | None
    l3_bytes: int | None
    runtime_threads: int
    target_overridden: bool = False
    l2_ways: int | None = None
    half_rate_fma: bool | None = None
    #: Target attributes beyond kind, mcpu and num-cores (for example ``mattr``), as (name, JSON value) pairs.
    extra_target: tuple[tuple[str, str], ...] = ()
    #: Features the target enables that this host's CPU lacks: code built for it must not run here.
    missing_features: tuple[str, ...] = ()

    @property
    def arch(self) -> str:
        """Architecture family: ``x86_64``, ``aarch64`` or the raw triple head."""
        return self.triple.split("-", 1)[0]

    def target(self) -> tvm.target.Target:
        """The LLVM target for these facts: ``mcpu``, ``num-cores`` and every other attribute it was given."""
        spec = {"kind": "llvm", "mcpu": self.mcpu, "num-cores": self.num_cores}
        spec.update((k, json.loads(v)) for k, v in self.extra_target)
        return tvm.target.Target(spec)

    def check_runs_here(self) -> None:
        """Raise :class:`HardwareError` if code built for this target cannot run on this host."""
        if self.missing_features:
            raise HardwareError(f"the target {self.target()} enables {', '.join(self.missing_features)}, which this "
                                f"host's CPU ({self.cpu_model}) lacks: its code would fault here; build it for "
                                "another machine (tune over RPC) or choose a narrower target")

    @property
    def profile(self) -> str:
        """A short, file-name-safe name for this CPU profile.

        Two machines share a profile only when the scheduler would treat them
        the same: same ``mcpu``, core count, SIMD width and runtime threads.
        """
        extra = "".join(f"_{_slug(k, json.loads(v))}" for k, v in self.extra_target)
        return f"{self.mcpu}{extra}-{self.num_cores}c-simd{self.simd_lanes_fp32}-t{self.runtime_threads}"

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON view, for reports and benchmark machine info."""
        d = dataclasses.asdict(self)
        d["isa"] = list(self.isa)
        d["extra_target"] = [list(pair) for pair in self.extra_target]
        d["missing_features"] = list(self.missing_features)
        d["arch"] = self.arch
        d["profile"] = self.profile
        d["tvm_version"] = tvm.__version__
        d["tvm_ffi_version"] = _ffi_version()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HostFacts:
        """Rebuild facts saved by :meth:`as_dict` (derived keys such as ``profile`` are checked, not read).

        Raises
        ------
        HardwareError
            A field is missing or of the wrong type, or the saved profile is not the one the fields give.
        """
        if not isinstance(d, Mapping):
            raise HardwareError(f"saved facts must be a JSON object, not {type(d).__name__}")
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                if f.default is dataclasses.MISSING:
                    raise HardwareError(f"saved facts lack the field {f.name!r}")
                continue
            v = d[f.name]
            if f.name in ("isa", "missing_features"):
                ok = isinstance(v, list) and all(isinstance(x, str) for x in v)
                v = tuple(v) if ok else v
            elif f.name == "extra_target":
                ok = isinstance(v, list) and all(isinstance(x, list) and len(x) == 2 for x in v)
                v = tuple((str(a), str(b)) for a, b in v) if ok else v
            elif f.name in ("l1d_bytes", "l2_bytes", "l3_bytes", "l2_ways"):
                ok = v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0)
            elif f.name in ("num_cores", "logical_cpus", "simd_lanes_fp32", "runtime_threads"):
                ok = isinstance(v, int) and not isinstance(v, bool) and v > 0
            elif f.name in ("target_overridden", "half_rate_fma"):
                ok = isinstance(v, bool) or (v is None and f.default is None)  # None where it is the default
            else:
                ok = isinstance(v, str)
            if not ok:
                raise HardwareError(f"saved facts have {f.name}={v!r}, which is not a valid value")
            kw[f.name] = v
        facts = cls(**kw)
        if "profile" in d and d["profile"] != facts.profile:
            raise HardwareError(f"saved facts name profile {d['profile']!r}, but their fields give {facts.profile!r}")
        return facts


#: Target attributes the facts carry as fields of their own.
_BASE_TARGET_KEYS = {"kind", "mcpu", "num-cores", "keys", "tag"}


def _slug(key: str, value: Any) -> str:
    """A file-name-safe word for one extra target attribute: ``mattr ["-avx2", "+fma"]`` -> ``noavx2.fma``."""
    items = value if isinstance(value, list) else [value]
    words = [str(v).replace("-", "no", 1) if str(v).startswith("-") else str(v).lstrip("+") for v in items]
    text = ".".join(re.sub(r"[^A-Za-z0-9.]+", "", w) for w in words)
    return text if key == "mattr" else f"{re.sub(r'[^A-Za-z0-9]+', '', key)}.{text}"


def _ffi_version() -> str:
    try:
        from importlib.metadata import version

        return version("apache-tvm-ffi")
    except Exception:  # noqa: BLE001 - metadata lookup is best effort only
        return "unknown"


# --------------------------------------------------------------------------- threads
def _physical_cores() -> int:
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or affinity
    except ImportError:  # psutil is a declared dependency; stay usable without it
        physical = affinity
    return max(1, min(physical, affinity))


def _logical_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _parse_threads(raw: str) -> int:
    try:
        n = int(raw)
    except ValueError:
        raise HardwareError(f"{THREADS_ENV}={raw!r} is not an integer thread count") from None
    if n <= 0:
        raise HardwareError(f"{THREADS_ENV}={raw!r} must be a positive thread count")
    return n


def configure_runtime_threads(threads: int | None = None) -> int:
    """Make the TVM runtime pool use a known number of threads.

    Parameters
    ----------
    threads : int, optional
        Desired thread count. Default: ``TVM_NUM_THREADS`` if the user set it,
        else the number of physical cores.

    Returns
    -------
    int
        The thread count the runtime reports.

    Raises
    ------
    HardwareError
        If the runtime pool already started with another count (it reads the
        variable only once), or the variable is not a positive integer.
    """
    current = os.environ.get(THREADS_ENV)
    if threads is None:
        threads = _parse_threads(current) if current else _physical_cores()
    elif threads <= 0:
        raise HardwareError(f"thread count must be positive, got {threads}")
    cpus = _logical_cpus()
    if threads > cpus:
        # More threads than CPUs only adds contention to every figure (and TVM's pool hangs at ~1000).
        raise HardwareError(f"{threads} runtime threads requested ({THREADS_ENV}) but this process may use "
                            f"{cpus} CPU(s); choose a count from 1 to {cpus}")
    os.environ[THREADS_ENV] = str(threads)
    actual = int(tvm.runtime.num_threads())
    if actual != threads:
        # leave the variable describing the pool that actually runs
        os.environ[THREADS_ENV] = str(actual)
        raise HardwareError(
            f"the TVM runtime pool already runs {actual} thread(s) but {threads} were requested; "
            f"set {THREADS_ENV}={threads} before the first TVM kernel runs in this process"
        )
    return actual


# --------------------------------------------------------------------------- caches
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMG]?)i?B?\s*$", re.IGNORECASE)


def _parse_size(text: str) -> int | None:
    m = _SIZE_RE.match(text)
    if not m:
        return None
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2).upper()]
    return int(m.group(1)) * scale


def _cache_sizes(sysfs: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> dict[str, int]:
    """Per-instance cache sizes keyed ``L1d``, ``L2``, ``L3`` from sysfs, and the ways of each (``L2 ways``)."""
    sizes: dict[str, int] = {}
    if not sysfs.is_dir():
        return sizes
    for index in sorted(sysfs.glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = _parse_size((index / "size").read_text())
        except OSError:
            continue
        if size is None or kind == "Instruction":
            continue
        key = "L1d" if level == "1" else f"L{level}"
        if key in sizes:  # the first entry of a level gives its size and its ways
            continue
        sizes[key] = size
        try:
            ways = int((index / "ways_of_associativity").read_text().strip())
        except (OSError, ValueError):
            continue
        if ways > 0:
            sizes[f"{key} ways"] = ways
    return sizes


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# --------------------------------------------------------------------------- target
def simd_lanes_fp32(target: tvm.target.Target) -> int:
    """fp32 lanes of the widest vector unit the target's ``mcpu`` enables."""
    features = set(_codegen.llvm_get_cpu_features(target))
    for feature, lanes in _SIMD_TABLE:
        if feature in features:
            return lanes
    return 1


def resolve_target(target: tvm.target.Target | Mapping[str, Any] | str | None = None) -> tvm.target.Target:
    """Turn a user's target choice into a complete LLVM target.

    Parameters
    ----------
    target : Target, dict, JSON string or None
        None means ``MATMUL_TARGET`` if set, else the host. A dict or JSON
        object is completed with the host ``mcpu`` and ``num-cores`` when they
        are missing. TVM 0.27 refuses the old ``"llvm -mcpu=..."`` strings, so
        they are rejected here with a message that shows the accepted form.

    Raises
    ------
    ValueError
        For a target that is not LLVM, not parseable, or names an unknown CPU.
    """
    if target is None:
        raw = os.environ.get(TARGET_ENV)
        if not raw:
            return host_target()
        target = raw
    if isinstance(target, tvm.target.Target):
        spec: dict[str, Any] = {"kind": target.kind.name, **{k: _plain(v) for k, v in target.attrs.items()}}
    elif isinstance(target, str):
        try:
            spec = json.loads(target)
        except json.JSONDecodeError:
            raise ValueError(
                f"target {target!r} is not a JSON object; write it as "
                '{"kind": "llvm", "mcpu": "<cpu>", "num-cores": <n>}'
            ) from None
        if not isinstance(spec, dict):
            raise ValueError(f"target {target!r} must be a JSON object")
    elif isinstance(target, Mapping):
        spec = dict(target)
    else:
        raise ValueError(f"target must be a tvm Target, a dict or a JSON string, got {type(target).__name__}")
    kind = spec.get("kind")
    if kind != "llvm":
        raise ValueError(f"only CPU targets with kind 'llvm' are supported, got kind={kind!r}")
    spec.setdefault("mcpu", _codegen.llvm_get_system_cpu())
    spec.setdefault("num-cores", _physical_cores())
    if not isinstance(spec["num-cores"], int) or isinstance(spec["num-cores"], bool) or spec["num-cores"] <= 0:
        raise ValueError(f"target num-cores must be a positive integer, got {spec['num-cores']!r}")
    if not _codegen.llvm_is_valid_cpu(str(spec["mcpu"]), _codegen.llvm_get_system_triple()):
        raise ValueError(f"LLVM does not know mcpu={spec['mcpu']!r}; see `llc -mcpu=help` for the names")
    return tvm.target.Target(spec)


@functools.cache
def host_target() -> tvm.target.Target:
    """The LLVM target of this machine: detected ``mcpu`` and physical cores."""
    mcpu = _codegen.llvm_get_system_cpu()
    if not mcpu or mcpu == "generic":
        raise HardwareError(
            "LLVM could not detect the host CPU (it answered 'generic', which disables SIMD); "
            f"set {TARGET_ENV} to a JSON target with an explicit mcpu"
        )
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": _physical_cores()})


def facts_for(target: tvm.target.Target | Mapping[str, Any] | str | None = None) -> HostFacts:
    """Hardware facts for a target (default: the host, or ``MATMUL_TARGET``).

    Cache sizes and the CPU model always describe the host: an overridden
    target changes what the compiler emits, not the caches it runs on.
    """
    overridden = target is not None or bool(os.environ.get(TARGET_ENV))
    tgt = resolve_target(target)
    features = set(_codegen.llvm_get_cpu_features(tgt))
    host_features = set(_codegen.llvm_get_cpu_features(host_target())) if overridden else features
    extra = tuple(sorted((str(k), json.dumps(_plain(v))) for k, v in tgt.attrs.items() if k not in _BASE_TARGET_KEYS))
    caches = _cache_sizes()
    if "L1d" not in caches:
        log.warning("L1d cache size unknown on this host (no sysfs cache information); facts report None")
    facts = HostFacts(
        cpu_model=_cpu_model(),
        mcpu=str(tgt.attrs["mcpu"]),
        triple=_codegen.llvm_get_system_triple(),
        num_cores=int(tgt.attrs["num-cores"]),
        logical_cpus=_logical_cpus(),
        simd_lanes_fp32=simd_lanes_fp32(tgt),
        isa=tuple(f for f in _ISA_FLAGS if f in features),
        l1d_bytes=caches.get("L1d"),
        l2_bytes=caches.get("L2"),
        l3_bytes=caches.get("L3"),
        l2_ways=caches.get("L2 ways"),
        runtime_threads=configure_runtime_threads(),
        target_overridden=overridden,
        extra_target=extra,
        missing_features=tuple(sorted(f for f in features - host_features if f in _ISA_FLAGS)),
    )
    return facts if facts.missing_features else dataclasses.replace(facts, half_rate_fma=half_rate_fma(facts))


def _plain(value: Any) -> Any:
    """A target attribute value as plain JSON data (TVM hands back its own array and string types)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        return [_plain(v) for v in value]
    except TypeError:
        return str(value)


@functools.cache
def host_facts() -> HostFacts:
    """Facts for the default target, computed once per process."""
    return facts_for(None)
