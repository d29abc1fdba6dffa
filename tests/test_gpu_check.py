"""scripts/gpu_check.sh --dry-run: every step of the GPU check on the CPU at tiny sizes, so the one command a
session with a GPU runs cannot rot. The summary must hold every field, each measured step a number."""
import json
import os
import subprocess
import sys

from tools import gpucheck

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_dry_run_fills_every_field(tmp_path):
    carry = tmp_path / "carry"
    written = gpucheck.prepare(None, str(carry))  # no ../shared here: photos only
    assert written == [f"seed_photos.npz ({len(gpucheck_photos())} photos)"]
    out = tmp_path / "out"
    env = dict(os.environ, JAXDENOISE_GPU_CHECK_CARRY=str(carry), PYTHON=sys.executable)
    p = subprocess.run([os.path.join(REPO, "scripts", "gpu_check.sh"), "--dry-run", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=540)
    with open(out / "summary.json") as f:
        s = json.load(f)
    steps = s["steps"]
    assert list(steps) == [name for name, _ in gpucheck.STEPS]
    for section, fields in gpucheck.FIELDS.items():
        assert set(fields) <= set(s[section]), section
    failed = {k: v["note"] for k, v in steps.items() if v["status"] == "failed"}
    assert not failed and p.returncode == 0, (failed, p.stdout[-3000:], p.stderr[-3000:])
    assert steps["torch"]["status"] in ("ok", "skipped")  # no PyTorch reference carried in this test
    for section in ("env", "tests", "store", "benchmark", "epoch"):
        missing = [k for k, v in s[section].items() if v is None and not (section == "env" and k == "driver")
                   and not (section == "tests" and k == "deterministic_resume_bitwise")]
        assert not missing, (section, missing)
    # the dry run runs one quick test, not the resume test (make test runs it): the field stays empty
    assert s["tests"]["deterministic_resume_bitwise"] is None and s["tests"]["passed"] == 1
    assert len(s["benchmark"]["runs"]) == 1 and all(r["img_per_s"] > 0 for r in s["benchmark"]["runs"])
    assert [r["model"] for r in s["benchmark"]["models"]] == ["paper"]  # every model on a GPU
    assert s["epoch"]["projected_25_epochs_s"] > 0 and s["epoch"]["val_psnr"] > 0
    unet = s["unet"]["runs"]  # the U-Net pair: ours measured (the peer is not carried in this test)
    assert len(unet) == 1 and unet[0]["jax_img_per_s"] > 0 and unet[0]["jax_s_per_mp"] > 0
    md = (out / "summary.md").read_text()
    assert "| paper model |" in md and "| U-Net (unet_faces) |" in md and "One epoch of configs/paper.py" in md


def gpucheck_photos():
    from jaxdenoise.data import builtin
    return builtin.TRAIN_PHOTOS + builtin.VAL_PHOTOS
