"""The report compares runs with intervals and significance, and flags only what beats the A/A floor.

Runs are written here from known sample streams, so each test knows the
truth: a 10% slowdown, an A/A pair, and a drift that both the case and NumPy
share (which ``--normalize numpy`` must cancel), and a clock that drops between runs for the case and the
peak probe timed in its rounds alike (which ``--normalize peak`` must cancel).
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from matmul.cli import main as cli_main
from matmul.report import ReportError, build_report

ROOT = Path(__file__).resolve().parents[1]


def _case(variant: str, samples: list[float], floor: float, inconclusive: bool = False,
          peak: list[float] | None = None) -> dict:
    q1, q3 = np.quantile(samples, [0.25, 0.75])
    extra = {} if peak is None else {"peak_samples_s": peak, "peak_probe_flops": 1e7}
    return {
        "params": {"kernel": "qkv", "M": 16, "variant": variant, "layout": "NN"},
        "stats": {"median": statistics.median(samples), "mean": statistics.fmean(samples), "q1": q1, "q3": q3,
                  "iqr": q3 - q1, "stddev": statistics.stdev(samples), "rounds": len(samples)},
        "extra_info": {"K": 768, "N": 768, "interleaved": True, "samples_s": samples, "noise_floor": floor,
                       "inconclusive": inconclusive, **extra},
    }


def _run(path: Path, when: str, cases: list[dict], profile: str = "p") -> Path:
    path.write_text(json.dumps({"benchmarks": cases, "datetime": when, "commit_info": {"id": when},
                                "machine_info": {"matmul": {"profile": profile}}}))
    return path


def _stream(scale: float, seed: int, n: int = 40, noise: float = 0.03) -> list[float]:
    return list(1e-4 * scale * np.random.default_rng(seed).lognormal(0, noise, n))


def test_a_significant_slowdown_beyond_the_floor_is_a_regression_and_an_aa_pair_is_not(tmp_path):
    base = _run(tmp_path / "0001_a.json", "2026-01-01", [_case("rule_based", _stream(1.0, 1), 0.02),
                                                          _case("full", _stream(1.0, 2), 0.02)])
    run = _run(tmp_path / "0002_b.json", "2026-01-02", [_case("rule_based", _stream(1.10, 3), 0.02),
                                                         _case("full", _stream(1.0, 4), 0.02)])
    comp = build_report([base, run]).comparison.set_index("variant")
    slow, same = comp.loc["rule_based"], comp.loc["full"]
    assert slow.method == "samples" and slow.ci_lo > 1.04 and slow.p <= 0.001 and slow.regression
    assert slow.drift == 0.0 and slow.floor == pytest.approx(0.02)  # no reference in the runs: the A/A floor alone
    assert same.ci_lo <= 1.0 <= same.ci_hi and not same.significant and not same.regression


def test_the_same_machine_code_in_both_runs_is_shown_slower_but_never_a_regression(tmp_path, capsys):
    def coded(case, code):
        case["extra_info"]["code"] = code
        return case

    # a 25% slowdown in each case: metaschedule's code is the same in both runs, rule_based's changed, full's
    # run saved no digest (an older run): only the changed code, and the unknown, may be regressions
    def cases(scale, seed, codes):
        return [coded(_case("metaschedule", _stream(scale, seed), 0.02), codes[0]),
                coded(_case("rule_based", _stream(scale, seed + 1), 0.02), codes[1]),
                _case("full", _stream(scale, seed + 2), 0.02)]

    base = _run(tmp_path / "0001_a.json", "2026-01-01", cases(1.0, 1, ("aaaa", "bbbb")))
    run = _run(tmp_path / "0002_b.json", "2026-01-02", cases(1.25, 4, ("aaaa", "cccc")))
    comp = build_report([base, run]).comparison.set_index("variant")
    assert comp["significant"].all() and (comp["ratio"] > 1.2).all() and comp["beyond_floor"].all()
    assert comp.loc["metaschedule", "same_code"] is True and not comp.loc["metaschedule", "regression"]
    assert comp.loc["rule_based", "same_code"] is False and comp.loc["rule_based", "regression"]
    assert comp.loc["full", "same_code"] is None and comp.loc["full", "regression"]
    assert cli_main(["report", str(base), str(run)]) == 1  # two regressions still fail the command
    out = capsys.readouterr().out
    assert "2 regression(s)" in out and "1 case(s) slower beyond the floor, significantly, with the same machine" in out


def test_a_significant_change_inside_the_floor_is_not_a_regression(tmp_path):
    base = _run(tmp_path / "0001_a.json", "2026-01-01", [_case("rule_based", _stream(1.0, 1, n=400), 0.08)])
    run = _run(tmp_path / "0002_b.json", "2026-01-02", [_case("rule_based", _stream(1.05, 2, n=400), 0.08)])
    row = build_report([base, run]).comparison.iloc[0]
    assert row.significant and row.floor == pytest.approx(0.08) and not row.regression


def test_normalizing_by_numpy_cancels_drift_both_runs_share(tmp_path):
    # the second machine state is 20% slower for everything: the case and numpy alike
    base = _run(tmp_path / "0001_a.json", "2026-01-01", [_case("rule_based", _stream(1.0, 1), 0.02),
                                                          _case("numpy", _stream(2.0, 2), 0.02)])
    run = _run(tmp_path / "0002_b.json", "2026-01-02", [_case("rule_based", _stream(1.2, 3), 0.02),
                                                         _case("numpy", _stream(2.4, 4), 0.02)])
    raw = build_report([base, run]).comparison.set_index("variant").loc["rule_based"]
    # 20% slower in absolute terms, but NumPy, which no commit changes, moved as much: the machine's drift
    assert raw.ratio == pytest.approx(1.2, abs=0.03) and raw.significant
    assert raw.drift == pytest.approx(0.2, abs=0.03) and raw.floor == raw.drift and not raw.regression
    for estimator in ("best", "median"):  # the ratio of best times to NumPy's, or the median of per-round ratios
        norm = build_report([base, run], normalize="numpy", estimator=estimator)
        row = norm.comparison.set_index("variant").loc["rule_based"]
        assert "numpy" not in set(norm.comparison["variant"]) and row.estimator == estimator
        assert row.ratio == pytest.approx(1.0, abs=0.03) and not row.regression


def test_a_case_that_moved_beyond_the_references_is_a_regression_and_they_never_are(tmp_path):
    # the machine 2-5% slower in the second run (both references show it); rule_based 20% slower, full 2%
    base = _run(tmp_path / "0001_a.json", "2026-01-01", [
        _case("rule_based", _stream(1.0, 1), 0.02), _case("full", _stream(3.0, 2), 0.02),
        _case("numpy", _stream(2.0, 3), 0.02), _case("torch", _stream(2.5, 4), 0.02)])
    run = _run(tmp_path / "0002_b.json", "2026-01-02", [
        _case("rule_based", _stream(1.2, 5), 0.02), _case("full", _stream(3.06, 6), 0.02),
        _case("numpy", _stream(2.1, 7), 0.02), _case("torch", _stream(2.55, 8), 0.02)])
    comp = build_report([base, run]).comparison.set_index("variant")
    drift = max(abs(comp.loc[v, "ratio"] - 1) for v in ("numpy", "torch"))
    assert drift == pytest.approx(0.05, abs=0.02) and (comp["drift"] == drift).all()
    assert comp.loc["rule_based", "regression"] and comp.loc["rule_based", "floor"] == pytest.approx(drift)
    assert not comp.loc["full", "regression"]  # no further than the references moved
    assert not comp.loc[["numpy", "torch"], "regression"].any()


def test_between_cpu_profiles_the_references_set_no_floor(tmp_path):
    # another CPU: NumPy 30% slower there, rule_based 20%; that is the hardware, which the comparison is about
    base = _run(tmp_path / "0001_a.json", "2026-01-01", [_case("rule_based", _stream(1.0, 1), 0.02),
                                                          _case("numpy", _stream(2.0, 2), 0.02)])
    run = _run(tmp_path / "0002_b.json", "2026-01-02", [_case("rule_based", _stream(1.2, 3), 0.02),
                                                         _case("numpy", _stream(2.6, 4), 0.02)], profile="q")
    comp = build_report([base, run]).comparison.set_index("variant")
    assert (comp["drift"] == 0).all() and comp["regression"].all()


def test_normalize_without_numpy_in_the_rounds_says_what_is_needed(tmp_path):
    base = _run(tmp_path / "0001_a.json", "2026-01-01", [_case("rule_based", _stream(1.0, 1), 0.02)])
    run = _run(tmp_path / "0002_b.json", "2026-01-02", [_case("rule_based", _stream(1.0, 2), 0.02)])
    with pytest.raises(ReportError, match="numpy timed in the same interleaved rounds"):
        build_report([base, run], normalize="numpy")


def test_normalizing_by_the_peak_probe_cancels_a_clock_drop_and_keeps_a_slower_kernel(tmp_path, capsys):
    # the second run's clock is 20% slower: the FMA probe in each group's rounds slows with the kernels.
    # rule_based only follows the clock; full also needs 10% more cycles, a real regression.
    probe0, probe1 = _stream(0.5, 10), _stream(0.6, 11)
    base = _run(tmp_path / "0001_a.json", "2026-01-01", [_case("rule_based", _stream(1.0, 1), 0.02, peak=probe0),
                                                          _case("full", _stream(1.0, 2), 0.02, peak=probe0)])
    run = _run(tmp_path / "0002_b.json", "2026-01-02", [_case("rule_based", _stream(1.2, 3), 0.02, peak=probe1),
                                                         _case("full", _stream(1.32, 4), 0.02, peak=probe1)])
    raw = build_report([base, run]).comparison.set_index("variant")
    assert raw.loc["rule_based"].regression and raw.loc["full"].regression  # both slower in seconds
    comp = build_report([base, run], normalize="peak").comparison.set_index("variant")
    clock, slower = comp.loc["rule_based"], comp.loc["full"]
    assert clock.ratio == pytest.approx(1.0, abs=0.03) and not clock.regression
    assert slower.ratio == pytest.approx(1.1, abs=0.03) and slower.regression
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert cli_main(["report", str(base), str(run), "--normalize", "peak"]) == 1
    assert "1 regression(s)" in out.getvalue() and "relative to the FP32 peak probe" in out.getvalue()


def test_normalize_peak_without_probe_samples_says_what_is_needed(tmp_path):
    base = _run(tmp_path / "0001_a.json", "2026-01-01", [_case("rule_based", _stream(1.0, 1), 0.02)])
    run = _run(tmp_path / "0002_b.json", "2026-01-02", [_case("rule_based", _stream(1.0, 2), 0.02)])
    with pytest.raises(ReportError, match="peak probe's samples from the cases' own rounds"):
        build_report([base, run], normalize="peak")


def test_inconclusive_cases_are_named_in_the_report_and_its_text(tmp_path, capsys):
    run = _run(tmp_path / "0001_a.json", "2026-01-01", [_case("rule_based", _stream(1.0, 1), 0.02, True)])
    assert cli_main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 cases inconclusive" in out and "differences below 2.0% are noise" in out
    assert build_report([run]).latency["inconclusive"].tolist() == [True]


def test_the_report_names_the_case_that_kept_each_inconclusive_group_sampling(tmp_path, capsys):
    """Two inconclusive groups (M = 16 and 128) whose widest interval was PyTorch's, one whose was MetaSchedule's,
    and a converged group: the text counts each inconclusive group once, and the latency table names the case."""
    cases = []
    for m, widest, inconclusive in ((16, "torch", True), (128, "torch", True), (256, "metaschedule", True),
                                    (384, "numpy", False)):
        for variant in ("rule_based", "numpy", "torch"):
            case = _case(variant, _stream(1.0, m), 0.02, inconclusive)
            case["params"]["M"] = m
            case["extra_info"]["group_widest_case"] = widest
            cases.append(case)
    run = _run(tmp_path / "0001_a.json", "2026-01-01", cases)
    assert cli_main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "9 of 12 cases inconclusive" in out
    assert "the case whose interval was widest in those groups: torch in 2, metaschedule in 1" in out
    lat = build_report([run]).latency
    assert lat.loc[lat.M == 256, "widest_case"].tolist() == ["metaschedule"] * 3


def test_runs_saved_before_the_widest_case_was_named_read_without_it(tmp_path, capsys):
    run = _run(tmp_path / "0001_a.json", "2026-01-01", [_case("rule_based", _stream(1.0, 1), 0.02, True)])
    assert cli_main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 cases inconclusive" in out and "widest in those groups" not in out
    assert build_report([run]).latency["widest_case"].isna().all()


def test_cli_exit_code_follows_the_floor(tmp_path):
    base = _run(tmp_path / "0001_a.json", "2026-01-01", [_case("rule_based", _stream(1.0, 1), 0.02)])
    run = _run(tmp_path / "0002_b.json", "2026-01-02", [_case("rule_based", _stream(1.10, 3), 0.02)])
    with contextlib.redirect_stdout(io.StringIO()):  # the CLI in process (test_report runs it as a module)
        assert cli_main(["report", str(base), str(run)]) == 1
        # the same runs with a demanded minimum of 20%: no regression
        assert cli_main(["report", str(base), str(run), "--threshold", "0.2"]) == 0


def test_bad_samples_in_a_run_are_named(tmp_path):
    bad = _case("rule_based", _stream(1.0, 1), 0.02)
    bad["extra_info"]["samples_s"] = [1e-4, -1]
    run = _run(tmp_path / "0001_a.json", "2026-01-01", [bad])
    with pytest.raises(ReportError, match="samples_s that are not a list of positive seconds"):
        build_report([run])
    bad = _case("rule_based", _stream(1.0, 1), 0.02, peak=[1e-4, "x"])
    run = _run(tmp_path / "0002_b.json", "2026-01-02", [bad])
    with pytest.raises(ReportError, match="peak_samples_s that are not a list of positive seconds"):
        build_report([run])


def _loaded(scale: float, seed: int, share: float, n: int = 80) -> list[float]:
    """Samples of a kernel on a shared host: in ``share`` of the rounds a neighbour's load slows it 10-60%."""
    rng = np.random.default_rng(seed)
    hit = rng.random(n) < share
    return list(1e-4 * scale * rng.lognormal(0, 0.005, n) * np.where(hit, 1 + rng.uniform(0.1, 0.6, n), 1.0))


def test_runs_that_met_different_loads_compare_by_best_times_and_a_slowdown_still_shows(tmp_path):
    # the same code twice (rule_based), a busier machine in the second run; full is also 10% slower there
    base = _run(tmp_path / "0001_a.json", "2026-01-01", [_case("rule_based", _loaded(1.0, 1, 0.2), 0.02),
                                                          _case("full", _loaded(1.0, 2, 0.2), 0.02),
                                                          _case("numpy", _loaded(2.0, 3, 0.2), 0.02)])
    run = _run(tmp_path / "0002_b.json", "2026-01-02", [_case("rule_based", _loaded(1.0, 4, 0.7), 0.02),
                                                         _case("full", _loaded(1.1, 5, 0.7), 0.02),
                                                         _case("numpy", _loaded(2.0, 6, 0.2), 0.02)])
    report = build_report([base, run])
    assert report.settings["estimator"] == "best"
    comp = report.comparison.set_index("variant")
    assert comp.loc["rule_based", "ratio"] == pytest.approx(1.0, abs=0.01) and not comp.loc["rule_based", "regression"]
    assert comp.loc["full", "ratio"] == pytest.approx(1.1, abs=0.01) and comp.loc["full", "regression"]
    median = build_report([base, run], estimator="median").comparison.set_index("variant")
    assert median.loc["rule_based", "ratio"] > 1.1 and median.loc["rule_based", "regression"]  # the load, flagged
    # the speedup over numpy of best times holds between the runs (numpy met the same load in both)
    sp = report.speedups.set_index(["run", "variant"])["speedup_vs_numpy_best"]
    assert sp[("0002_b", "rule_based")] == pytest.approx(sp[("0001_a", "rule_based")], rel=0.02)
    assert sp[("0001_a", "rule_based")] == pytest.approx(2.0, rel=0.02) and sp[("0001_a", "numpy")] == 1.0
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert cli_main(["report", str(base), str(run), "--estimator", "median"]) == 1
    assert "2 regression(s)" in out.getvalue() and "ratios of medians" in out.getvalue()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert cli_main(["report", str(base), str(run)]) == 1
    assert "1 regression(s)" in out.getvalue() and "ratios of best times" in out.getvalue()


def test_the_floor_is_the_estimators_own_and_each_row_names_its_estimator(tmp_path):
    # A/A floors by medians 1%, by best times 6%: a 4% move of the best times is inside the floor by best times
    def case(samples, seed):
        c = _case("rule_based", samples, 0.01)
        c["extra_info"]["noise_floor_best"] = 0.06
        return c

    base = _run(tmp_path / "0001_a.json", "2026-01-01", [case(_loaded(1.0, 1, 0.2), 1)])
    run = _run(tmp_path / "0002_b.json", "2026-01-02", [case(_loaded(1.04, 2, 0.2), 2)])
    row = build_report([base, run]).comparison.iloc[0]
    assert row.estimator == "best" and row.floor == pytest.approx(0.06) and row.significant and not row.regression
    row = build_report([base, run], estimator="median").comparison.iloc[0]
    assert row.estimator == "median" and row.floor == pytest.approx(0.01) and row.regression


def test_an_unknown_estimator_is_refused_with_the_choices(tmp_path):
    base = _run(tmp_path / "0001_a.json", "2026-01-01", [_case("rule_based", _stream(1.0, 1), 0.02)])
    for bad in ("min", None):
        with pytest.raises(ReportError, match="unknown estimator .*; choose one of: median, best"):
            build_report([base], estimator=bad)
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        cli_main(["report", str(base), "--estimator", "min"])


def test_a_case_of_one_sample_has_no_best_time_and_the_report_still_loads(tmp_path):
    one = _case("rule_based", _stream(1.0, 1), 0.02)
    one["extra_info"]["samples_s"] = one["extra_info"]["samples_s"][:1]
    rep = build_report([_run(tmp_path / "0001_a.json", "2026-01-01", [one, _case("numpy", _stream(2.0, 2), 0.02)])])
    sp = rep.speedups.set_index("variant")["speedup_vs_numpy_best"]
    assert np.isnan(sp["rule_based"]) and sp["numpy"] == 1.0


def test_speedup_agreement_counts_the_shapes_whose_speedup_over_numpy_held_between_runs(tmp_path):
    # rule_based met a busier machine in the second run (its median moved, its best did not); full is 10% slower
    def run(path, when, rule, full):
        cases = [_case("rule_based", rule, 0.02), _case("full", full, 0.02), _case("numpy", _loaded(2.0, 9, 0.2),
                                                                                    0.02)]
        for c in cases[:2]:  # the paired-median speedup the grid saves
            c["extra_info"]["speedup_vs_numpy"] = statistics.median(cases[2]["extra_info"]["samples_s"]) / \
                c["stats"]["median"]
        return _run(tmp_path / path, when, cases)

    base = run("0001_a.json", "2026-01-01", _loaded(1.0, 1, 0.2), _loaded(1.0, 2, 0.2))
    other = run("0002_b.json", "2026-01-02", _loaded(1.0, 4, 0.7), _loaded(1.1, 5, 0.2))
    table = build_report([base, other]).speedup_agreement.set_index("variant")
    assert list(table.index) == ["full", "rule_based"] and (table["shapes"] == 1).all()  # numpy is the anchor
    assert table.loc["rule_based", "within_band_best"] == 1 and table.loc["rule_based", "within_band_median"] == 0
    assert table.loc["full", "within_band_best"] == 0
    assert table.loc["full", "ratio_geomean_best"] == pytest.approx(1 / 1.1, abs=0.01)
    assert build_report([base]).speedup_agreement is None  # one run: nothing to agree with
