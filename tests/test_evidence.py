"""The evidence command: every study is runnable, and its files are sound."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from matmul import bert_shapes, host_facts
from matmul.measure.candidates import check_candidate
from matmul.measure.evidence import (
    ABLATIONS,
    Study,
    ablation_values,
    get_study,
    overall,
    run_study,
    studies,
    study_names,
    write_study,
    write_summary,
)
from matmul.schedules.rules import decide, parse_overrides

from .profiles import PROFILES


@pytest.mark.parametrize("study", studies().values(), ids=study_names())
def test_every_pair_names_legal_candidates(study):
    if study.name == "prefetch" and not any(decide(w.shape, host_facts()).prefetch for w in bert_shapes()):
        assert not study.pairs and "nothing to pin against" in study.notes  # R14 acts on no BERT shape here
        return
    assert study.pairs, f"{study.name} has no pair on this host"
    for a, b in study.pairs:
        assert check_candidate(a) == check_candidate(b) == "tvm"


@pytest.mark.parametrize("facts", PROFILES.values(), ids=PROFILES.keys())
@pytest.mark.parametrize("knob", ABLATIONS)
def test_rule_ablations_pin_one_knob_legally_on_every_bert_shape(knob, facts):
    study = studies(facts)[knob]
    if knob == "prefetch" and not any(decide(w.shape, facts).prefetch for w in bert_shapes()):
        assert not study.pairs and "nothing to pin against" in study.notes, facts.profile
        return
    assert study.pairs, f"no {knob} alternative on {facts.profile}"
    for a, b in study.pairs:
        assert a == "rule_based"
        base, pinned = parse_overrides(b)
        assert base == "rule_based" and list(pinned) == [knob]
        for w in study.loads():  # the BERT shapes (pack_b, order, prefetch: those where the rules choose it)
            plan = decide(w.shape, facts, overrides=pinned)
            default = decide(w.shape, facts)
            assert (plan.config, plan.prefetch) != (default.config, default.prefetch), f"{b} changes nothing on {w.id}"
            assert plan.config.padded(w.shape) == (w.shape.M, w.shape.N, w.shape.K), f"{b} pads {w.id}"


@pytest.mark.parametrize("facts", PROFILES.values(), ids=PROFILES.keys())
def test_the_prefetch_ablation_takes_exactly_the_bert_shapes_where_the_rules_prefetch(facts):
    study = studies(facts)["prefetch"]
    chosen = {(w.kernel, w.M) for w in bert_shapes() if decide(w.shape, facts).prefetch}
    loads = {(w.kernel, w.M) for w in study.loads()} if study.pairs else set()
    assert loads <= chosen  # never a shape where the pin would time the rules' plan against itself
    # every kernel that prefetches somewhere is in, at every M where all of those kernels prefetch
    kernels = {k for k, _ in chosen}
    assert loads == {(k, m) for k in kernels for m in {m for _, m in chosen}
                     if all((k2, m) in chosen for k2 in kernels)}
    assert bool(study.pairs) == bool(loads) and study.rule == "R14"
    if facts.half_rate_fma:  # Zen 4: BERT-base's MLP expand reads its 9 MiB B in place from 16 rows up
        assert study.pairs == (("rule_based", "rule_based[prefetch=off]"),) and ("mlp_expand", 128) in loads


@pytest.mark.parametrize("facts", PROFILES.values(), ids=PROFILES.keys())
def test_ablation_values_follow_the_vector_width_and_the_rules_tk(facts):
    lanes = facts.simd_lanes_fp32
    rule = decide(bert_shapes()[0].shape, facts).config
    rule_jpacks = {decide(w.shape, facts).config.jpack for w in bert_shapes()}
    assert ablation_values("jpack", facts) == tuple(v for v in (lanes, 2 * lanes, 4 * lanes) if v not in rule_jpacks)
    assert ablation_values("writeback", facts) and all(v % lanes == 0 and v > lanes for v in ablation_values("writeback", facts))
    rule_tks = {decide(w.shape, facts).config.tk for w in bert_shapes()}
    tks = ablation_values("tk", facts)
    assert tks and all(v % lanes == 0 and v not in rule_tks for v in tks)
    assert set(tks) <= {rule.tk // 4, rule.tk // 2, rule.tk * 3 // 2, rule.tk * 2}


def test_studies_differ_between_an_avx2_and_an_avx512_machine():
    assert ablation_values("jpack", PROFILES["avx2"]) != ablation_values("jpack", PROFILES["avx512"])


def test_unknown_study_lists_the_studies():
    with pytest.raises(ValueError, match="unknown study 'x'; choose from: ksplit, parallel"):
        get_study("x")


def test_a_study_runs_and_writes_its_files(tmp_path):
    study = Study("unroll", "tiny", (("rule_based", "rule_based[unroll=1]"),), (16,), calls=1, rule="R9")
    result = run_study(study, kernels=["qkv"], blocks=2)
    assert list(result.table["b"]) == ["rule_based[unroll=1]"]
    assert (result.table["speedup_b_over_a"] > 0).all()
    assert overall(result) == {("rule_based", "rule_based[unroll=1]"): pytest.approx(result.table["speedup_b_over_a"][0])}
    files = write_study(result, tmp_path)
    folder = tmp_path / host_facts().profile
    assert {f.name for f in files} == {"unroll.csv", "unroll-geomean.csv", "unroll.json", "SUMMARY.md"}
    assert all(f.parent == folder for f in files)
    meta = json.loads((folder / "unroll.json").read_text())
    assert meta["shapes"] == ["qkv-M16"] and meta["blocks"] == 2 and meta["profile"] == host_facts().profile
    geo = pd.read_csv(folder / "unroll-geomean.csv")
    assert set(geo["kernel"]) == {"qkv", "all"}
    summary = (folder / "SUMMARY.md").read_text()
    assert "## unroll (R9)" in summary and "rule_based[unroll=1]" in summary
    assert not list(folder.glob(".*.tmp"))


def test_summary_refuses_a_corrupt_study_file_and_leaves_it(tmp_path):
    (tmp_path / "tk-geomean.csv").write_text("\x00\x01 not a csv")
    with pytest.raises(ValueError, match="tk-geomean.csv"):
        write_summary(tmp_path)
    assert (tmp_path / "tk-geomean.csv").read_text() == "\x00\x01 not a csv"


def test_a_study_with_nothing_to_pin_is_skipped_with_its_reason(monkeypatch, tmp_path, capsys):
    """On a machine where the rules take row blocks first at every M (or no value of a knob pins legally), the
    ablation has no pair: `evidence` says why and writes nothing, instead of failing on an empty table."""
    from matmul.cli import main
    from matmul.cli import measure as cli_measure
    from matmul.measure.evidence import Study

    empty = Study("order", "q", (), (16,), rule="R8", notes="nothing to pin against here")
    monkeypatch.setattr(cli_measure, "get_study", lambda name: empty)
    assert main(["evidence", "order", "--out", str(tmp_path)]) == 0
    assert "skipped: nothing to pin against here" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
