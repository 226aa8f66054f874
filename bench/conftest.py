"""Options, parametrization and storage for the benchmark grid.

The grid is kernel x M x variant x layout. Case ids read
``<kernel>-M<M>-<variant>-<layout>`` and the parametrize names (``kernel``,
``M``, ``variant``, ``layout``) work with
``--benchmark-group-by=param:kernel,param:M``.

Quick default (a few minutes on 2 cores)::

    pytest bench/

Full sweep (all 24 BERT shapes x every variant, baseline included)::

    pytest bench/ --m-values all --variants all --baseline-max-m 384

Beside the kernel grid, the end-to-end grid times one Transformer encoder layer in Relax per
model x seq, every schedule of it together with PyTorch eager (``--e2e-models``, ``--e2e-seqs``,
``--e2e-schedules``; ``--e2e-models none`` leaves it out). Its case ids read
``e2e-<model>-seq<seq>-<schedule>``.

``--target cuda`` runs the GPU grid instead (``bench/test_gpu_bench.py``): kernel x M x ``--gpu-variants`` x
``--gpu-dtypes`` x layout, cuBLAS first in each shape; without a GPU every case is skipped with the reason. Its
runs are saved under ``.benchmarks/<machine id>-<CPU profile>-cuda-<arch>/``.

Runs are saved under ``.benchmarks/<machine id>-<CPU profile>/`` (see
:func:`pytest_configure`), so runs from different CPUs never mix in one
folder and ``pytest-benchmark compare`` still finds them all.
"""

from __future__ import annotations

import re

import pytest

from matmul import KERNELS, M_SWEEP, HardwareError, Workload, host_facts, workloads
from matmul.core.gpu import check_arch, gpu_spec
from matmul.core.kernel import GPU_DTYPES, LAYOUTS, check_dtype, check_layout
from matmul.core.registry import get_variant, unavailable
from matmul.core.workloads import MODELS, parse_positive_int
from matmul.e2e.layer import LayerSpec, layer_spec
from matmul.e2e.timing import TORCH, check_e2e_name, time_layer
from matmul.measure.candidates import candidate_names, check_candidate
from matmul.measure.gpu import CUBLAS, cublas_unavailable, gpu_unavailable
from matmul.measure.grid import GroupTiming, time_group, widest_cases
from matmul.measure.interleave import RoundSettings
from matmul.measure.references import get_reference, is_reference
from matmul.measure.workers import Workers

#: The quick default: a few minutes on 2 cores.
DEFAULT_M = (16, 128)
DEFAULT_VARIANTS = ("baseline", "full", "parallel_vec_j", "rule_based", "metaschedule", "ml_guided", "numpy",
                    "torch")
#: The unscheduled triple loop takes ~0.4 s per call at qkv M=384 and ~1.5 s
#: for the MLP kernels; by default it is measured only up to this M.
BASELINE_MAX_M = 32
#: The end-to-end grid's quick default: BERT-base at seq 128 beside PyTorch (the unscheduled build, ``none``,
#: takes about 2 s per pass there; add it with --e2e-schedules).
E2E_DEFAULTS = {"models": "bert-base", "seqs": "128", "schedules": f"rule_based,{TORCH}"}
#: The GPU grid's default cases (``--target cuda``); cuBLAS first, so each variant is compared with it.
GPU_VARIANTS = (CUBLAS, "dlight_gpu", "gpu_tiled")
#: Modules of each --target.
_TARGET_MODULES = {"llvm": ("test_matmul_bench.py", "test_e2e_bench.py"), "cuda": ("test_gpu_bench.py",)}


def _csv(text: str) -> list[str]:
    """Split on commas outside brackets, so ``rule_based[tk=64,jpack=16]`` stays whole."""
    return [x.strip() for x in re.split(r",(?![^\[]*\])", text) if x.strip()]


def pytest_addoption(parser):
    g = parser.getgroup("matmul", "matmul benchmark grid")
    g.addoption("--kernels", default=",".join(KERNELS), help="comma-separated kernels (default: all three)")
    g.addoption("--m-values", default=",".join(map(str, DEFAULT_M)),
                help=f"comma-separated M values, or 'all' for {M_SWEEP} (default: %(default)s)")
    g.addoption("--variants", default=",".join(DEFAULT_VARIANTS),
                help="comma-separated variants and references (numpy, torch), or 'all' (default: %(default)s)")
    g.addoption("--layout", default="NN", help=f"comma-separated layouts from {LAYOUTS} (default: NN)")
    g.addoption("--model", default="bert-base", help="model whose shapes to use (default: bert-base)")
    g.addoption("--baseline-max-m", default=str(BASELINE_MAX_M),
                help="largest M at which the slow 'baseline' variant is timed (default: %(default)s)")
    g.addoption("--rounds", default="20",
                help="timed rounds per case: the minimum when interleaved (unless --group-budget runs out first; "
                     "never fewer than 4), the exact count with --no-interleave (default: %(default)s)")
    g.addoption("--no-interleave", action="store_true",
                help="time each case on its own, one after another (the old way; no A/A control, no intervals)")
    g.addoption("--group-budget", default="20",
                help="seconds of sampling per shape before a group that is not tight yet is marked inconclusive "
                     "(default: %(default)s)")
    g.addoption("--e2e-models", default=E2E_DEFAULTS["models"],
                help=f"end-to-end layers: comma-separated models from {', '.join(MODELS)}, or none (default: bert-base)")
    g.addoption("--e2e-seqs", default=E2E_DEFAULTS["seqs"], help="end-to-end sequence lengths (default: 128)")
    g.addoption("--e2e-batch", default="1", help="end-to-end batch (default: 1)")
    g.addoption("--e2e-schedules", default=E2E_DEFAULTS["schedules"],
                help="end-to-end schedules: `python -m matmul e2e --help` lists them, plus torch "
                     "(default: rule_based,torch)")
    g.addoption("--ci-width", default="0.03",
                help="sample until each case's ratio to the anchor is known within +-this (default: %(default)s)")
    g.addoption("--target", default="llvm", choices=tuple(_TARGET_MODULES),
                help="llvm: the CPU grid and the end-to-end layers (default); cuda: the GPU grid")
    g.addoption("--gpu-variants", default=",".join(GPU_VARIANTS),
                help="--target cuda: comma-separated GPU variants and cublas (default: %(default)s)")
    g.addoption("--gpu-dtypes", default="float16,float32", help="--target cuda: dtypes (default: %(default)s)")
    g.addoption("--arch", default=None, help="--target cuda: CUDA arch (default: this machine's GPU)")
    g.addoption("--processes", default="1",
                help="time each shape's group in this many worker processes, each building it anew, and pool the "
                     "samples: a kernel whose speed moves with the process (MetaSchedule's, see the README) then "
                     "reads the fastest of N draws, and saves how far they lay apart (default: %(default)s: "
                     "in this process)")
    g.addoption("--aa", default="auto",
                help="the case copied as each shape's A/A control: a TVM variant among --variants, 'auto' "
                     "(rule_based, else the first TVM case) or 'none' (default: %(default)s)")


def _positive_int(config, option: str) -> int:
    try:
        return parse_positive_int(config.getoption(option), option)
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None


def _m_values(config) -> list[int]:
    m_opt = config.getoption("--m-values")
    try:
        return list(M_SWEEP) if m_opt == "all" else [int(m) for m in _csv(m_opt)]
    except ValueError:
        raise pytest.UsageError(f"--m-values: {m_opt!r} must be 'all' or comma-separated integers") from None


def _grid(config) -> list[tuple[str, int, str, str]]:
    m_values = _m_values(config)
    v_opt = config.getoption("--variants")
    variants = candidate_names() if v_opt == "all" else _csv(v_opt)
    layouts = _csv(config.getoption("--layout"))
    if not variants or not layouts:
        raise pytest.UsageError("--variants and --layout need at least one value each")
    try:
        for v in variants:
            check_candidate(v)
        for lay in layouts:
            check_layout(lay)
        loads = list(workloads(_csv(config.getoption("--kernels")), m_values, config.getoption("--model")))
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None
    return [(w.kernel, w.M, v, lay) for w in loads for v in variants for lay in layouts]


def _gpu_grid(config) -> list[tuple[str, int, str, str, str]]:
    """(kernel, M, dtype, layout, variant) of the GPU grid; empty unless --target cuda."""
    if config.getoption("--target") != "cuda":
        return []
    variants = _csv(config.getoption("--gpu-variants"))
    dtypes = _csv(config.getoption("--gpu-dtypes"))
    try:
        for v in variants:
            if v != CUBLAS and get_variant(v).target != "cuda":
                raise ValueError(f"--gpu-variants: {v!r} is a CPU variant; choose cublas or a CUDA variant "
                                 "(python -m matmul variants --target cuda)")
        for d in dtypes:
            check_dtype(d, GPU_DTYPES)
        if config.getoption("--arch"):
            check_arch(config.getoption("--arch"))
        loads = list(workloads(_csv(config.getoption("--kernels")), _m_values(config), config.getoption("--model")))
        layouts = [check_layout(lay) for lay in _csv(config.getoption("--layout"))]
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None
    return [(w.kernel, w.M, d, lay, v) for w in loads for d in dtypes for lay in layouts for v in variants]


def _e2e_grid(config) -> list[tuple[str, int, str]]:
    models = _csv(config.getoption("--e2e-models"))
    if models == ["none"]:
        return []
    try:
        seqs = [parse_positive_int(s, "--e2e-seqs") for s in _csv(config.getoption("--e2e-seqs"))]
        batch = parse_positive_int(config.getoption("--e2e-batch"), "--e2e-batch")
        schedules = [check_e2e_name(s) for s in _csv(config.getoption("--e2e-schedules"))]
        for m in models:
            layer_spec(m, 1, batch)
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None
    if not (models and seqs and schedules):
        raise pytest.UsageError("--e2e-models, --e2e-seqs and --e2e-schedules need at least one value each")
    return [(m, s, sch) for m in models for s in seqs for sch in schedules]


class E2ETimer:
    """Times each layer's selected schedules together, once, when the first of them runs."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.members: dict[LayerSpec, list[str]] | None = None
        self.groups: dict[LayerSpec, tuple] = {}

    def group(self, session, spec: LayerSpec) -> tuple:
        if self.members is None:
            self.members = {}
            for item in session.items:
                params = getattr(getattr(item, "callspec", None), "params", {})
                if {"e2e_model", "seq", "schedule"} <= set(params) and not item.get_closest_marker("skip"):
                    key = layer_spec(params["e2e_model"], params["seq"], self.settings["e2e_batch"])
                    self.members.setdefault(key, []).append(params["schedule"])
        if spec not in self.groups:
            self.groups[spec] = time_layer(spec, self.members.get(spec, []),
                                           settings=self.settings["round_settings"],
                                           aa=self.settings["aa"] is not None)
        return self.groups[spec]


_E2E = pytest.StashKey[list]()
_GPU = pytest.StashKey[list]()
_E2E_TIMER = pytest.StashKey["E2ETimer"]()
_GRID = pytest.StashKey[list]()
_SETTINGS = pytest.StashKey[dict]()
_GRID_TIMER = pytest.StashKey["GridTimer"]()


class GridTimer:
    """Times each shape's selected cases together, once, when the first of them runs.

    A group is (kernel, M, layout): every case of it that was collected,
    selected and not skipped is timed in the same interleaved rounds (see
    :mod:`matmul.measure.grid`); each case's test then hands its own samples
    to pytest-benchmark.
    """

    def __init__(self, settings: dict):
        self.settings = settings
        self.members: dict[tuple, list[str]] | None = None
        self.groups: dict[tuple, GroupTiming] = {}
        self.summaries: list[dict] = []
        processes = settings.get("processes", 1)
        self.workers = Workers(processes) if processes > 1 else None

    def _collect(self, session) -> dict[tuple, list[str]]:
        members: dict[tuple, list[str]] = {}
        for item in session.items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            if {"kernel", "M", "variant", "layout"} <= set(params) and not item.get_closest_marker("skip"):
                members.setdefault((params["kernel"], params["M"], params["layout"]), []).append(params["variant"])
        return members

    def group(self, session, workload, layout: str) -> GroupTiming:
        if self.members is None:
            self.members = self._collect(session)
        key = (workload.kernel, workload.M, layout)
        if key not in self.groups:
            g = time_group(self.members.get(key, []), workload.shape, layout=layout,
                           settings=self.settings["round_settings"], aa=self.settings["aa"], workers=self.workers)
            self.groups[key] = g
            self.summaries.append(g.brief(f"{workload.id}-{layout}"))
        return self.groups[key]

    def noise_summary(self) -> dict | None:
        if not self.summaries:
            return None
        floors = sorted(s["noise_floor"] for s in self.summaries if s["noise_floor"] is not None)
        best = sorted(s["noise_floor_best"] for s in self.summaries if s.get("noise_floor_best") is not None)
        return {
            "groups": len(self.summaries),
            "inconclusive": sum(s["inconclusive"] for s in self.summaries),
            "floor_median": floors[len(floors) // 2] if floors else None,
            "floor_max": floors[-1] if floors else None,
            "floor_best_median": best[len(best) // 2] if best else None,  # the A/A pair by best times
            "floor_best_max": best[-1] if best else None,
            "ci_width": self.settings["round_settings"].ci_width,
            "processes": self.settings.get("processes", 1),
            "per_shape": self.summaries,
        }


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Validate the environment and the options before collection, so a bad
    # value is a usage error (exit 4) that names the choices, not a collection error.
    try:
        host_facts()  # TVM_NUM_THREADS and MATMUL_TARGET
    except (HardwareError, ValueError) as err:
        raise pytest.UsageError(str(err)) from None
    config.stash[_GRID] = _grid(config)
    config.stash[_SETTINGS] = settings = {
        "baseline_max_m": _positive_int(config, "--baseline-max-m"),
        "rounds": _positive_int(config, "--rounds"),
        "interleave": not config.getoption("--no-interleave"),
        "aa": None if config.getoption("--aa") == "none" else config.getoption("--aa"),
        "e2e_batch": _positive_int(config, "--e2e-batch"),  # checked even when --e2e-models none leaves it unused
        "processes": _positive_int(config, "--processes"),
    }
    try:
        budget, width = float(config.getoption("--group-budget")), float(config.getoption("--ci-width"))
        rounds = settings["rounds"] + settings["rounds"] % 2  # whole mirrored pairs
        settings["round_settings"] = RoundSettings(min_rounds=max(rounds, 4), max_rounds=max(400, rounds),
                                                   budget_s=budget, ci_width=width)
    except ValueError as err:
        raise pytest.UsageError(f"--group-budget / --ci-width: {err}") from None
    if settings["aa"] not in (None, "auto"):
        try:
            if check_candidate(settings["aa"]) != "tvm":
                raise ValueError(f"--aa {settings['aa']!r} is a vendor reference; the A/A copy must be a TVM variant")
        except ValueError as err:
            raise pytest.UsageError(str(err)) from None
        variants = list(dict.fromkeys(v for _, _, v, _ in config.stash[_GRID]))
        if settings["aa"] not in variants:  # time_group would find no case to copy in any shape
            raise pytest.UsageError(f"--aa {settings['aa']!r} is not among --variants ({', '.join(variants)}); "
                                    "name one of them, auto (rule_based, else the first TVM case) or none")
    if settings["processes"] > 1 and (not settings["interleave"] or config.getoption("--target") != "llvm"):
        raise pytest.UsageError("--processes times the CPU grid's interleaved groups in worker processes; it does "
                                "nothing with --no-interleave or --target cuda: drop one or the other")
    config.stash[_GRID_TIMER] = GridTimer(settings)
    config.stash[_E2E] = _e2e_grid(config)
    config.stash[_GPU] = _gpu_grid(config)
    config.stash[_E2E_TIMER] = E2ETimer(settings)
    # pytest-benchmark files runs under a machine id built from the OS and
    # Python only, so a Zen 3 and a Skylake run would land in one folder and
    # `--benchmark-compare` would pit them against each other. Append the CPU
    # profile; this runs before pytest-benchmark creates its session.
    import pytest_benchmark.session as pb_session
    from pytest_benchmark.utils import get_machine_id

    profile = host_facts().profile
    if config.getoption("--target") == "cuda":  # GPU runs never share a folder with CPU runs, nor another GPU's
        profile += f"-cuda-{gpu_spec(config.getoption('--arch')).arch if not gpu_unavailable() else 'nogpu'}"
    pb_session.get_machine_id = lambda: f"{get_machine_id()}-{profile}"


def _marks(variant: str, kernel: str, M: int, layout: str, model: str, settings: dict) -> list:
    if variant == "baseline" and M > settings["baseline_max_m"]:
        return [pytest.mark.skip(reason=(
            f"baseline capped at M<={settings['baseline_max_m']} (the triple loop takes up to 1.5 s per call); "
            "raise --baseline-max-m to time it"))]
    if is_reference(variant):
        reason = get_reference(variant).unavailable()
    else:  # the family says whether it can serve the case, and why not
        reason = unavailable(variant, Workload(kernel, M, model).shape, layout=layout)
    return [pytest.mark.skip(reason=reason)] if reason else []


def pytest_generate_tests(metafunc):
    # Plain values under these names become the report axes of saved runs
    # (--benchmark-group-by=param:kernel,param:M).
    if {"kernel", "M", "variant", "layout"} <= set(metafunc.fixturenames):
        config = metafunc.config
        model = config.getoption("--model")
        settings = config.stash[_SETTINGS]
        metafunc.parametrize(
            "kernel, M, variant, layout",
            [
                pytest.param(k, m, v, lay, id=f"{Workload(k, m, model).id}-{v}-{lay}",
                             marks=_marks(v, k, m, lay, model, settings))
                for k, m, v, lay in config.stash[_GRID]
            ],
        )


    if {"e2e_model", "seq", "schedule"} <= set(metafunc.fixturenames):
        reason = get_reference(TORCH).unavailable()
        metafunc.parametrize("e2e_model, seq, schedule", [
            pytest.param(m, s, sch, id=f"e2e-{m}-seq{s}-{sch}",
                         marks=[pytest.mark.skip(reason=reason)] if sch == TORCH and reason else [])
            for m, s, sch in metafunc.config.stash[_E2E]
        ])


    if {"kernel", "M", "gpu_variant", "dtype", "layout"} <= set(metafunc.fixturenames):
        model = metafunc.config.getoption("--model")
        no_gpu, no_cublas = gpu_unavailable(), cublas_unavailable()
        metafunc.parametrize("kernel, M, dtype, layout, gpu_variant", [
            pytest.param(k, m, d, lay, v, id=f"{Workload(k, m, model).id}-{v}-{d}-{lay}",
                         marks=[pytest.mark.skip(reason=r)] if (r := no_cublas if v == CUBLAS else no_gpu) else [])
            for k, m, d, lay, v in metafunc.config.stash[_GPU]
        ])


def pytest_ignore_collect(collection_path, config):
    # Only the modules of --target are collected; --e2e-models none leaves the end-to-end module out too
    # (no empty-parameter skip line).
    target = config.getoption("--target")
    if any(collection_path.name in names for t, names in _TARGET_MODULES.items() if t != target):
        return True
    if collection_path.name == "test_e2e_bench.py" and _E2E in config.stash and not config.stash[_E2E]:
        return True
    return None


@pytest.fixture(scope="session")
def e2e_timer(request) -> E2ETimer:
    return request.config.stash[_E2E_TIMER]


@pytest.fixture
def workload(request, kernel, M):
    return Workload(kernel, M, request.config.getoption("--model"))


@pytest.fixture(scope="session")
def bench_settings(request) -> dict:
    return request.config.stash[_SETTINGS]


@pytest.fixture(scope="session")
def grid_timer(request) -> GridTimer:
    return request.config.stash[_GRID_TIMER]


def pytest_benchmark_update_machine_info(config, machine_info):
    from matmul.core.memory import huge_pages
    from matmul.core.pools import pool_spin
    from matmul.measure.peak import computed_fp32_peak, fp32_peak
    from matmul.measure.timing import blas_info

    computed = computed_fp32_peak()
    machine_info["matmul"] = {
        **host_facts().as_dict(),
        "fp32_peak": fp32_peak().as_dict(),
        "fp32_peak_computed": computed.as_dict() if computed else None,
        "blas": blas_info(),
        "pool_spin": pool_spin(),
        "operand_memory": huge_pages(),
        "noise_floor": config.stash[_GRID_TIMER].noise_summary() if _GRID_TIMER in config.stash else None,
    }


def pytest_unconfigure(config):
    timer = config.stash.get(_GRID_TIMER, None)
    if timer is not None and timer.workers is not None:
        timer.workers.close()


def pytest_terminal_summary(terminalreporter, config):
    if _GRID_TIMER not in config.stash:
        return
    summary = config.stash[_GRID_TIMER].noise_summary()
    if not summary:
        return
    tr = terminalreporter
    tr.section("A/A noise floor")
    if summary["floor_max"] is None:
        tr.write_line("no A/A pair was timed (--aa none, or no TVM case in any group)")
    else:
        tr.write_line(f"in this run, differences below {100 * summary['floor_max']:.1f}% are noise "
                      f"(the largest A/A floor of {summary['groups']} shapes; median {100 * summary['floor_median']:.1f}%)")
        if summary["floor_best_max"] is not None:
            tr.write_line(f"between runs, compare best times (speedup_vs_numpy_best; report's default): their A/A "
                          f"floor is {100 * summary['floor_best_max']:.1f}% at most, median "
                          f"{100 * summary['floor_best_median']:.1f}%")
    for s in summary["per_shape"]:
        floor = "-" if s["noise_floor"] is None else f"{100 * s['noise_floor']:.1f}%"
        aa = "-" if s["aa_ratio"] is None else f"{s['aa_ratio']:.3f}"
        flag = "  INCONCLUSIVE" if s["inconclusive"] else ""
        peak = "" if s.get("peak_gflops_in_rounds") is None else f", peak {s['peak_gflops_in_rounds']:.0f} GFLOP/s"
        spread = "" if not s.get("process_spread") else (f", {s['process_spread_case']} {s['process_spread']:.2f}x "
                                                          "apart over processes")
        if s.get("aa_process_spread"):
            spread += f" (A/A copy {s['aa_process_spread']:.2f}x)"
        widest = f" ({s['widest_case']})" if s.get("widest_case") else ""
        tr.write_line(f"  {s['shape']:<24} A/A {aa:>6}  floor {floor:>6}  "
                      f"+-{100 * s['widest_half_width']:.1f}%{widest} after {s['rounds']} rounds, {s['seconds']:.1f} s"
                      f"{peak}{spread}{flag}")
    if summary["processes"] > 1:
        tr.write_line(f"each shape was timed in {summary['processes']} worker processes; a case's best time comes "
                      "from the fastest of theirs, and 'apart over processes' names the case whose ratio to the anchor "
                      "moved most between them")
    if summary["inconclusive"]:
        tr.write_line(f"{summary['inconclusive']} of {summary['groups']} shapes are inconclusive: their intervals "
                      f"stayed wider than +-{100 * summary['ci_width']:.0f}% within --group-budget")
        tr.write_line("the case with the widest interval, which kept them sampling: "
                      + widest_cases(summary["per_shape"]))
