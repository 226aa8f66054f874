"""Options and parametrization for the benchmark grid: kernel x M x variant x layout.

Each case id reads ``<kernel>-M<M>-<variant>-<layout>``, and the parametrize
names (``kernel``, ``M``, ``variant``, ``layout``) work with
``--benchmark-group-by=param:kernel,param:M``.
"""

from __future__ import annotations

import pytest

from matmul import KERNELS, M_SWEEP, Workload, get_variant, host_facts, variant_names, workloads
from matmul.kernel import LAYOUTS, check_layout

#: The quick default: a few minutes on 2 cores.
DEFAULT_M = (16, 128)
DEFAULT_VARIANTS = ("full", "parallel_vec_j")


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def pytest_addoption(parser):
    g = parser.getgroup("matmul", "matmul benchmark grid")
    g.addoption("--kernels", default=",".join(KERNELS), help="comma-separated kernels (default: all three)")
    g.addoption("--m-values", default=",".join(map(str, DEFAULT_M)),
                help=f"comma-separated M values, or 'all' for {M_SWEEP} (default: %(default)s)")
    g.addoption("--variants", default=",".join(DEFAULT_VARIANTS),
                help="comma-separated variants, or 'all' for every legal one (default: %(default)s)")
    g.addoption("--layout", default="NN", help=f"comma-separated layouts from {LAYOUTS} (default: NN)")
    g.addoption("--model", default="bert-base", help="model whose shapes to use (default: bert-base)")


def _grid(config):
    m_opt = config.getoption("--m-values")
    try:
        m_values = list(M_SWEEP) if m_opt == "all" else [int(m) for m in _csv(m_opt)]
    except ValueError:
        raise pytest.UsageError(f"--m-values: {m_opt!r} must be 'all' or comma-separated integers") from None
    v_opt = config.getoption("--variants")
    variants = variant_names(legal_only=True) if v_opt == "all" else _csv(v_opt)
    layouts = _csv(config.getoption("--layout"))
    try:
        for v in variants:
            if not get_variant(v).legal:
                raise ValueError(f"variant {v!r} is declared illegal; choose from {', '.join(variant_names(legal_only=True))}")
        for lay in layouts:
            check_layout(lay)
        loads = list(workloads(_csv(config.getoption("--kernels")), m_values, config.getoption("--model")))
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None
    return [(w.kernel, w.M, v, lay) for w in loads for v in variants for lay in layouts]


_GRID = pytest.StashKey[list]()


def pytest_configure(config):
    # Validate the options before collection, so a bad value is a usage
    # error (exit 4) that names the choices, not a collection error.
    config.stash[_GRID] = _grid(config)


def pytest_generate_tests(metafunc):
    # Plain values under these names become the report axes of saved runs
    # (--benchmark-group-by=param:kernel,param:M).
    if {"kernel", "M", "variant", "layout"} <= set(metafunc.fixturenames):
        model = metafunc.config.getoption("--model")
        cases = metafunc.config.stash[_GRID]
        metafunc.parametrize(
            "kernel, M, variant, layout",
            cases,
            ids=[f"{Workload(k, m, model).id}-{v}-{lay}" for k, m, v, lay in cases],
        )


@pytest.fixture
def workload(request, kernel, M):
    return Workload(kernel, M, request.config.getoption("--model"))


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["matmul"] = host_facts().as_dict()
