"""The report, on runs the real suite saved (tests/fixtures/benchmarks: one
with 2 runtime threads, one with 1, on the development machine)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from matmul.cli import main as cli_main
from matmul.report import (
    ReportError,
    agreement_summary,
    build_report,
    find_runs,
    geomean,
    load_run,
    plot_report,
    to_markdown,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "benchmarks"
TWO = next(FIXTURES.glob("*-t2/*_two-threads.json"))
ONE = next(FIXTURES.glob("*-t1/*_one-thread.json"))


@pytest.fixture(scope="module")
def report():
    return build_report([TWO, ONE])


def test_fixtures_are_real_runs_of_this_suite():
    data = json.loads(TWO.read_text())
    assert data["machine_info"]["matmul"]["profile"].endswith("-t2")
    assert json.loads(ONE.read_text())["machine_info"]["matmul"]["profile"].endswith("-t1")
    assert all(b["stats"]["rounds"] >= 20 for b in data["benchmarks"])


def test_percent_of_peak_takes_the_peak_probe_of_the_cases_own_rounds(tmp_path):
    """A run that saved the probe timed in each group's rounds: percent of peak against it, not the run's peak."""
    data = json.loads(TWO.read_text())
    peak = data["machine_info"]["matmul"]["fp32_peak"]["gflops"]
    for n, b in enumerate(data["benchmarks"]):
        b["extra_info"]["peak_gflops_in_rounds"] = peak * (0.5 if n % 2 else 2.0)
    path = tmp_path / "probed.json"
    path.write_text(json.dumps(data))
    _, rows = load_run(path)
    _, plain = load_run(TWO)
    assert len(rows) == len(plain)
    for n, (probed, once) in enumerate(zip(rows, plain)):
        assert probed["pct_peak"] == pytest.approx(once["pct_peak"] * (2.0 if n % 2 else 0.5))


def test_runs_are_found_in_storage_per_profile():
    assert set(find_runs([], storage=FIXTURES)) == {TWO, ONE}
    assert find_runs([str(FIXTURES / "*-t1" / "*.json")]) == [ONE]


def test_latency_table_carries_spread_and_peak(report):
    lat = report.latency
    assert set(lat["run"]) == {TWO.stem, ONE.stem}
    assert (lat["iqr_ms"] >= 0).all() and (lat["cv"] >= 0).all() and (lat["pct_peak"] > 0).all()
    row = lat[(lat.run == TWO.stem) & (lat.kernel == "qkv") & (lat.M == 64) & (lat.variant == "full")].iloc[0]
    raw = next(b for b in json.loads(TWO.read_text())["benchmarks"] if b["name"].endswith("[qkv-M64-full-NN]"))
    assert row.median_ms == pytest.approx(raw["stats"]["median"] * 1e3)
    assert row.gflops == pytest.approx(2 * 64 * 768 * 768 / raw["stats"]["median"] / 1e9)
    assert row.noisy == (raw["stats"]["stddev"] / raw["stats"]["mean"] > 0.10)


def test_speedups_are_ratios_within_one_run(report):
    sp = report.speedups
    two = sp[sp.run == TWO.stem].set_index(["kernel", "M", "variant"])
    lat = report.latency[report.latency.run == TWO.stem].set_index(["kernel", "M", "variant"])["median_ms"]
    assert two.loc[("qkv", 16, "full"), "vs_baseline"] == pytest.approx(
        lat[("qkv", 16, "baseline")] / lat[("qkv", 16, "full")])
    assert two.loc[("qkv", 64, "numpy"), "vs_numpy"] == pytest.approx(1.0)
    best = min(lat[("qkv", 64, "full")], lat[("qkv", 64, "parallel_vec_j")])
    assert two.loc[("qkv", 64, "full"), "vs_best_manual"] == pytest.approx(best / lat[("qkv", 64, "full")])
    assert pd.isna(two.loc[("qkv", 64, "full"), "vs_baseline"])  # baseline capped at M<=16 here
    assert two["vs_metaschedule"].isna().all()  # no metaschedule in these runs


def test_every_variant_is_also_read_against_rule_based(tmp_path):
    """A transferred or learned variant is judged beside rule_based timed in the same run."""
    rename = {"full": "rule_based", "parallel_vec_j": "metaschedule[from=znver3-2c-simd8-t2]"}
    data = json.loads(TWO.read_text())
    for b in data["benchmarks"]:
        v = b["params"]["variant"]
        b["params"]["variant"] = rename.get(v, v)
        b["name"] = b["name"].replace(f"-{v}-", f"-{rename.get(v, v)}-")
    path = tmp_path / "0002_renamed.json"
    path.write_text(json.dumps(data))
    r = build_report([path])
    sp = r.speedups.set_index(["kernel", "M", "variant"])
    lat = r.latency.set_index(["kernel", "M", "variant"])["median_ms"]
    moved = ("qkv", 64, rename["parallel_vec_j"])
    assert sp.loc[moved, "vs_rule_based"] == pytest.approx(lat[("qkv", 64, "rule_based")] / lat[moved])
    assert sp.loc[("qkv", 64, "rule_based"), "vs_rule_based"] == pytest.approx(1.0)
    geo = r.geomeans.set_index(["kernel", "variant"])
    assert geo.loc[("all", rename["parallel_vec_j"]), "vs_rule_based"] > 0


def test_the_roofline_limit_travels_to_the_latency_table(tmp_path):
    data = json.loads(TWO.read_text())
    case = next(b for b in data["benchmarks"] if b["name"].endswith("[qkv-M64-full-NN]"))
    case["extra_info"].update(limit="memory", limit_gflops=50.0, bandwidth_gbs=40.0)
    path = tmp_path / "0002_limit.json"
    path.write_text(json.dumps(data))
    lat = build_report([path]).latency.set_index(["kernel", "M", "variant"])
    row = lat.loc[("qkv", 64, "full")]
    assert row["limit"] == "memory" and row["bandwidth_gbs"] == 40.0
    assert row["pct_limit"] == pytest.approx(100 * row["gflops"] / 50.0)
    assert pd.isna(lat.loc[("qkv", 16, "full"), "pct_limit"])  # older cases carry no limit: blank, not a guess


def test_the_hot_loop_travels_to_the_latency_table(tmp_path):
    data = json.loads(TWO.read_text())
    case = next(b for b in data["benchmarks"] if b["name"].endswith("[qkv-M64-full-NN]"))
    case["extra_info"]["hot_loop"] = {"fmas": 48, "loads": 45, "stack_loads": 29, "loads_per_fma": 0.938}
    other = next(b for b in data["benchmarks"] if b["name"].endswith("[qkv-M16-full-NN]"))
    other["extra_info"]["hot_loop"] = "garbage"  # not a dict: blank, never a crash
    third = next(b for b in data["benchmarks"] if b["name"].endswith("[mlp_reduce-M16-full-NN]"))
    third["extra_info"]["hot_loop"] = {"loads_per_fma": 10**400, "stack_loads": True}  # no float, a bool: blank
    path = tmp_path / "0002_loops.json"
    path.write_text(json.dumps(data))
    lat = build_report([path]).latency.set_index(["kernel", "M", "variant"])
    assert tuple(lat.loc[("qkv", 64, "full"), ["loads_per_fma", "stack_loads"]]) == (0.938, 29)
    for kernel in ("qkv", "mlp_reduce"):  # a corrupt hot loop reads as none, as in older runs
        assert lat.loc[(kernel, 16, "full"), ["loads_per_fma", "stack_loads"]].isna().all()


def test_the_spread_over_worker_processes_travels_to_the_latency_table(tmp_path):
    data = json.loads(TWO.read_text())
    case = next(b for b in data["benchmarks"] if b["name"].endswith("[qkv-M64-full-NN]"))
    case["extra_info"].update(processes=4, process_spread=1.26, process_best_s=[1e-3, 1.1e-3, 1e-3, 1.26e-3])
    other = next(b for b in data["benchmarks"] if b["name"].endswith("[qkv-M16-full-NN]"))
    other["extra_info"]["process_spread"] = "wide"  # corrupt: blank, never a crash
    path = tmp_path / "0003_processes.json"
    path.write_text(json.dumps(data))
    lat = build_report([path]).latency.set_index(["kernel", "M", "variant"])
    assert lat.loc[("qkv", 64, "full"), "process_spread"] == 1.26
    assert pd.isna(lat.loc[("qkv", 16, "full"), "process_spread"])  # and one process (older runs): blank


def test_runs_without_samples_have_no_best_time_and_compare_by_medians(report):
    # pytest-benchmark's min over rounds timed apart is not the figure best times are; those runs leave it blank
    assert report.speedups["speedup_vs_numpy_best"].isna().all()
    assert set(report.comparison["estimator"]) == {"median"} and (report.comparison["method"] == "iqr").all()


def test_geomeans_per_kernel_and_overall(report):
    geo = report.geomeans.set_index(["run", "kernel", "variant"])
    sp = report.speedups
    full = sp[(sp.run == TWO.stem) & (sp.variant == "full")]
    assert geo.loc[(TWO.stem, "all", "full"), "gflops_geomean"] == pytest.approx(geomean(full["gflops"]))
    assert geo.loc[(TWO.stem, "qkv", "full"), "shapes"] == 2
    assert geo.loc[(TWO.stem, "all", "full"), "max_cv"] == pytest.approx(full["cv"].max())  # spread travels along


def test_agreement_is_recorded_for_tvm_and_numpy(report):
    summary = agreement_summary(report.agreement)
    assert set(summary["agreement_check"]) == {"time_evaluator", "numpy_alone"}
    assert ((summary["geomean"] > 0.5) & (summary["geomean"] < 2)).all()
    # The saved runs themselves: interleaved time_evaluator within 5% on every case.
    tvm = report.agreement[report.agreement.agreement_check == "time_evaluator"]
    assert len(tvm) == 20 and tvm["agrees"].all(), tvm


def test_comparing_profiles_flags_regressions(report):
    comp = report.comparison
    assert set(comp["base"]) == {TWO.stem} and set(comp["run"]) == {ONE.stem}
    merged = comp.set_index(["kernel", "M", "variant", "layout"])
    assert merged["ratio"].equals(merged["run_ms"] / merged["base_ms"])
    assert merged["regression"].equals((merged["ratio"] > 1.10) & merged["iqr_separated"])
    # one thread instead of two: the parallel variants must come out slower
    assert merged.loc[("mlp_reduce", 64, "full", "NN"), "ratio"] > 1.3
    assert len(report.regressions) > 0


def test_a_slower_median_inside_the_noise_is_not_a_regression(tmp_path):
    data = json.loads(TWO.read_text())
    case = next(b for b in data["benchmarks"] if b["name"].endswith("[qkv-M64-full-NN]"))
    st = case["stats"]
    # 20% slower median, but the IQR still overlaps the base's
    slow = dict(st, median=st["median"] * 1.2, q1=st["q1"], q3=st["q3"] * 1.3)
    other = dict(data, benchmarks=[dict(case, stats=slow)])
    path = tmp_path / "0002_noisy.json"
    path.write_text(json.dumps(other))
    r = build_report([TWO, path])
    row = r.comparison.iloc[0]
    assert row.ratio == pytest.approx(1.2) and not row.iqr_separated and not row.regression
    # shifted wholly above the base's IQR: a regression
    shifted = dict(st, median=st["median"] * 1.2, q1=st["q3"] * 1.01, q3=st["q3"] * 1.3)
    path.write_text(json.dumps(dict(data, benchmarks=[dict(case, stats=shifted)])))
    assert build_report([TWO, path]).comparison.iloc[0].regression


def test_runs_of_two_models_never_compare_different_shapes(tmp_path):
    """Same kernel name and M, another model (K, N): not the same case, so neither a ratio nor a regression."""
    data = json.loads(TWO.read_text())
    for b in data["benchmarks"]:
        b["extra_info"].update(K=1024, N=1024)  # as a bert-large run would save them
        b["stats"] = dict(b["stats"], median=b["stats"]["median"] * 3, q1=b["stats"]["q1"] * 3,
                          q3=b["stats"]["q3"] * 3)
    path = tmp_path / "0002_large.json"
    path.write_text(json.dumps(data))
    r = build_report([TWO, path])
    assert r.comparison.empty and r.regressions.empty
    copy = tmp_path / "0003_copy.json"
    copy.write_text(TWO.read_text())
    same = build_report([TWO, copy]).comparison
    assert len(same) > 0 and {"K", "N"} <= set(same.columns) and not same["regression"].any()


def test_a_run_compared_with_itself_has_no_regression():
    r = build_report([TWO, TWO.parent])
    assert r.comparison is None  # one distinct file
    copy = build_report([TWO], base=TWO.stem)
    assert copy.comparison.empty and copy.regressions.empty


def test_outputs_csv_markdown_and_plots(report, tmp_path):
    files = write_report(report, tmp_path)
    names = {p.name for p in files}
    assert {"latency.csv", "speedups.csv", "geomeans.csv", "comparison.csv", "report.md"} <= names
    assert pd.read_csv(tmp_path / "latency.csv").shape[0] == len(report.latency)
    md = (tmp_path / "report.md").read_text()
    assert "## geomeans" in md and "| run | kernel |" in md
    pytest.importorskip("matplotlib")
    pngs = plot_report(report, tmp_path)
    assert any(p.name.startswith("heatmap-") for p in pngs) and any(p.name.startswith("gflops-qkv") for p in pngs)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_plots_without_matplotlib_say_which_extra(report, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[plot\]'"):
        plot_report(report, tmp_path)


def test_markdown_formatting():
    md = to_markdown(pd.DataFrame({"a": [1.23456, float("nan")], "b": [True, False]}))
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1.23 | yes |", "|  |  |"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"benchmarks": [', "not valid JSON"),
        ('{"x": 1}', "not a pytest-benchmark run"),
        ('{"benchmarks": [{"params": {"a": 1}, "stats": {"median": 1}}]}', "holds no cases of this suite"),
    ],
)
def test_bad_run_files_name_the_path(tmp_path, content, message):
    bad = tmp_path / "0001_bad.json"
    bad.write_text(content)
    with pytest.raises(ReportError, match=message) as err:
        load_run(bad)
    assert str(bad) in str(err.value)
    assert bad.read_text() == content  # never rewritten


MALFORMED = {
    "commit-id-null": (lambda d: d["commit_info"].update(id=None), "commit_info.id is None, not a string"),
    "fp32-peak-not-an-object": (lambda d: d["machine_info"]["matmul"].update(fp32_peak=[1]),
                                "machine_info.matmul.fp32_peak is [1], not a JSON object"),
    "cpu-not-an-object": (lambda d: d["machine_info"].update(cpu="zen"),
                          "machine_info.cpu is 'zen', not a JSON object"),
    "median-without-mean": (lambda d: d["benchmarks"][0]["stats"].pop("mean"), "has no stats.mean"),
    "iqr-null": (lambda d: d["benchmarks"][0]["stats"].update(iqr=None), "has stats.iqr None, not a finite number"),
}


@pytest.mark.parametrize("mode", list(MALFORMED))
def test_a_malformed_field_is_a_report_error_naming_the_file_and_the_field(mode, tmp_path):
    edit, message = MALFORMED[mode]
    data = json.loads(TWO.read_text())
    edit(data)
    bad = tmp_path / "0005_edited.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ReportError, match=re.escape(message)) as err:
        load_run(bad)
    assert str(bad) in str(err.value)


def test_a_run_file_that_is_not_utf8_is_named_and_skipped(tmp_path):
    bad = tmp_path / "0006_latin1.json"
    content = b'{"benchmarks": [], "note": "caf\xe9"}'
    bad.write_bytes(content)
    with pytest.raises(ReportError, match="not UTF-8 text"):
        load_run(bad)
    proc = _cli(str(TWO), str(bad), "--threshold", "100")
    assert proc.returncode == 0 and f"skipped {bad}" in proc.stdout and "not UTF-8" in proc.stdout, proc.stderr
    assert "== geomeans ==" in proc.stdout and bad.read_bytes() == content


@pytest.mark.parametrize("option", ["--threshold", "--cv-threshold"])
@pytest.mark.parametrize("value", ["nan", "inf", "-0.1"])
def test_thresholds_must_be_finite_positive_numbers(option, value):
    proc = _cli(str(TWO), option, value)
    assert proc.returncode == 2 and "thresholds must be finite positive numbers" in proc.stderr, proc.stderr


def test_missing_inputs_are_clear(tmp_path):
    with pytest.raises(ReportError, match="no saved runs under"):
        find_runs([], storage=tmp_path)
    with pytest.raises(ReportError, match="no such run file"):
        find_runs([tmp_path / "nope.json"])
    with pytest.raises(ReportError, match="base run 'nope' is not among the runs"):
        build_report([TWO, ONE], base="nope")


def _cli(*args, cwd=ROOT):
    """``python -m matmul report ARGS`` in this process (a new interpreter costs 5 s of imports per call);
    test_cli_runs_as_a_module checks the entry point itself."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(["report", *map(str, args)])
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return subprocess.CompletedProcess(["report", *args], code, out.getvalue(), err.getvalue())


def test_cli_runs_as_a_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "matmul", "report", str(TWO), str(ONE), "--threshold", "100"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0 and "== geomeans ==" in proc.stdout, proc.stdout + proc.stderr


def test_cli_exit_codes(tmp_path):
    # regression between profiles: exit 1, named in the last line
    proc = _cli(str(TWO), str(ONE), "--out", str(tmp_path / "out"), "--plots")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "regression(s) against" in proc.stdout and "runs without samples: beyond 10% with IQRs apart" in proc.stdout
    assert (tmp_path / "out" / "report.md").exists()
    # a generous threshold: no regression, exit 0
    assert _cli(str(TWO), str(ONE), "--threshold", "100").returncode == 0
    # a truncated file beside a good one: named and skipped, the good one reported, the file untouched
    bad = tmp_path / "0003_cut.json"
    bad.write_text(TWO.read_text()[:500])
    proc = _cli(str(TWO), str(bad))
    assert proc.returncode == 0 and f"skipped {bad}" in proc.stdout and "truncated" in proc.stdout
    assert "== geomeans ==" in proc.stdout and bad.read_text() == TWO.read_text()[:500]
    # only bad files: exit 2, path named
    proc = _cli(str(bad))
    assert proc.returncode == 2 and str(bad) in proc.stderr and "truncated" in proc.stderr
    # --out naming a file, and a case whose median is 0: clear errors, exit 2
    assert "is a file" in _cli(str(TWO), "--out", str(bad)).stderr
    zero = tmp_path / "0004_zero.json"
    data = json.loads(TWO.read_text())
    data["benchmarks"][0]["stats"]["median"] = 0
    zero.write_text(json.dumps(data))
    proc = _cli(str(zero))
    assert proc.returncode == 2 and "a measured time must be positive" in proc.stderr
    assert _cli("--plots").returncode == 2


def test_cli_reads_default_storage(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / ".benchmarks")
    proc = _cli(cwd=tmp_path)
    assert proc.returncode == 1 and "== geomeans ==" in proc.stdout


def test_end_to_end_cases_get_their_own_table(tmp_path):
    data = json.loads(TWO.read_text())
    extra = {"case_kind": "e2e", "batch": 1, "gflops": 90.0, "pct_peak": 33.0, "speedup_vs_torch": 1.2,
             "speedup_vs_torch_ci": [1.1, 1.3], "speedup_vs_torch_best": 1.25, "matmul_share": 0.9,
             "noise_floor": 0.02, "inconclusive": False}
    stats = {"median": 0.02, "mean": 0.021, "stddev": 0.001, "rounds": 20}
    data["benchmarks"].append({"name": "test_e2e[e2e-bert-base-seq128-rule_based]", "stats": stats, "extra_info": extra,
                               "params": {"e2e_model": "bert-base", "seq": 128, "schedule": "rule_based"}})
    path = tmp_path / "0003_e2e.json"
    path.write_text(json.dumps(data))
    rep = build_report([path])
    row = rep.e2e.iloc[0]
    assert (row["model"], row["seq"], row["schedule"]) == ("bert-base", 128, "rule_based")
    assert row["median_ms"] == pytest.approx(20.0) and row["speedup_vs_torch_lo"] == 1.1
    assert row["speedup_vs_torch_best"] == 1.25 and pd.isna(row["widest_case"])  # saved before the grid named it
    assert "e2e" in rep.tables() and len(rep.latency) == len(build_report([TWO]).latency)  # kernel tables unchanged
    assert "e2e" not in build_report([TWO]).tables()
    data["benchmarks"][-1]["stats"]["median"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(ReportError, match="e2e case"):
        build_report([path])


def _e2e_only_run(tmp_path: Path, name: str = "0004_e2e_only.json") -> Path:
    """A run of the end-to-end grid alone: its machine info from a real run, one layer case, no kernel case."""
    data = json.loads(TWO.read_text())
    extra = {"case_kind": "e2e", "batch": 1, "gflops": 90.0, "speedup_vs_torch": 0.9,
             "speedup_vs_torch_ci": [0.85, 0.95], "matmul_share": 0.94, "noise_floor": 0.03, "inconclusive": True,
             "group_widest_case": "rule_based"}
    data["benchmarks"] = [{"name": "test_e2e[e2e-bert-base-seq128-rule_based]", "extra_info": extra,
                           "stats": {"median": 0.018, "mean": 0.0185, "stddev": 0.0005, "rounds": 20},
                           "params": {"e2e_model": "bert-base", "seq": 128, "schedule": "rule_based"}}]
    data["datetime"] = "2000-01-01T00:00:00+00:00"  # older than every kernel run: the default base, were it eligible
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_a_run_of_the_end_to_end_grid_alone_reports_its_table(tmp_path):
    path = _e2e_only_run(tmp_path)
    rep = build_report([path])
    assert len(rep.runs) == 1 and rep.latency.empty and rep.comparison is None
    assert rep.e2e["median_ms"].tolist() == [pytest.approx(18.0)] and rep.e2e["inconclusive"].tolist() == [True]
    assert rep.e2e["widest_case"].tolist() == ["rule_based"]  # the layer whose ratio to PyTorch kept the group open
    proc = _cli(str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "== e2e ==" in proc.stdout and "== latency ==\n(none)" in proc.stdout
    assert (tmp_path / "out" / "e2e.csv").read_text().count("\n") == 2  # header and the one layer case


def test_end_to_end_runs_beside_kernel_runs_are_never_the_comparison_base(tmp_path):
    e2e = _e2e_only_run(tmp_path)
    rep = build_report([e2e, ONE, TWO])  # the e2e run is the oldest, yet the base is a kernel run
    assert rep.settings["base"] != e2e.stem and not rep.e2e.empty and not rep.comparison.empty
    with pytest.raises(ReportError, match="holds only end-to-end cases; choose a run with kernel cases"):
        build_report([e2e, ONE], base=e2e.stem)
