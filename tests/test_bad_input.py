"""Inputs that used to give a silently wrong number, be silently ignored, crash or name the wrong thing (issue 17):
each now gives the right number or one line naming the flag or field and the value."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxdenoise import baselines, config as config_lib, evaluate, metrics, models, noise

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ssim_reference(x: np.ndarray, y: np.ndarray, win: int) -> float:
    """SSIM by its definition, in numpy: a win x win Gaussian (sigma 1.5, renormalised), valid positions."""
    g = np.exp(-0.5 * ((np.arange(win) - (win - 1) / 2) / 1.5) ** 2)
    w2 = np.outer(g, g) / np.outer(g, g).sum()
    h, wd = x.shape[0] - win + 1, x.shape[1] - win + 1
    vals = []
    for c in range(x.shape[2]):
        for i in range(h):
            for j in range(wd):
                a, b = x[i:i + win, j:j + win, c], y[i:i + win, j:j + win, c]
                ma, mb = (w2 * a).sum(), (w2 * b).sum()
                va, vb = (w2 * a * a).sum() - ma * ma, (w2 * b * b).sum() - mb * mb
                cov = (w2 * a * b).sum() - ma * mb
                c1, c2 = 0.01 ** 2, 0.03 ** 2
                vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2)))
    return float(np.mean(vals))


@pytest.mark.parametrize("h,w", [(8, 8), (9, 12), (10, 64), (12, 11)])
def test_ssim_is_defined_on_images_smaller_than_its_window(h, w):
    rng = np.random.default_rng(h * w)
    x = rng.random((1, h, w, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    win = metrics.window(h, w)
    assert win == {8: 7, 9: 9, 10: 9, 11: 11, 12: 11}[min(h, w)]
    s = float(metrics.ssim_per_image(x, y)[0])
    assert np.isfinite(s) and abs(s - _ssim_reference(x[0], y[0], win)) < 1e-4
    assert float(metrics.ssim_per_image(x, x)[0]) == pytest.approx(1.0, abs=1e-6)
    # evaluate's masked scorer (images padded into 64-multiples) gives the same number
    _, ssim = evaluate._Scorer(batch=2)([(x[0], y[0])])
    assert ssim[0] == pytest.approx(s, abs=1e-5)


def test_json_rows_never_hold_nan(tmp_path):
    rows = [{"noise": "poisson:30", "method": "noisy input", "psnr": 20.0, "ssim": float("nan"), "images": 1}]
    evaluate.write_json(rows, str(tmp_path / "rows.json"))
    back = json.loads((tmp_path / "rows.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert back[0]["ssim"] is None and back[0]["psnr"] == 20.0


def _pair_folders(root, clean_names, noisy_names):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    for sub, names in (("clean", clean_names), ("noisy", noisy_names)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for n in names:
            Image.fromarray(img).save(root / sub / n)
    return str(root / "clean"), str(root / "noisy")


def test_evaluate_refuses_what_it_used_to_score_wrongly(run_dir, tmp_path):
    clean, noisy = _pair_folders(tmp_path, ["a.png", "b.png"], ["a.png", "b.png"])
    for kw, needle in [
        (dict(data=clean, noisy=clean), "are the same folder"),
        (dict(data=clean, noisy=os.path.join(clean, ".")), "are the same folder"),
        (dict(limit=-1), "--limit must be >= 1"),
        (dict(limit=0), "--limit must be >= 1"),
        (dict(data=clean, noisy=noisy, noise_level="bogus:1"), "unknown noise model 'bogus'"),
        (dict(noise_specs=["gaussian:-5"]), "sigma must be >= 0"),
        (dict(tile=8), "--tile 8 is too small"),
        (dict(data=clean, noisy=str(tmp_path / "missing")), r"--noisy \S+missing does not exist"),
    ]:
        with pytest.raises(ValueError, match=needle) as e:
            evaluate.run(run_dir, "best", **kw)
        assert "\n" not in str(e.value)


@pytest.mark.imagemagick
def test_duplicate_names_on_either_side_of_a_pair_are_refused(run_dir, tmp_path, capsys):
    clean, noisy = _pair_folders(tmp_path / "c", ["a.png", "a.jpg"], ["a.png"])
    with pytest.raises(ValueError, match=r"--data \S+: 2 files share the name 'a' \(a.jpg, a.png\)"):
        evaluate.run(run_dir, "best", data=clean, noisy=noisy)
    clean, noisy = _pair_folders(tmp_path / "n", ["a.png"], ["a.png", "a.bmp"])
    with pytest.raises(ValueError, match=r"--noisy \S+: 2 files share the name 'a'"):
        evaluate.run(run_dir, "best", data=clean, noisy=noisy)
    # identical noisy and clean files are said, not scored at 100 dB in silence
    clean, noisy = _pair_folders(tmp_path / "same", ["a.png"], ["a.png"])
    evaluate.run(run_dir, "best", data=clean, noisy=noisy, noise_level="poisson:30")
    err = capsys.readouterr().err
    assert "noisy a.png is identical to its clean reference a.png" in err
    assert "--noise-level poisson:30 is not used: the models are blind" in err


def test_model_fields_and_noise_levels_name_the_field_and_value():
    c = config_lib.base_config()
    c.model = models.default_config("nafnet", enc_blocks=(-1, 1, 1))
    with pytest.raises(ValueError, match=r"config: model.enc_blocks must be block counts >= 0 per level, got \(-1, 1, 1\)"):
        config_lib.validate(c)
    for spec, needle in [("gaussian:-5", "sigma must be >= 0"), ("poisson:5--3", "peak must be >= 0.001")]:
        with pytest.raises(ValueError, match=needle):
            noise.parse(spec)


def test_bm3d_never_sees_an_image_smaller_than_it_handles():
    seen = []

    def fake(z):
        seen.append(z.shape)
        return z * 0.5
    z = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)  # bm3d 4.0 segfaults on exactly this
    out = baselines._at_least(z, baselines.BM3D_MIN_SIDE, fake)
    assert seen == [(16, 16, 3)] and out.shape == (8, 8, 3)
    np.testing.assert_allclose(out, z * 0.5)
    big = np.zeros((20, 9, 3), np.float32)
    assert baselines._at_least(big, 16, fake).shape == (20, 9, 3) and seen[-1] == (20, 16, 3)


def _script(name, *args):
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", name), *args], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))


def test_config_files_that_cannot_load_name_the_file(tmp_path):
    (tmp_path / "noget.py").write_text("x = 1\n")
    for path, needle in [(tmp_path / "noget.py", "has no get_config() function"),
                         (tmp_path / "missing.py", "does not exist")]:
        p = _script("train.py", "--config", str(path), "--workdir", str(tmp_path / "w"))
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: --config {path} {needle}"), \
            p.stderr
        assert not (tmp_path / "w").exists()
