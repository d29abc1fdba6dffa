"""The fast form of the fault-injection suite (scripts/faultcheck.py): at least 5 kill -9, SIGTERM, each kind of
checkpoint damage once, a full disk (where a tmpfs can be mounted), a second run on a busy workdir, unusable
paths, the data-safety cases and 200 mutated image files; nothing may be lost."""
import pytest

from jaxdenoise.faultcheck import suite

pytestmark = pytest.mark.imagemagick  # reads or writes images through Wand


def test_fast_fault_suite_loses_nothing(tmp_path):
    summary = suite.run(kills_n=5, fuzz_n=200, disk_full_n=1, seed=0, base=str(tmp_path), workers=2)
    print(suite.format_table(summary))
    by = {s["scenario"]: s for s in summary["scenarios"]}
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
    if by["disk full"]["faults"]:
        assert by["disk full"]["one_line"] == by["disk full"]["faults"]
    fz = summary["fuzz"]
    assert fz["cases"] == 200 and fz["crashes"] == fz["hangs"] == fz["errors"] == 0
    assert fz["images"] + fz["skips"] == 200
    assert suite.passed(summary), summary
