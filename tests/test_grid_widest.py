"""Which case kept a group sampling: the grid names the case whose interval to the anchor was widest.

On a 2-core VM one reference can scatter far more than the kernels (PyTorch at 16 x 768 x 3072, called back to back
alone, read 1.4-2.3 ms between its 10th and 90th percentiles), and a group stops only when every case's interval
is tight, so that one case leaves the whole group inconclusive. The samples here are
synthetic, so each test knows which case scatters.
"""

from __future__ import annotations

import numpy as np

from matmul import MatmulShape
from matmul.measure.grid import AA_SUFFIX, Measured, assemble, widest_cases
from matmul.measure.interleave import RoundSettings
from matmul.measure.peak import PROBE

SHAPE = MatmulShape(16, 768, 3072)
WIDTH = RoundSettings(min_rounds=4, budget_s=1.0, ci_width=0.03)


def _measured(scatter: dict[str, float], rounds: int = 60, seed: int = 0) -> Measured:
    """Each case at a level of its own, its samples scattered by a log-normal of the given sigma."""
    rng = np.random.default_rng(seed)
    level = {"rule_based": 1e-3, "rule_based" + AA_SUFFIX: 1e-3, PROBE: 1e-4, "numpy": 1.2e-3, "torch": 2e-3}
    names = list(level)
    samples = [list(level[n] * rng.lognormal(0.0, scatter.get(n, 0.002), rounds)) for n in names]
    return Measured(names, samples, [2] * len(names), {n: {"kind": "tvm"} for n in names}, {}, "rule_based",
                    "rule_based", 1e6, 0.5)


def test_the_case_that_scatters_is_named_and_leaves_the_group_inconclusive():
    g = assemble(SHAPE, "NN", [_measured({"torch": 0.3})], WIDTH)
    assert not g.converged and g.widest > WIDTH.ci_width
    assert g.widest_case == "torch"
    assert g.cases["torch"].to_anchor.half_width == g.widest  # the name and the width are the same case's
    assert g.cases["numpy"].to_anchor.half_width < WIDTH.ci_width  # the others were tight
    assert g.brief("x")["widest_case"] == "torch" and g.summary()["group_widest_case"] == "torch"


def test_the_copy_and_the_probe_are_named_too_when_they_scatter():
    g = assemble(SHAPE, "NN", [_measured({"rule_based" + AA_SUFFIX: 0.3})], WIDTH)
    assert g.widest_case == "rule_based" + AA_SUFFIX and not g.converged
    g = assemble(SHAPE, "NN", [_measured({PROBE: 0.3}, seed=1)], WIDTH)
    assert g.widest_case == PROBE and not g.converged


def test_a_converged_group_still_says_which_interval_was_widest():
    g = assemble(SHAPE, "NN", [_measured({"numpy": 0.01})], WIDTH)
    assert g.converged and g.widest_case == "numpy" and g.widest <= WIDTH.ci_width


def test_widest_cases_counts_the_inconclusive_groups_only_most_often_first():
    briefs = [{"inconclusive": True, "widest_case": "torch"}, {"inconclusive": True, "widest_case": "metaschedule"},
              {"inconclusive": True, "widest_case": "torch"}, {"inconclusive": False, "widest_case": "numpy"},
              {"inconclusive": True, "widest_case": None}]
    assert widest_cases(briefs) == "torch in 2, metaschedule in 1, no case named in 1"
    assert widest_cases([{"inconclusive": False, "widest_case": "torch"}]) == ""
    assert widest_cases([]) == ""
