"""``metaschedule[from=PROFILE]``: another CPU profile's records, rebuilt and checked for this host.

The shipped databases are transferred to whatever CPU runs the tests; the
fault paths (a record that does not replay, does not verify, or sits in the
wrong folder) use a copy of the session's small tuned database filed under a
made-up profile of the host's CPU.
"""

from __future__ import annotations

import shutil

import pytest

from matmul import bert_shapes, host_facts, verify
from matmul.core.registry import get_variant, schedule, unavailable, variant_decisions
from matmul.core.runner import build
from matmul.core.store import default_root, profile_dir, workload_key
from matmul.core.verify import VerificationError
from matmul.schedules.metaschedule import transfer
from matmul.schedules.metaschedule.database import RECORD_FILE, NoRecordError, records
from matmul.schedules.metaschedule.transfer import TransferError, profiles

from .conftest import TUNED_SHAPE

pytestmark = pytest.mark.metaschedule
SHIPPED = profiles(default_root())
#: The smallest BERT shape of each kernel: the cheapest check that each kernel's records travel.
SMALLEST = [w for w in bert_shapes() if w.M == min(x.M for x in bert_shapes())]


@pytest.fixture(autouse=True)
def _fresh_picks():
    transfer._pick.cache_clear()  # each test sees its own files
    yield
    transfer._pick.cache_clear()


def _source_name(tag: str = "t99") -> str:
    """A profile name of the host's CPU that is not the host's profile (another thread count)."""
    f = host_facts()
    return f"{f.mcpu}-{f.num_cores}c-simd{f.simd_lanes_fp32}-{tag}"


@pytest.fixture
def source_root(tuned_root, tmp_path, monkeypatch):
    """A tuning root holding the session's tuned records under another profile's name, and nothing else."""
    shutil.copytree(profile_dir(host_facts(), tuned_root), tmp_path / _source_name())
    monkeypatch.setenv("MATMUL_TUNING_ROOT", str(tmp_path))
    return tmp_path


def test_shipped_profiles_are_listed():
    assert SHIPPED and all((default_root() / p).is_dir() for p in SHIPPED)


@pytest.mark.parametrize("source", SHIPPED)
@pytest.mark.parametrize("workload", SMALLEST, ids=lambda w: w.id)
def test_every_shipped_profile_serves_this_host(source, workload):
    name = f"metaschedule[from={source}]"
    assert unavailable(name, workload.shape) is None
    d = variant_decisions(name, workload.shape)
    facts = host_facts()
    assert d["from_profile"] == source and d["profile"] == facts.profile and d["verified_here"]
    assert d["record_rank"] == len(d["skipped_records"])  # every faster record was skipped for a reason
    assert d["run_us"] > 0 and d["trials"] >= 64  # the source CPU's time and budget, for the report
    assert verify(build(name, workload.shape), seed=1).ok


def test_plain_metaschedule_keeps_to_its_own_profile(source_root):
    with pytest.raises(NoRecordError):
        records(TUNED_SHAPE)  # the host profile's folder is empty here
    assert "no metaschedule record" in unavailable("metaschedule", TUNED_SHAPE)
    sch = schedule(f"metaschedule[from={_source_name()}]", TUNED_SHAPE)
    assert sch.trace is not None and len(sch.trace.insts) > 0


def test_the_fastest_record_is_used_when_it_serves(source_root):
    d = variant_decisions(f"metaschedule[from={_source_name()}]", TUNED_SHAPE)
    assert d["record_rank"] == 0 and d["skipped_records"] == [] and d["verified_here"]
    assert d["from_profile"] == _source_name() and d["trials"] == 6


@pytest.mark.parametrize("stage", ["replay", "verify"])
def test_a_record_that_fails_here_is_named_and_skipped(source_root, monkeypatch, stage):
    calls = []
    real = {"replay": transfer.apply_record, "verify": transfer.verify}[stage]

    def first_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            if stage == "replay":
                raise RuntimeError("ScheduleError: injected replay failure")
            raise VerificationError("injected: wrong product")
        return real(*args, **kwargs)

    monkeypatch.setattr(transfer, "apply_record" if stage == "replay" else "verify", first_fails)
    name = f"metaschedule[from={_source_name()}]"
    d = variant_decisions(name, TUNED_SHAPE)
    assert d["record_rank"] == 1
    (skipped,) = d["skipped_records"]
    assert skipped["rank"] == 0
    assert ("does not replay" if stage == "replay" else "wrong product") in skipped["reason"]
    assert "injected" in skipped["reason"]


def test_no_record_that_serves_makes_the_case_unavailable_with_every_reason(source_root, monkeypatch):
    def never(*args, **kwargs):
        raise VerificationError("injected: wrong product")

    monkeypatch.setattr(transfer, "verify", never)
    with pytest.raises(NoRecordError, match=r"none of the \d+ records .* serves .*record 0: it computes a wrong"):
        variant_decisions(f"metaschedule[from={_source_name()}]", TUNED_SHAPE)


def test_records_in_a_folder_of_another_cpu_are_refused(tuned_root, tmp_path, monkeypatch):
    f = host_facts()
    wrong = f"not{f.mcpu}-{f.num_cores}c-simd{f.simd_lanes_fp32}-t2"
    shutil.copytree(profile_dir(f, tuned_root), tmp_path / wrong)
    monkeypatch.setenv("MATMUL_TUNING_ROOT", str(tmp_path))
    with pytest.raises(NoRecordError, match="filed in the wrong folder"):
        variant_decisions(f"metaschedule[from={wrong}]", TUNED_SHAPE)


def test_a_shape_the_source_never_tuned_is_unavailable_naming_the_profile(source_root):
    reason = unavailable(f"metaschedule[from={_source_name()}]", bert_shapes()[0].shape)
    assert _source_name() in reason and "has no metaschedule record for qkv M=16" in reason


def test_a_corrupt_source_file_is_named_without_building(source_root):
    shard = source_root / _source_name() / workload_key(TUNED_SHAPE)
    (shard / RECORD_FILE).write_text("{}\n")
    reason = unavailable(f"metaschedule[from={_source_name()}]", TUNED_SHAPE)
    assert str(shard / RECORD_FILE) in reason and "line 1" in reason
    assert (shard / RECORD_FILE).read_text() == "{}\n"  # left as it was


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("metaschedule[from=nope-2c-simd8-t2]", "no MetaSchedule database for profile 'nope-2c-simd8-t2'"),
        ("metaschedule[from=../tuning_db]", "is not a CPU profile name"),
        ("metaschedule[from=]", "is not a CPU profile name"),
        ("metaschedule[frm=x]", "takes one knob, from=PROFILE"),
        ("metaschedule[from=a,from=b]", "given twice"),
    ],
)
def test_bad_sources_are_refused_naming_the_choices(name, message):
    with pytest.raises(ValueError, match=message) as err:
        get_variant(name)
    if SHIPPED and "given twice" not in message:
        assert SHIPPED[0] in str(err.value)  # the profiles one could have meant


def test_a_source_name_is_checked_against_the_root_it_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("MATMUL_TUNING_ROOT", str(tmp_path))
    with pytest.raises(TransferError, match="profiles there: none"):
        get_variant(f"metaschedule[from={_source_name()}]")
