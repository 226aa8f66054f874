"""The cross-profile learned model: each profile's records carry the facts of the machine that measured them,
one model trains on every profile's records, ml_guided uses it on a profile without a model of its own, and
leave-profile-out measures it on a profile it never saw; leave-one-model-out on shapes of a model it never saw."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from matmul import MatmulShape, build, host_facts, kernel_shape, verify
from matmul.core.hardware import HardwareError, HostFacts
from matmul.core.registry import variant_decisions
from matmul.core.store import (
    FACTS_FILE,
    profile_dir,
    read_profile_facts,
    write_profile_facts,
)
from matmul.measure.sweep import sweep_workload
from matmul.schedules import ml
from matmul.schedules.rules import decide
from matmul.schedules.template import template_dir

from .profiles import PROFILES

pytestmark = pytest.mark.ml
FACTS = host_facts()
TINY = (MatmulShape(16, 64, 48), MatmulShape(32, 64, 48))
#: A second machine: another CPU name and twice the L2, so its rows differ in a hardware feature.
OTHER = dataclasses.replace(FACTS, mcpu="othercpu", l2_bytes=2 * (FACTS.l2_bytes or 1 << 20))


def _copy_profile(root, src: HostFacts, dst: HostFacts) -> None:
    """Give ``dst`` the records of ``src`` as if its own machine had measured them."""
    for path in sorted(template_dir(src, root).glob("*.json")):
        data = json.loads(path.read_text())
        data["profile"] = dst.profile
        out = template_dir(dst, root) / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data))
    write_profile_facts(dst, root)


@pytest.fixture(scope="module")
def two_profiles(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning")
    for shape in TINY:
        sweep_workload(shape, configs=6, calls=1, root=root)
    _copy_profile(root, FACTS, OTHER)
    return root


# --------------------------------------------------------------------------- the facts beside the records
@pytest.mark.parametrize("facts", [FACTS, *PROFILES.values()], ids=["host", *PROFILES])
def test_facts_survive_a_round_trip_through_json(facts):
    d = json.loads(json.dumps(facts.as_dict()))
    assert HostFacts.from_dict(d) == dataclasses.replace(facts, target_overridden=facts.target_overridden)


@pytest.mark.parametrize("change,match", [
    ({"simd_lanes_fp32": "16"}, r"simd_lanes_fp32='16'"),
    ({"isa": "avx2"}, r"isa='avx2'"),
    ({"l2_bytes": -1}, r"l2_bytes=-1"),
    ({"runtime_threads": True}, r"runtime_threads=True"),
    ({"l2_ways": 0}, r"l2_ways=0"),
    ({"l2_ways": True}, r"l2_ways=True"),
    ({"half_rate_fma": "yes"}, r"half_rate_fma='yes'"),
    ({"half_rate_fma": 1}, r"half_rate_fma=1"),
    ({"profile": "znver9-2c-simd8-t2"}, r"name profile 'znver9-2c-simd8-t2'"),
])
def test_bad_saved_facts_are_refused_with_the_field(change, match):
    d = {**FACTS.as_dict(), **change}
    with pytest.raises(HardwareError, match=match):
        HostFacts.from_dict(d)
    d = FACTS.as_dict()
    del d["mcpu"]
    with pytest.raises(HardwareError, match="lack the field 'mcpu'"):
        HostFacts.from_dict(d)
    d = FACTS.as_dict()
    del d["l2_ways"], d["half_rate_fma"]  # facts saved before the ways and the FMA rate were recorded: unknown
    assert HostFacts.from_dict(d) == dataclasses.replace(FACTS, l2_ways=None, half_rate_fma=None,
                                                         target_overridden=FACTS.target_overridden)


def test_measuring_writes_the_facts_once_and_a_broken_file_is_named_and_kept(tmp_path):
    sweep_workload(TINY[0], configs=2, calls=1, root=tmp_path)
    pdir = profile_dir(FACTS, tmp_path)
    assert read_profile_facts(pdir) == dataclasses.replace(FACTS, target_overridden=False)
    first = (pdir / FACTS_FILE).read_bytes()
    write_profile_facts(FACTS, tmp_path)
    assert (pdir / FACTS_FILE).read_bytes() == first  # never rewritten
    (pdir / FACTS_FILE).write_text("{oops")
    with pytest.raises(HardwareError, match=rf"{pdir / FACTS_FILE} is corrupt"):
        read_profile_facts(pdir)
    write_profile_facts(FACTS, tmp_path)
    assert (pdir / FACTS_FILE).read_text() == "{oops"
    with pytest.raises(HardwareError, match="is missing"):
        read_profile_facts(tmp_path / "nowhere")
    moved = tmp_path / OTHER.profile
    shutil.copytree(pdir, moved)
    (moved / FACTS_FILE).write_text(json.dumps(FACTS.as_dict()))
    with pytest.raises(HardwareError, match=f"describes profile {FACTS.profile}, not the folder's"):
        read_profile_facts(moved)


# --------------------------------------------------------------------------- the cross-profile dataset
def test_cross_dataset_gives_each_profile_its_own_machine_features(two_profiles, tmp_path):
    df, skipped = ml.cross_dataset(two_profiles)
    assert skipped == {} and sorted(df["profile"].unique()) == sorted([FACTS.profile, OTHER.profile])
    l2 = df.groupby("profile")["l2_kib"].unique()
    assert list(l2[FACTS.profile]) == [FACTS.l2_bytes / 1024] and list(l2[OTHER.profile]) == [OTHER.l2_bytes / 1024]
    per = df.groupby("profile").size()
    assert per[FACTS.profile] == per[OTHER.profile] == 12
    only, _ = ml.cross_dataset(two_profiles, exclude=[FACTS.profile])
    assert set(only["profile"]) == {OTHER.profile}
    with pytest.raises(ValueError, match=r"no rule-template records for profile\(s\) nosuch.*profiles with records"):
        ml.cross_dataset(two_profiles, exclude=["nosuch"])
    with pytest.raises(ValueError, match="no profile left"):
        ml.cross_dataset(two_profiles, exclude=[FACTS.profile, OTHER.profile])
    # a profile whose machine is unknown is left out, with the reason
    root = tmp_path / "root"
    shutil.copytree(two_profiles, root)
    (profile_dir(OTHER, root) / FACTS_FILE).unlink()
    df, skipped = ml.cross_dataset(root)
    assert set(df["profile"]) == {FACTS.profile} and "is missing" in skipped[OTHER.profile]


# --------------------------------------------------------------------------- the cross-profile model
@pytest.fixture(scope="module")
def cross_models(two_profiles, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    df, _ = ml.cross_dataset(two_profiles, exclude=[FACTS.profile])
    ml.train(df, root=models, rounds=20, cross=True)
    return models


def test_a_profile_model_refuses_other_profiles_records(two_profiles, tmp_path):
    df, _ = ml.cross_dataset(two_profiles)
    with pytest.raises(ValueError, match="must be trained on its own records only"):
        ml.train(df, root=tmp_path, rounds=5)


def test_ml_guided_uses_the_cross_model_on_a_profile_without_its_own(cross_models):
    model, side = ml.model_paths(FACTS, cross_models, cross=True)
    assert model.parent.name == ml.CROSS and model.is_file()
    meta = json.loads(side.read_text())
    assert meta["profile"] == ml.CROSS and meta["trained_profiles"] == [OTHER.profile]
    pred = ml.predict(TINY[1], FACTS, root=cross_models)
    assert pred.fallback is None and pred.decisions["model_scope"] == "cross"
    assert pred.decisions["trained_profiles"] == [OTHER.profile]
    pred.config.check()


def test_the_variant_saves_which_profiles_trained_it_and_computes_the_right_product(cross_models, monkeypatch):
    monkeypatch.setenv(ml.MODEL_ROOT_ENV, str(cross_models))
    d = variant_decisions("ml_guided", TINY[0])
    assert d["model_scope"] == "cross" and d["trained_profiles"] == [OTHER.profile] and d["fallback"] is None
    assert verify(build("ml_guided", TINY[0])).ok


def test_the_profile_model_wins_and_a_broken_one_falls_back_not_across(two_profiles, cross_models, tmp_path,
                                                                       caplog):
    root = tmp_path / "models"
    shutil.copytree(cross_models, root)
    own, _ = ml.cross_dataset(two_profiles, only=[FACTS.profile])
    ml.train(own, root=root, rounds=20)
    pred = ml.predict(TINY[0], FACTS, root=root)
    assert pred.decisions["model_scope"] == "profile" and pred.decisions["trained_profiles"] == [FACTS.profile]
    model, _ = ml.model_paths(FACTS, root)
    model.write_text(model.read_text().replace("Tree=1", "Tree=7"))
    pred = ml.predict(TINY[0], FACTS, root=root)
    assert pred.fallback and "does not match the hash" in pred.fallback
    assert pred.config == decide(TINY[0], FACTS).config


def test_missing_everywhere_names_both_models_and_a_moved_model_is_refused(cross_models, tmp_path):
    pred = ml.predict(TINY[0], FACTS, root=tmp_path / "empty")
    assert pred.fallback and "no model for profile" in pred.fallback and "no cross-profile model" in pred.fallback
    assert "ml train --cross" in pred.fallback
    root = tmp_path / "moved"
    shutil.copytree(cross_models / ml.CROSS, ml.model_dir(FACTS, root))  # the cross model posing as the profile's
    pred = ml.predict(TINY[0], FACTS, root=root)
    assert pred.fallback and "was trained as 'cross'" in pred.fallback


# --------------------------------------------------------------------------- leave-profile-out
def test_leave_profile_out_never_trains_on_the_held_out_profile(two_profiles, monkeypatch):
    seen = []
    real = ml.fit

    def spy(train, **kw):
        seen.append(set(train["profile"]))
        return real(train, rounds=10)

    monkeypatch.setattr(ml.evaluate, "fit", spy)
    df, _ = ml.cross_dataset(two_profiles)
    lpo = ml.leave_profile_out(df, FACTS.profile)
    assert seen == [{OTHER.profile}] and len(lpo) == len(TINY)
    assert set(lpo["trained_profiles"]) == {OTHER.profile} and lpo["rel_pick"].between(0, 1).all()
    with pytest.raises(ValueError, match="no template records of profile nosuch"):
        ml.leave_profile_out(df, "nosuch")
    with pytest.raises(ValueError, match="needs records of a profile other than"):
        ml.leave_profile_out(df[df["profile"] == FACTS.profile], FACTS.profile)


def test_cli_cross_training_and_leave_profile_out(two_profiles, tmp_path, monkeypatch, capsys):
    from matmul.cli import main

    models = tmp_path / "models"
    assert main(["ml", "train", "--root", str(two_profiles), "--model-root", str(models), "--cross",
                 "--exclude-profile", FACTS.profile]) == 0
    assert f"from {OTHER.profile}" in capsys.readouterr().out
    assert ml.model_paths(FACTS, models, cross=True)[0].is_file()
    assert main(["ml", "train", "--root", str(two_profiles), "--exclude-profile", "x"]) == 2
    assert "add --cross" in capsys.readouterr().err
    monkeypatch.setenv("MATMUL_TUNING_ROOT", str(two_profiles))
    out = tmp_path / "lpo"
    assert main(["ml", "evaluate", "--leave-profile-out", FACTS.profile, "--out", str(out), "--blocks", "2",
                 "--calls", "1"]) == 0
    text = (out / "EVALUATION.md").read_text()
    assert "leave-profile-out" in text and f"records of {OTHER.profile} only" in text
    assert (out / "measured.csv").is_file()  # the held-out profile is this host's: timed
    out2 = tmp_path / "lpo2"
    assert main(["ml", "evaluate", "--leave-profile-out", OTHER.profile, "--out", str(out2)]) == 0
    assert "not this host's profile" in capsys.readouterr().err and not (out2 / "measured.csv").exists()


# --------------------------------------------------------------------------- leave-one-model-out
@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models-rows")
    for model in ("t5-small", "bert-base"):
        for M in (2, 3):
            sweep_workload(kernel_shape("qkv", M, model), configs=3, calls=1, root=root)
    return root


def test_leave_model_out_holds_out_every_shape_of_the_model_and_only_those(two_models, monkeypatch):
    seen = []
    real = ml.fit

    def spy(train, **kw):
        seen.append(set(zip(train["K"], train["N"])))
        return real(train, rounds=10)

    monkeypatch.setattr(ml.evaluate, "fit", spy)
    df = ml.dataset(root=two_models, sources=["template"])
    lmo = ml.leave_model_out(df, "t5-small")
    assert seen == [{(768, 768)}] and len(lmo) == 2 and set(lmo["K"]) == {512}
    assert (lmo["trained_workloads"] == 2).all()
    # K=512 lies below the trained 768: the model keeps the rules' config there, and the row says so
    assert lmo["domain"].str.startswith("outside: K=512").all() and lmo["picked_rules_config"].all()
    assert ml.model_pairs("distilbert") == ml.model_pairs("bert-base")  # same layer size: left out together
    with pytest.raises(ValueError, match="no template records of llama2-7b's shapes"):
        ml.leave_model_out(df, "llama2-7b")
    with pytest.raises(ValueError, match="nothing left to train on"):
        ml.leave_model_out(df[df["K"] == 512], "t5-small")
    with pytest.raises(ValueError, match="unknown model .gpt-5.; known models: albert-xxlarge, bert-base"):
        ml.leave_model_out(df, "gpt-5")


def test_cli_leave_model_out(two_models, tmp_path, monkeypatch, capsys):
    from matmul.cli import main

    monkeypatch.setenv("MATMUL_TUNING_ROOT", str(two_models))
    out = tmp_path / "lmo"
    assert main(["ml", "evaluate", "--leave-model-out", "bert-base", "--no-measure", "--out", str(out)]) == 0
    text = (out / "EVALUATION.md").read_text()
    assert "leave-one-model-out" in text and "the 2 workloads of bert-base" in text
    assert main(["ml", "evaluate", "--leave-model-out", "bert-base", "--leave-profile-out", "x"]) == 2
    assert "choose one" in capsys.readouterr().err
