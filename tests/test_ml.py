"""The learned variant: the rule template's candidate configs, the measured
sweep (its records and their failure modes), the dataset, deterministic
training, the shipped model, every fallback of ml_guided, and the
leave-one-shape-out evaluation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm.s_tir import Schedule

from matmul import MatmulShape, build, host_facts, kernel_shape, verify
from matmul.core.kernel import matmul_module
from matmul.core.registry import get_variant, variant_decisions
from matmul.core.store import read_profile_facts
from matmul.core.workloads import bert_shapes
from matmul.measure.sweep import sweep_workload
from matmul.schedules import ml
from matmul.schedules.rules import RuleConfig, RuleError, apply_config, decide
from matmul.schedules.template import (
    TemplateError,
    candidate_configs,
    config_key,
    config_name,
    read_records,
    record_path,
    template_dir,
)

pytestmark = pytest.mark.ml
ROOT = Path(__file__).resolve().parents[1]
from .profiles import HOST, PROFILES, RUNNABLE

FACTS = host_facts()
PROFILES = {**PROFILES, "host": HOST}
#: Two small workloads of one made-up kernel: enough for every code path, built in seconds.
TINY = (MatmulShape(16, 64, 48), MatmulShape(32, 64, 48))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning")
    for shape in TINY:
        sweep_workload(shape, configs=6, calls=1, root=root)
    return root


@pytest.fixture(scope="module")
def tiny_models(tiny_root, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    ml.train(ml.dataset(root=tiny_root, sources=["template"]), root=models, rounds=20)
    return models


def _copy_models(src: Path, dst: Path) -> tuple[Path, Path]:
    shutil.copytree(src, dst)
    return ml.model_paths(FACTS, dst)


def _rule(shape: MatmulShape) -> RuleConfig:
    return decide(shape, FACTS).config


# --------------------------------------------------------------------------- the candidate set
@pytest.mark.parametrize("kernel,M", [("qkv", 16), ("mlp_expand", 128), ("mlp_reduce", 384)])
def test_candidates_are_legal_distinct_deterministic_and_start_with_the_rules(kernel, M):
    shape = kernel_shape(kernel, M)
    configs = candidate_configs(shape, FACTS)
    assert configs == candidate_configs(shape, FACTS)
    assert configs[0] == _rule(shape) and len(configs) == 28
    assert len({config_key(c) for c in configs}) == len(configs)
    for c in configs:
        c.check()
    knobs = {k: {getattr(c, k) for c in configs} for k in ("tm", "tn", "tk", "jpack", "unroll", "pack_b", "order")}
    assert all(len(v) >= 2 for v in knobs.values()), knobs  # every knob is really explored


@settings(max_examples=12, deadline=None)
@given(M=st.integers(1, 400), K=st.sampled_from([8, 40, 64, 768, 3072]), N=st.sampled_from([8, 24, 100, 768]))
def test_every_candidate_schedules_on_any_shape(M, K, N):
    shape = MatmulShape(M, K, N)
    configs = candidate_configs(shape, FACTS, limit=8)
    assert configs and configs[0] == _rule(shape)
    for c in configs:
        apply_config(Schedule(matmul_module(shape, "float32", "NN")), c, shape)


def test_every_candidate_of_a_small_shape_computes_the_right_product():
    shape = MatmulShape(20, 96, 40)
    for c in candidate_configs(shape, FACTS):
        check = verify(build(config_name(c), shape))
        assert check.ok, (c, check)


def test_config_name_pins_every_knob():
    shape = kernel_shape("qkv", 64)
    for c in candidate_configs(shape, FACTS)[:6]:
        d = variant_decisions(config_name(c), shape)
        assert {k: d[k] for k in dataclasses.asdict(c)} == c.as_dict()
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        candidate_configs(shape, FACTS, limit=0)


# --------------------------------------------------------------------------- the sweep's records
def test_sweep_keeps_one_record_per_config_and_resumes(tiny_root):
    for shape in TINY:
        data = read_records(record_path(shape, root=tiny_root))
        configs = [tuple(r["config"].values()) for r in data["records"]]
        assert len(configs) == 6 == len(set(configs))
        assert data["records"][0]["config"] == _rule(shape).as_dict()  # measured against itself: the noise
        assert all(r["speedup"] > 0 and r["rule_s"] > 0 and r["config_s"] > 0 for r in data["records"])
        assert data["profile"] == FACTS.profile and data["workload"]["M"] == shape.M
    before = record_path(TINY[0], root=tiny_root).read_bytes()
    again = sweep_workload(TINY[0], configs=6, calls=1, root=tiny_root)
    assert again.measured == 0 and again.total == 6
    assert record_path(TINY[0], root=tiny_root).read_bytes() == before


def test_records_over_an_older_rules_config_are_linked_to_the_current_one_or_left_out():
    now, old, other = (_rule(TINY[0]), dataclasses.replace(_rule(TINY[0]), unroll=1),
                       dataclasses.replace(_rule(TINY[0]), unroll=2))

    def rec(cfg, speedup, basis=None):
        return {"config": cfg.as_dict(), "speedup": speedup, **({"rule_config": basis.as_dict()} if basis else {})}

    # a sweep before rule_config: its first record is the rules' config then, the basis of every record
    swept = [rec(old, 1.0), rec(now, 1.25), rec(other, 0.5)]
    out = ml.rebased(swept, now)
    assert [r["speedup"] for r in out] == pytest.approx([0.8, 1.0, 0.4])  # over the current rules' config
    assert ml.rebased([rec(old, 1.0), rec(other, 0.5)], now) == []  # the current config never measured: out
    again = swept + [rec(now, 1.01, now), rec(other, 0.45, now)]  # measured again over the current one
    assert ml.rebased(again, now) == again[3:]
    assert ml.rebased(swept, old) == swept  # nothing changed: the records as they are


def test_after_a_rule_change_the_sweep_measures_over_the_new_rules_config(tiny_root, tmp_path):
    root = tmp_path / "t"
    shutil.copytree(tiny_root, root)
    path = record_path(TINY[0], root=root)
    data = json.loads(path.read_text())
    old = dataclasses.replace(_rule(TINY[0]), unroll=1)  # as if the rules chose this when the sweep ran
    data["records"] = [{**r, "rule_config": old.as_dict()} for r in data["records"][1:]]  # the rule not measured
    path.write_text(json.dumps(data))
    assert ml.rebased(read_records(path)["records"], _rule(TINY[0])) == []
    out = sweep_workload(TINY[0], configs=6, calls=1, root=root)
    assert out.measured == 6 and out.total == 11  # the 5 older records kept on file
    recs = read_records(path)["records"]
    assert all(r["rule_config"] == _rule(TINY[0]).as_dict() for r in recs[5:])
    assert ml.rebased(recs, _rule(TINY[0])) == recs[5:]
    assert sweep_workload(TINY[0], configs=6, calls=1, root=root).measured == 0


def test_a_pair_whose_control_reads_off_the_workloads_median_is_timed_again(tmp_path, monkeypatch):
    """The rules' config is timed in every pair: a pair whose rules' median lies more than OFF_MEDIAN from the
    others' was timed in another machine state. It is timed again, and the try closest to the median is kept."""
    from matmul.measure import sweep as sweep_mod

    script = iter([(1.0, 1.0), (1.4, 1.0), (1.0, 1.0)]  # no median yet: the 2nd pair is checked at the end
                  + [(1.5, 1.0), (1.02, 1.0)]  # 4th pair: control 1.5x off, retried: 1.02
                  + [(2.0, 1.0), (1.3, 1.0), (1.6, 1.0)]  # 5th: never near; the closest try (1.3) is kept
                  + [(0.95, 1.0)]  # 6th: within OFF_MEDIAN, one try
                  + [(1.2, 1.0), (1.5, 1.0)])  # the 2nd again: 1.2 beats its first 1.4; at most 2 more tries

    def fake_timer(cands, *, blocks, calls):
        rule_s, cfg_s = next(script)
        return [rule_s] * 4, [cfg_s] * 4
    monkeypatch.setattr(sweep_mod, "time_interleaved", fake_timer)
    sweep_workload(TINY[0], configs=6, calls=1, root=tmp_path)
    recs = read_records(record_path(TINY[0], root=tmp_path))["records"]
    assert [(r["rule_s"], r["tries"]) for r in recs] == [(1.0, 1), (1.2, 3), (1.0, 1), (1.02, 2), (1.3, 3),
                                                          (0.95, 1)]
    assert [round(r["speedup"], 2) for r in recs] == [1.0, 1.2, 1.0, 1.02, 1.3, 0.95]
    assert sweep_mod.PAIR_RETRIES == 2 and 0 < sweep_mod.OFF_MEDIAN < 0.5
    with pytest.raises(StopIteration):  # every scripted pair was used: no more, no fewer tries
        next(script)


def test_a_corrupt_or_foreign_record_file_is_named_and_left_alone(tiny_root, tmp_path):
    root = tmp_path / "t"
    shutil.copytree(tiny_root, root)
    path = record_path(TINY[0], root=root)
    path.write_bytes(path.read_bytes()[:-40])
    cut = path.read_bytes()
    for call in (lambda: read_records(path), lambda: sweep_workload(TINY[0], configs=6, root=root),
                 lambda: ml.dataset(root=root)):
        with pytest.raises(TemplateError, match=f"{path.name}.*corrupt.*left untouched"):
            call()
    assert path.read_bytes() == cut
    other = record_path(TINY[1], root=root)
    data = json.loads(other.read_text())
    data["profile"] = "zen9-64c-simd16-t64"
    other.write_text(json.dumps(data))
    with pytest.raises(TemplateError, match="never serve another"):
        read_records(other)


# --------------------------------------------------------------------------- the dataset
def test_dataset_has_a_row_per_record_with_features_and_targets(tiny_root):
    df = ml.dataset(root=tiny_root, sources=["template"])
    assert len(df) == 12 and set(df["source"]) == {"template"} and df["workload"].nunique() == 2
    for col in (*ml.FEATURES, *ml.TARGET_KNOBS, "cache_write", "decompose_reduction", "rel", "target", "profile"):
        assert col in df, col
    assert (df.groupby("workload")["rel"].max() == 1.0).all()
    assert (df[df["is_rule"] == 1]["target"] == 0).all() and df["target"].abs().max() <= ml.TARGET_CLIP
    assert (df["is_rule"].groupby(df["workload"]).sum() == 1).all()
    assert ((df["M"] * df["N"]).apply(lambda x: x > 0)).all() and set(df["K"]) == {64}


def test_dataset_reads_every_metaschedule_record_as_knobs():
    from matmul.schedules.metaschedule.database import has_record

    if not has_record(kernel_shape("qkv", 16)):
        pytest.skip(f"the shipped MetaSchedule database has no records for profile {FACTS.profile}")
    df = ml.dataset(sources=["metaschedule"])
    assert len(df) >= 24 and set(df["source"]) == {"metaschedule"}
    assert (df["K"] % df["tk"] == 0).all() and (df["jpack"] >= 1).all() and (df["M"] % df["mr"] == 0).all()
    assert df["cache_write"].isin([True, False]).all() and (df.groupby("workload")["rel"].max() == 1.0).all()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_dataset_file_and_its_provenance(tiny_root, tmp_path, suffix):
    from matmul.cli import main

    out = tmp_path / f"data{suffix}"
    assert main(["ml", "dataset", "--root", str(tiny_root), "--sources", "template", "--out", str(out)]) == 0
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["rows"] == 12 and meta["sources"] == {"template": 12} and meta["profile"] == FACTS.profile
    assert meta["file_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    back = ml.read_dataset(out)
    assert len(back) == 12 and list(back.columns) == meta["columns"]
    assert ml.data_hash(ml.training_frame(back)) == ml.data_hash(ml.training_frame(
        ml.dataset(root=tiny_root, sources=["template"])))


def test_dataset_bad_inputs_name_the_choices(tmp_path):
    with pytest.raises(ValueError, match="choose from: template, metaschedule"):
        ml.dataset(sources=["autotvm"])
    with pytest.raises(ValueError, match="no tuning records.*ml sweep"):
        ml.dataset(root=tmp_path)
    with pytest.raises(ValueError, match=r"must end in \.csv or \.parquet"):
        ml.write_dataset(pd.DataFrame({"source": ["template"], "workload": ["w"]}), tmp_path / "d.xlsx")
    with pytest.raises(ValueError, match="no dataset at"):
        ml.read_dataset(tmp_path / "missing.csv")


def test_a_dataset_without_the_columns_training_reads_is_named_with_how_to_rebuild(tmp_path, capsys):
    from matmul.cli import main

    bad = tmp_path / "old.csv"
    bad.write_text("workload,M,K,N\nw,1,2,3\n")
    why = f"dataset {bad} lacks the column(s) source, target, speedup_vs_rule, rel; rebuild it with `python -m"
    with pytest.raises(ValueError, match=re.escape(why + " matmul ml dataset`")):
        ml.read_dataset(bad)
    with pytest.raises(ValueError, match=r"the dataset lacks the column\(s\) source, target"):
        ml.training_frame(pd.DataFrame({"workload": ["w"], "rel": [1.0]}))
    out = tmp_path / "eval"
    for cmd in (["train", "--model-root", str(tmp_path / "models")], ["evaluate", "--no-measure", "--out", str(out)]):
        assert main(["ml", *cmd, "--dataset", str(bad)]) == 2
        err = capsys.readouterr().err
        assert f"{bad} lacks the column(s) source, target, speedup_vs_rule, rel" in err and "ml dataset" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.csv"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--cross"], "--dataset applies to one profile's model; --cross reads every profile's records"),
    (["evaluate", "--leave-profile-out", FACTS.profile, "--no-measure"],
     "--leave-profile-out reads every profile's records under --root, not --dataset"),
])
def test_a_dataset_is_refused_beside_a_split_that_reads_every_profile(argv, message, tmp_path, capsys):
    from matmul.cli import main

    data = tmp_path / "d.csv"
    data.write_text("source,workload,target,speedup_vs_rule,rel\n")
    where = ["--model-root", str(tmp_path / "models")] if argv[0] == "train" else ["--out", str(tmp_path / "eval")]
    assert main(["ml", *argv, "--dataset", str(data), "--root", str(tmp_path / "empty"), *where]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


# --------------------------------------------------------------------------- training
def test_training_is_deterministic_and_saves_text_with_a_sidecar(tiny_root, tmp_path):
    df = ml.dataset(root=tiny_root, sources=["template"])
    texts = []
    for n in range(2):
        (model, side), meta = ml.train(df, root=tmp_path / str(n), rounds=20)
        texts.append(model.read_bytes())
        side_meta = json.loads(side.read_text())
        assert side_meta["model_sha256"] == hashlib.sha256(texts[-1]).hexdigest()
        assert side_meta["features"] == list(ml.FEATURES) and side_meta["params"]["deterministic"] is True
        import lightgbm

        assert side_meta["lightgbm_version"] == lightgbm.__version__ and side_meta["data_sha256"] == ml.data_hash(
            ml.training_frame(df))
    assert texts[0] == texts[1]
    assert texts[0].startswith(b"tree\nversion=")  # LightGBM's own text format
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pickle"))


# --------------------------------------------------------------------------- the shipped model
def _shipped():
    model, side = ml.model_paths(FACTS, ROOT / "models")
    if not model.is_file():
        pytest.skip(f"no shipped model for profile {FACTS.profile}")
    return model, side


def test_shipped_model_loads_from_its_text_files_and_predicts_every_bert_shape():
    model, side = _shipped()
    assert {p.suffix for p in model.parent.iterdir()} == {".txt", ".json"}  # text and JSON, nothing pickled
    loaded = ml.load_model(FACTS, ROOT / "models")
    assert loaded.path == model and loaded.booster.num_trees() == json.loads(side.read_text())["rounds"]
    for w in bert_shapes():
        pred = ml.predict(w.shape, FACTS, root=ROOT / "models")
        assert pred.fallback is None, pred.fallback
        assert pred.decisions["source"] == "model" and pred.decisions["search_trials"] == 0
        pred.config.check()


SHIPPED_MODELS = sorted(p.parent.name for p in (ROOT / "models").glob(f"*/{ml.MODEL_NAME}.json"))


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_retraining_on_the_shipped_records_reproduces_every_shipped_model(name):
    """On any host: each profile's records carry their machine's facts, so the features, and the model, are
    the ones trained where the records were measured."""
    side = ROOT / "models" / name / f"{ml.MODEL_NAME}.json"
    meta = json.loads(side.read_text())
    if name == ml.CROSS:
        df, skipped = ml.cross_dataset(only=meta["trained_profiles"])
        assert not skipped
    else:
        df = ml.dataset(facts=read_profile_facts(ROOT / "tuning_db" / name), sources=["template"])
    assert ml.data_hash(ml.training_frame(df)) == meta["data_sha256"]
    booster = ml.fit(df, rounds=meta["rounds"])
    assert hashlib.sha256(booster.model_to_string().encode()).hexdigest() == meta["model_sha256"]
    t = ml.training_frame(df)
    assert meta["domain"] == ml.domain_of(t) and meta["margin"] == max(ml.MARGIN, ml.self_pair_noise(t))
    assert sorted(set(t["profile"])) == meta["trained_profiles"]


def test_a_batched_block_keeps_the_rules_config_for_its_slices_and_says_why():
    """The model knows single matmuls; attention's heads (slices) are outside what it was trained on."""
    _shipped()
    shape = MatmulShape(128, 64, 128)
    pred = ml.predict(shape, FACTS, layout="NT", slices=12)
    assert pred.fallback is None and pred.decisions["domain"].startswith("outside: a batched block of 12 slices")
    assert pred.config == decide(shape, FACTS, layout="NT", slices=12).config
    assert ml.predict(shape, FACTS, layout="NT").decisions["domain"] != pred.decisions["domain"]


@pytest.mark.parametrize("target", RUNNABLE)
@pytest.mark.parametrize("kernel,M", [("qkv", 16), ("mlp_reduce", 96)])
def test_ml_guided_from_the_shipped_model_is_correct(kernel, M, target):
    """On the host, and under the AVX2 target where the host has AVX-512 (a profile with no model of its
    own: the cross model serves it)."""
    _shipped()
    shape, facts = kernel_shape(kernel, M), RUNNABLE[target]
    assert verify(build("ml_guided", shape, facts=facts)).ok
    d = variant_decisions("ml_guided", shape, facts=facts)
    assert d["fallback"] is None
    if not ml.model_paths(facts)[0].is_file():
        assert d["model_scope"] == "cross" and facts.profile not in d["trained_profiles"]


# --------------------------------------------------------------------------- fallbacks
def _assert_falls_back(shape, root, caplog, match):
    caplog.set_level(logging.WARNING, logger="matmul.schedules.ml")
    pred = ml.predict(shape, FACTS, root=root)
    assert pred.fallback is not None and pred.decisions["source"] == "rule_based"
    assert pred.decisions["fallback"] == pred.fallback
    assert pred.config == _rule(shape)
    assert pred.fallback and __import__("re").search(match, pred.fallback), pred.fallback
    assert any("falls back to rule_based" in r.getMessage() for r in caplog.records)
    return pred


def _edit_sidecar(side: Path, **changes) -> None:
    meta = json.loads(side.read_text())
    meta.update(changes)
    side.write_text(json.dumps(meta))


FALLBACKS = {
    "missing": (lambda model, side: model.unlink(), r"no model for profile .*ml train"),
    "corrupt-text": (lambda model, side: model.write_bytes(model.read_bytes().replace(b"Tree=3", b"Tree=9")),
                     r"does not match the hash"),
    "truncated-with-its-hash": (
        lambda model, side: (model.write_bytes(model.read_bytes()[:4000]),
                             _edit_sidecar(side, model_sha256=hashlib.sha256(model.read_bytes()).hexdigest())),
        r"LightGBM cannot read .*not a complete LightGBM text model"),
    "corrupt-sidecar": (lambda model, side: side.write_text("{not json"), r"sidecar .* is corrupt"),
    "lightgbm-version": (lambda model, side: _edit_sidecar(side, lightgbm_version="3.3.5"),
                         r"trained with LightGBM '3\.3\.5'"),
    "schema": (lambda model, side: _edit_sidecar(side, schema=99), r"schema 99"),
    "features": (lambda model, side: _edit_sidecar(side, features=["M", "K"]), r"other features"),
    "margin-null": (lambda model, side: _edit_sidecar(side, margin=None), r"margin None, not a non-negative number"),
    "configs-per-shape-text": (lambda model, side: _edit_sidecar(side, configs_per_shape="many"),
                               r"configs_per_shape 'many', not a positive integer"),
    "no-domain": (lambda model, side: _edit_sidecar(side, domain=None), r"no valid trained domain"),
    "trained-profiles-null": (lambda model, side: _edit_sidecar(side, trained_profiles=None),
                              r"trained_profiles None, not a list of profile names"),
    "domain-backwards": (lambda model, side: _edit_sidecar(side, domain={"M": [9, 2], "K": [1, 1], "N": [1, 1],
                                                                         "layouts": ["NN"], "dtypes": ["float32"]}),
                         r"no valid trained domain"),
}


@pytest.mark.parametrize("mode", list(FALLBACKS))
def test_ml_guided_falls_back_on_a_broken_model_and_leaves_the_files(mode, tiny_models, tmp_path, caplog):
    breaker, match = FALLBACKS[mode]
    root = tmp_path / "models"
    model, side = _copy_models(tiny_models, root)
    breaker(model, side)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    _assert_falls_back(TINY[0], root, caplog, match)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_a_b_larger_than_any_trained_on_lies_outside_even_with_k_and_n_inside():
    """LLaMA-2-7B's QKV (4096 x 4096, 64 MiB, from DRAM) against records of B up to vit-huge's MLP (26 MiB)."""
    domain = {"M": [1, 384], "K": [512, 5120], "N": [512, 5120], "KN": [512 * 512, 1280 * 5120],
              "layouts": ["NN"], "dtypes": ["float32"]}
    assert ml.domain.check_domain(domain)
    why = ml.outside(domain, MatmulShape(7, 4096, 4096), "float32", "NN")
    assert why and why.startswith("B of K x N = 16777216 elements lies outside the trained 262144..6553600")
    assert ml.outside(domain, MatmulShape(7, 1280, 5120), "float32", "NN") is None
    assert ml.outside({k: v for k, v in domain.items() if k != "KN"}, MatmulShape(7, 4096, 4096), "float32",
                      "NN") is None  # a sidecar written before B's size was recorded: K and N only
    assert not ml.domain.check_domain({**domain, "KN": [9, 2]})


@pytest.mark.parametrize("shape,layout,dtype,why", [
    (MatmulShape(8, 64, 48), "NN", "float32", r"M=8 lies outside the trained 16\.\.32"),
    (MatmulShape(16, 128, 48), "NN", "float32", r"K=128 lies outside the trained 64\.\.64"),
    (MatmulShape(16, 64, 48), "NT", "float32", r"layout NT was not trained on \(NN\)"),
    (MatmulShape(16, 64, 48), "NN", "float64", r"dtype float64 was not trained on \(float32\)"),
])
def test_outside_the_trained_domain_the_model_keeps_the_rules_and_says_why(shape, layout, dtype, why, tiny_models):
    pred = ml.predict(shape, FACTS, dtype=dtype, layout=layout, root=tiny_models)
    assert pred.fallback is None and pred.decisions["source"] == "model"
    assert pred.config == decide(shape, FACTS, dtype=dtype, layout=layout).config
    assert __import__("re").match("outside: " + why, pred.decisions["domain"]), pred.decisions["domain"]
    assert ml.predict(TINY[1], FACTS, root=tiny_models).decisions["domain"] == "inside"


def test_sweep_speedups_are_read_against_the_rules_own_copy():
    """A slow reference build inflates every record of a workload alike; the rules' own record divides it out."""
    out = ml.data.over_rules_copy([1.8, 1.9, 0.9], [True, False, False])
    assert out == pytest.approx([1.8, 1.9 / 1.8, 0.9 / 1.8])  # the rules' record keeps its raw ratio (the noise)
    assert ml.data.over_rules_copy([1.2, 0.8], [False, False]) == [1.2, 0.8]  # no rules' record: as measured


def test_a_slow_reference_build_changes_no_target(tiny_root, tmp_path):
    root = tmp_path / "db"
    shutil.copytree(tiny_root, root)
    before = ml.dataset(root=root, sources=["template"])
    for f in root.glob("*/template/*.json"):  # the sweep's reference build read twice as slow: every ratio doubles
        doc = json.loads(f.read_text())
        for r in doc["records"]:
            r["rule_s"], r["speedup"] = 2 * r["rule_s"], 2 * r["speedup"]
        f.write_text(json.dumps(doc))
    after = ml.dataset(root=root, sources=["template"])
    assert after["target"].tolist() == pytest.approx(before["target"].tolist())
    assert after["rel"].tolist() == pytest.approx(before["rel"].tolist())
    rule = after["is_rule"] == 1  # the rules' own records keep their raw ratio: the noise sample
    raw = 2 * before.loc[rule, "speedup_vs_rule"]
    assert after.loc[rule, "speedup_vs_rule"].tolist() == pytest.approx(raw.tolist())


def test_the_margin_is_never_below_the_sweeps_own_noise(tiny_root, tmp_path):
    df = ml.dataset(root=tiny_root, sources=["template"])
    rule = df["is_rule"] == 1
    df.loc[rule, "speedup_vs_rule"] = [1.3, 1 / 1.3]  # the rules' config read 30% off itself
    _, meta = ml.train(df, root=tmp_path, rounds=5)
    assert meta["noise"] == pytest.approx(math.log(1.3)) and meta["margin"] == pytest.approx(math.log(1.3))
    df.loc[rule, "speedup_vs_rule"] = 1.0
    _, meta = ml.train(df, root=tmp_path, rounds=5)
    assert meta["noise"] == 0 and meta["margin"] == ml.MARGIN


LANES = FACTS.simd_lanes_fp32


@pytest.mark.parametrize("bad", [
    # 8 rows x 4 vectors: 32 accumulators + 4 B vectors + 1 broadcast, over any register file of 16 or 32
    {"mr": 8, "jpack": 4 * LANES, "tm": 16, "tn": 4 * LANES},
    {"tn": 36},  # not a multiple of any j-pack the rules pick (a multiple of the lanes, 36 is not of 8 or 16)
])
def test_ml_guided_falls_back_on_an_illegal_predicted_config(bad, tiny_models, monkeypatch, caplog):
    shape = TINY[0]

    def candidates(shape, facts, **kw):
        return [dataclasses.replace(_rule(shape), **bad)]

    monkeypatch.setattr(ml.model, "candidate_set", candidates)
    pred = _assert_falls_back(shape, tiny_models, caplog, r"illegal")
    assert pred.decisions["search_trials"] == 0


def test_a_config_is_idle_with_fewer_tasks_than_the_threads_the_rules_keep_busy():
    assert list(ml.leaves_threads_idle([1, 2, 8], 8, 2)) == [True, False, False]
    assert list(ml.leaves_threads_idle([1, 3, 4, 12], 4, 12)) == [True, True, False, False]  # the rules keep 4 busy
    assert not ml.leaves_threads_idle([1, 2], 1, 2).any()  # the rules' own single task: nothing is idler


def test_ml_guided_never_picks_a_config_that_leaves_threads_idle(tiny_models, monkeypatch):
    """A config with fewer tasks than the threads the rules keep busy is not a candidate, whatever it scores."""
    if FACTS.runtime_threads < 2:
        pytest.skip("one runtime thread: no config leaves a thread idle")
    shape = MatmulShape(1, 64, 16 * LANES)
    rule = _rule(shape)
    mp, np_, _ = rule.padded(shape)
    idle = dataclasses.replace(rule, tm=mp, tn=np_, kparts=1)  # one task: one thread works
    assert idle.tasks(shape) == 1 < min(FACTS.runtime_threads, rule.tasks(shape))
    monkeypatch.setattr(ml.model, "candidate_set", lambda shape, facts, **kw: [idle, rule])
    pick = ml.model.pick
    # whatever the tiny model scores, it "prefers" the idle config by far
    monkeypatch.setattr(ml.model, "pick", lambda scores, is_rule, margin: pick(scores + [10.0, 0.0], is_rule, margin))
    monkeypatch.setattr(ml.model, "outside", lambda *a: None)  # whatever the tiny model's domain
    pred = ml.predict(shape, FACTS, root=tiny_models)
    assert config_key(pred.config) == config_key(rule)
    assert pred.decisions["idle_threads_excluded"] == 1 and pred.decisions["candidates"] == 2


def test_for_a_weight_packed_once_keeping_the_rules_config_keeps_the_one_for_b_packed_once(tiny_models, tmp_path,
                                                                                           monkeypatch):
    """The model scores configs for B packed per call; where it keeps the rules' config (picked, outside its
    domain, or fallen back), a weight packed once gets the rules' config for that (R4's TK from L2 on
    half-rate FMAs), as rule_based_prepacked does, and a config the model picks over the rules' stays as picked."""
    facts = dataclasses.replace(FACTS, half_rate_fma=True, l2_bytes=FACTS.l2_bytes or 1 << 20)
    shape = kernel_shape("qkv", 128)
    per_call = decide(shape, facts, layout="NT").config
    once = decide(shape, facts, layout="NT", b_constant=True).config
    assert once.tk > per_call.tk  # the case this is about
    other = dataclasses.replace(per_call, tn=per_call.jpack)
    monkeypatch.setattr(ml.model, "candidate_set", lambda shape, facts, **kw: [per_call, other])
    monkeypatch.setattr(ml.model, "outside", lambda *a: None)  # whatever the tiny model's domain
    pick = ml.model.pick
    for bias, want in (([0.0, -10.0], once), ([-10.0, 0.0], other)):
        monkeypatch.setattr(ml.model, "pick", lambda scores, is_rule, margin, b=bias: pick(scores + b, is_rule, margin))
        pred = ml.predict(shape, facts, layout="NT", root=tiny_models, b_constant=True)
        assert pred.fallback is None and pred.config == want
        assert pred.decisions["rules_config"] == (want == once)
        assert ml.predict(shape, facts, layout="NT", root=tiny_models).config in (per_call, other)
    monkeypatch.setattr(ml.model, "outside", lambda *a: "far from the training shapes")
    assert ml.predict(shape, facts, layout="NT", root=tiny_models, b_constant=True).config == once
    fell = ml.predict(shape, facts, layout="NT", root=tmp_path / "none", b_constant=True)  # no model at all
    assert fell.config == once and fell.fallback and fell.decisions["source"] == "rule_based"


def test_the_variant_records_the_fallback_and_still_computes_the_right_product(tmp_path, monkeypatch):
    monkeypatch.setenv(ml.MODEL_ROOT_ENV, str(tmp_path))
    shape = kernel_shape("qkv", 16)
    d = variant_decisions("ml_guided", shape)
    assert d["source"] == "rule_based" and d["fallback"].startswith("no model for profile")
    assert verify(build("ml_guided", shape)).ok
    assert get_variant("ml_guided").family == "learned"


@pytest.mark.parametrize("facts", PROFILES.values(), ids=PROFILES.keys())
def test_clamp_fits_sizes_to_the_shape_and_refuses_broken_relations(facts):
    lanes = facts.simd_lanes_fp32
    shape = MatmulShape(10, 40, 3 * lanes)
    # a config made for a machine with half the lanes: the clamp gives it this machine's vector width
    big = RuleConfig(tm=64, tn=12 * lanes, tk=256, mr=2, jpack=lanes, vector=lanes // 2, writeback=lanes // 2,
                     unroll=8)
    cfg, changed = ml.clamp(big, shape, facts)
    assert cfg.vector == lanes and cfg.tm == 10 and cfg.tn == 3 * lanes and cfg.tk == -(-40 // lanes) * lanes
    assert cfg.tk % cfg.unroll == 0 and any(c.startswith("tm 64->10") for c in changed)
    if facts is HOST:
        apply_config(Schedule(matmul_module(shape, "float32", "NN")), cfg, shape)
    with pytest.raises(RuleError, match="not a multiple of jpack"):
        ml.clamp(dataclasses.replace(big, tn=3 * lanes, vector=lanes, writeback=lanes, jpack=lanes * 2), shape,
                 facts)


# --------------------------------------------------------------------------- evaluation and CLI
def test_leave_one_out_never_trains_on_the_held_out_shape(tiny_root, monkeypatch):
    seen = []
    real = ml.fit

    def spy(train, **kw):
        seen.append(set(train["workload"]))
        return real(train, rounds=10)

    monkeypatch.setattr(ml.evaluate, "fit", spy)
    loo = ml.leave_one_out(ml.dataset(root=tiny_root, sources=["template"]))
    assert len(loo) == 2 and [len(s) for s in seen] == [1, 1]
    for key, trained_on in zip(loo["workload"], seen):
        assert key not in trained_on
    assert loo["rel_pick"].between(0, 1).all()
    # each held-out M lies outside the other shape's single M: the rules' config is kept, as predict would
    assert loo["domain"].str.startswith("outside: M=").all() and loo["picked_rules_config"].all()
    acc = ml.knob_accuracy(loo)
    assert list(acc["knob"]) == list(ml.TARGET_KNOBS) and acc["model_accuracy"].between(0, 1).all()


def test_cli_train_predict_and_evaluate(tiny_root, tmp_path, monkeypatch):
    from matmul.cli import main

    models = tmp_path / "models"
    assert main(["ml", "train", "--root", str(tiny_root), "--model-root", str(models)]) == 0
    monkeypatch.setenv(ml.MODEL_ROOT_ENV, str(models))
    assert main(["ml", "predict", "--shape", "16", "64", "48"]) == 0
    monkeypatch.setenv(ml.MODEL_ROOT_ENV, str(tmp_path / "none"))
    assert main(["ml", "predict", "--shape", "16", "64", "48"]) == 1
    out = tmp_path / "eval"
    monkeypatch.setenv("MATMUL_TUNING_ROOT", str(tiny_root))
    assert main(["ml", "evaluate", "--out", str(out), "--blocks", "2", "--calls", "2"]) == 0
    meas = pd.read_csv(out / "measured.csv")
    assert len(meas) == 2 and (meas["ml_vs_rule"] > 0).all() and meas["ms_s"].isna().all()
    assert "Per-knob accuracy" in (out / "EVALUATION.md").read_text()
    assert (out / "accuracy.csv").is_file() and (out / "loo.csv").is_file()


def test_cli_reports_a_missing_dataset_and_corrupt_records(tmp_path, capsys):
    from matmul.cli import main

    assert main(["ml", "train", "--dataset", str(tmp_path / "nope.csv")]) == 2
    assert "no dataset at" in capsys.readouterr().err
    bad = template_dir(FACTS, tmp_path) / "NN-float32-M1-K8-N8.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("[")
    assert main(["ml", "dataset", "--root", str(tmp_path), "--out", str(tmp_path / "d.csv")]) == 2
    assert "corrupt" in capsys.readouterr().err and bad.read_text() == "["


def test_cli_sweep_writes_records_and_says_how_far_it_got(tmp_path, capsys):
    from matmul.cli import main

    assert main(["ml", "sweep", "--kernels", "qkv", "--m-values", "2", "--configs", "2", "--calls", "1",
                 "--root", str(tmp_path)]) == 0
    data = read_records(record_path(kernel_shape("qkv", 2), root=tmp_path))
    assert len(data["records"]) == 2 and data["records"][0]["config"] == _rule(kernel_shape("qkv", 2)).as_dict()
    err = capsys.readouterr().err
    assert "[1/1] qkv-M2: 2 measured now, 2 on file" in err
