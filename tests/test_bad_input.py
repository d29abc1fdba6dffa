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
from tests.helpers import script

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
    assert back["written_by"] == "jaxdenoise"  # its mark: --overwrite may replace it later
    assert back["rows"][0]["ssim"] is None and back["rows"][0]["psnr"] == 20.0


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
        (dict(data=clean, noisy=noisy, noise_specs=["gaussian:25"]), "--noise gaussian:25 has no effect with --noisy"),
    ]:
        with pytest.raises(ValueError, match=needle) as e:
            evaluate.run(run_dir, "best", **kw)
        assert "\n" not in str(e.value)


@pytest.mark.imagemagick
def test_duplicate_names_on_either_side_of_a_pair_are_refused(own_run, tmp_path, capsys):
    clean, noisy = _pair_folders(tmp_path / "c", ["a.png", "a.jpg"], ["a.png"])
    with pytest.raises(ValueError, match=r"--data \S+: 2 files share the name 'a' \(a.jpg, a.png\)"):
        evaluate.run(own_run, "best", data=clean, noisy=noisy)
    clean, noisy = _pair_folders(tmp_path / "n", ["a.png"], ["a.png", "a.bmp"])
    with pytest.raises(ValueError, match=r"--noisy \S+: 2 files share the name 'a'"):
        evaluate.run(own_run, "best", data=clean, noisy=noisy)
    # identical noisy and clean files are said, not scored at 100 dB in silence
    clean, noisy = _pair_folders(tmp_path / "same", ["a.png"], ["a.png"])
    evaluate.run(own_run, "best", data=clean, noisy=noisy, noise_level="poisson:30")
    err = capsys.readouterr().err
    assert "noisy a.png is identical to its clean reference a.png" in err
    assert "--noise-level poisson:30 is not used: the models are blind" in err
    # a pair of another size, or grey against colour: skipped with its reason, the other pairs scored
    clean, noisy = _pair_folders(tmp_path / "mixed", ["a.png", "b.png", "c.png"], ["a.png"])
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(os.path.join(noisy, "b.png"))
    Image.fromarray(np.asarray(Image.open(os.path.join(clean, "c.png")).convert("L"))).save(os.path.join(noisy, "c.png"))
    rows = evaluate.run(own_run, "best", data=clean, noisy=noisy)
    out = capsys.readouterr().out
    assert "skipped b.png / b.png: the noisy shot is 16x16, the clean reference 24x24" in out
    assert "skipped c.png / c.png: the noisy shot is greyscale, the clean reference colour" in out
    assert {r["images"] for r in rows} == {1}


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


_script = script  # tests.helpers: the one subprocess runner


def test_config_files_that_cannot_load_name_the_file(tmp_path):
    (tmp_path / "noget.py").write_text("x = 1\n")
    for path, needle in [(tmp_path / "noget.py", "has no get_config() function"),
                         (tmp_path / "missing.py", "does not exist")]:
        p = _script("train.py", "--config", str(path), "--workdir", str(tmp_path / "w"))
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: --config {path} {needle}"), \
            p.stderr
        assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------------------------------------------------
# found by a sweep of 373 bad inputs (2026-12-02)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value,needle", [
    ("model.widths", (8.5, 4), "model.widths must be two positive ints"),
    ("num_grid_images", -1, "num_grid_images must be >= 0"),
    ("data.num_threads", -1, "data.num_threads must be >= 0"),
    ("data.prefetch", -1, "data.prefetch must be >= 0"),
    ("data.split_seed", -1, r"data.split_seed must be in \[0, 2\^32\)"),
    ("seed", 2**40, r"seed must be in \[0, 2\^32\)"),
    ("data.builtin_train_crops", 0, "data.builtin_train_crops must be >= 1"),
    ("data.dir", "/some/photos", "data.dir='/some/photos' is set but data.source='builtin'"),
    ("data.resize_mode", "center_crop", "applies to data.source='dir'"),
    ("data.size", 10**12, r"data.size must be a multiple of 4 in \[8, 4096\]"),
])
def test_config_values_that_used_to_pass_or_crash_name_the_field(field, value, needle):
    c = config_lib.base_config()
    node, *path = c, *field.split(".")
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(ValueError, match=needle) as e:
        config_lib.validate(c)
    assert str(e.value).startswith("config: ") and "\n" not in str(e.value)


def test_config_files_that_fail_inside_name_the_file(tmp_path, monkeypatch):
    """cli.parse_flags on a config flag like the scripts': get_config raising, returning something else, taking
    no argument, a folder, a missing file given with overrides."""
    from absl import flags
    from ml_collections import config_flags

    from jaxdenoise import cli
    (tmp_path / "raises.py").write_text("def get_config():\n    raise ValueError('boom in config')\n")
    (tmp_path / "five.py").write_text("def get_config():\n    return 5\n")
    (tmp_path / "folder").mkdir()
    demo = os.path.join(REPO, "configs", "demo.py")
    for args, want in [
        ([str(tmp_path / "raises.py")], f"--config {tmp_path / 'raises.py'}: get_config() failed: ValueError: boom"),
        ([str(tmp_path / "five.py")], "get_config() returned int, not an ml_collections ConfigDict"),
        ([str(tmp_path / "five.py"), "--config.batch_size=4"], "get_config() "),
        ([demo + ":foo"], f"--config {demo}: get_config() failed: TypeError"),
        ([str(tmp_path / "folder")], "is a folder, not a config file"),
        ([str(tmp_path / "missing.py"), "--config.batch_size=4"], f"--config {tmp_path / 'missing.py'} does not exist"),
    ]:
        values = flags.FlagValues()  # a fresh parser per case, as each script run has
        config_flags.DEFINE_config_file("config", None, "c", flag_values=values, lock_config=True)
        monkeypatch.setattr(flags, "FLAGS", values)
        with pytest.raises(SystemExit) as e:
            cli.parse_flags(["prog", "--config", *args])
        assert str(e.value).startswith("error: ") and want in str(e.value) and "\n" not in str(e.value), e.value


def test_empty_path_flags_are_refused(tmp_path):
    p = _script("train.py", "--config", os.path.join(REPO, "configs", "demo.py"), "--workdir=")
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        "error: flag --workdir=: --workdir needs a path, got an empty value (--helpshort lists the flags)"], p.stderr
    assert not os.path.exists(os.path.join(REPO, "config.json"))


def test_evaluate_names_the_flag_of_a_bad_path(run_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image\n")
    for kw, needle in [(dict(also=[str(tmp_path / "nope")]), r"--also \S+nope: \S+nope does not exist"),
                       (dict(data=str(tmp_path / "notes.txt")), r"--data \S+notes.txt: no readable images \(notes.txt:"),
                       (dict(seed=2**40), r"--seed must be in \[0, 2\^32\)"),
                       (dict(resize=0), r"--resize must be in \[8, 4096\] px, got 0")]:
        with pytest.raises(ValueError, match=needle):
            evaluate.run(run_dir, "best", **kw)
    with pytest.raises(ValueError, match=r"--workdir \S+notes.txt: \S+ is a file, not a training workdir"):
        evaluate.run(str(tmp_path / "notes.txt"), "best")


def test_a_checkpoint_that_does_not_fit_its_config_is_one_line_and_nothing_else(run_dir, tmp_path):
    """Orbax's pending reads used to add 'Event loop is closed' tracebacks after the error line."""
    import shutil
    wd = tmp_path / "run"
    shutil.copytree(run_dir, wd)
    saved = json.loads((wd / "config.json").read_text())
    saved["model"]["widths"] = [16, 4]
    (wd / "config.json").write_text(json.dumps(saved))
    p = _script("evaluate.py", "--workdir", str(wd))
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr[-3000:]
    assert "cannot be restored onto this model/config (Requested shape" in p.stderr


def test_overlapping_data_folders_are_refused_by_their_real_paths(tmp_path):
    from jaxdenoise import config as config_lib
    (tmp_path / "tr" / "faces").mkdir(parents=True)
    (tmp_path / "va").mkdir()
    os.symlink(tmp_path / "tr", tmp_path / "link")
    tr, faces, va = str(tmp_path / "tr"), str(tmp_path / "tr" / "faces"), str(tmp_path / "va")
    for d, val, needle in [(f"{tr},{faces}", "", "lies inside"),
                           (f"{faces},{tmp_path / 'link'}", "", "lies inside"),  # a link: judged by its target
                           (tr, faces, "data.val_dir=.* lies inside data.dir folder"),
                           (faces, tr, "data.val_dir=.* holds data.dir folder"),
                           (tr, str(tmp_path / "link"), "is also in data.dir")]:
        c = config_lib.base_config()
        c.data.source, c.data.dir, c.data.val_dir = "dir", d, val
        with pytest.raises(ValueError, match=needle):
            config_lib.validate(c)
    c = config_lib.base_config()
    c.data.source, c.data.dir, c.data.val_dir = "dir", f"{faces},{va}", ""  # siblings: fine
    config_lib.validate(c)


@pytest.mark.parametrize("script,flag", [("train", "--workdir"), ("denoise", "--input"), ("evaluate", "--data"),
                                         ("export", "--out"), ("prepare_data", "--src"), ("benchmark", "--steps"),
                                         ("plot", "--out")])
def test_every_commands_help_lists_its_own_flags(script, flag):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for how in ("--helpshort", "--help"):
        r = subprocess.run([sys.executable, os.path.join(repo, "scripts", f"{script}.py"), how], capture_output=True,
                           text=True, timeout=120)
        listed = [line.split(":")[0].strip() for line in r.stdout.splitlines() if line.startswith("  --")]
        assert any(f.replace("[no]", "") == flag for f in listed), (how, r.stdout[-1500:])


@pytest.mark.imagemagick
def test_training_errors_name_the_config_field_the_user_wrote(tmp_path):
    from jaxdenoise import train
    from tests.test_train import tiny_config
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_text("not an image")
    c = tiny_config(tmp_path / "cache")
    c.data.source, c.data.dir, c.data.cache_dir = "dir", str(tmp_path / "photos"), ""
    with pytest.raises(ValueError, match=r"^--config.data.dir \S+photos: none of its 1 files could be kept") as e:
        train.train_and_evaluate(c, str(tmp_path / "run"))
    assert "--src" not in str(e.value)
