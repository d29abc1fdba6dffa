"""The fast form of the fault-injection suite (scripts/faultcheck.py): at least 5 kill -9, SIGTERM, each kind of
checkpoint damage once, a full disk (where a tmpfs can be mounted), a second run on a busy workdir, unusable
paths, the data-safety cases, every output flag pointed at inputs, run files and user files, and 200 mutated
image files; nothing may be lost. The suite runs once; each test reads its part of the summary."""
import pytest

from tools import faultsuite as suite

pytestmark = pytest.mark.imagemagick  # reads or writes images through Wand


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    s = suite.run(kills_n=5, fuzz_n=200, disk_full_n=1, seed=0, base=str(tmp_path_factory.mktemp("faults")),
                  workers=2)
    print(suite.format_table(s))
    return s


@pytest.fixture(scope="module")
def by(summary):
    return {s["scenario"]: s for s in summary["scenarios"]}


def test_fast_fault_suite_loses_nothing(summary, by):
    t = summary["totals"]
    notes = [n for s in summary["scenarios"] for n in s["notes"]]
    assert t["files_lost"] == 0 and t["tracebacks"] == 0, notes
    assert t["bitwise"] == t["bitwise_expected"] > 0, summary
    assert by["kill -9"]["faults"] >= 5 and by["kill -9"]["recovered"] >= 1
    damage = by["checkpoint damage"]
    assert damage["faults"] == len(suite.DAMAGE_KINDS)
    assert damage["fell_back"] >= len(suite.DAMAGE_KINDS) - 1  # unsealed flips may restore unnoticed
    assert by["SIGTERM"]["one_line"] == 1 and by["second run on a busy workdir"]["one_line"] == 1
    assert by["unusable and read-only paths"]["one_line"] == by["unusable and read-only paths"]["faults"]
    assert by["data safety"]["one_line"] == 3
    fz = summary["fuzz"]
    assert fz["cases"] == 200 and fz["crashes"] == fz["hangs"] == fz["errors"] == 0
    assert fz["images"] + fz["skips"] == 200
    assert suite.passed(summary), summary


def test_every_output_flag_refuses_inputs_run_files_and_user_files(by):
    out = by["output paths"]
    assert out["faults"] >= 16 and out["one_line"] == out["faults"], out["notes"]
    assert out["files_lost"] == 0 and out["recovered"] == 2 and not out["notes"], out["notes"]


def test_a_full_disk_stops_with_one_line(by):
    full = by["disk full"]
    if not full["faults"]:  # said, not passed silently: the unit tests inject ENOSPC instead
        pytest.skip(full.get("skipped") or "the disk never filled during a run")
    assert full["one_line"] == full["faults"] and full["files_lost"] == 0, full["notes"]
