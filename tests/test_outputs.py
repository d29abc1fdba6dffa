"""No command overwrites or deletes a file it did not write (issue 17): every writer refuses, before any work,
an output path that is one of its inputs, a file a training run owns, or an existing file of the user's
(unless --overwrite, which still never touches the first two); a refused run leaves no workdir or folder."""
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from jaxdenoise import checkpointing, evaluate, fsutil, layout, marks, outputs, plots
from jaxdenoise.inference import files as denoise_files, load
from tools import gpucheck
from jaxdenoise import train
from tests.helpers import script
from tests.test_train import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def run(run_dir, tmp_path):
    """A copy of the session's trained run (tests here may try to damage it)."""
    wd = tmp_path / "run"
    shutil.copytree(run_dir, wd)
    return wd


@pytest.fixture()
def user(tmp_path):
    """A user's folder: notes, a plot of the same name as ours, photos."""
    d = tmp_path / "user"
    (d / "photos").mkdir(parents=True)
    (d / "notes.json").write_text('{"mine": true}\n')
    (d / "psnr_per_epoch.png").write_text("my own figure\n")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(d / "photos" / name)
    return d


def _same(root, before):
    assert fsutil.tree_digests(root) == before


# ---------------------------------------------------------------------------------------------------------
# the rules (outputs.claim)
# ---------------------------------------------------------------------------------------------------------
def _png_bytes(info) -> bytes:
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def test_claim_refuses_inputs_run_files_and_existing_files(run, user):
    photos = user / "photos"
    for path, inputs, overwrite, needle in [
        (photos / "a.png", [("--data", str(photos))], True, "lies inside --data"),
        (photos / "new.png", [("--data", str(photos))], True, "lies inside --data"),
        (photos / "a.png", [("--data", str(photos / "a.png"))], True, "is --data itself"),
        (run / "config.json", [], True, "part of the training workdir"),
        (run / "metrics.jsonl", [], True, "part of the training workdir"),
        (run / "tb" / "x.json", [], True, "part of the training workdir"),
        (run / "checkpoints" / "3" / "INTEGRITY", [], True, "lies in the checkpoint"),
        (user / "notes.json", [], False, "use --overwrite"),
        (user / "notes.json", [], True, "did not write it .*never replaced, even with --overwrite"),
        (pathlib.Path(outputs.PACKAGE) / "zoo" / "photos.jaxdn", [], True, "inside the installed jaxdenoise package"),
        (pathlib.Path(outputs.PACKAGE) / "zoo" / "real.md", [], True, "inside the installed jaxdenoise package"),
        (user, [], True, "is a folder"),
    ]:
        with pytest.raises(ValueError, match=needle) as e:
            outputs.claim(str(path), "--json", inputs=inputs, overwrite=overwrite)
        assert str(e.value).startswith(f"--json {path}") and "\n" not in str(e.value)
    # a link named as the output is judged by what it points at
    os.symlink(run / "config.json", user / "link.json")
    with pytest.raises(ValueError, match="training workdir"):
        outputs.claim(str(user / "link.json"), "--json", overwrite=True)
    # what may be written: a new file, a file jaxdenoise wrote (its mark inside) with overwrite, a run's own output
    assert not outputs.claim(str(user / "new.json"), "--json").replace
    for name, data in [("ours.json", marks.json_text([{"psnr": 30.0}]).encode()),
                       ("ours.png", _png_bytes(marks.png_info())), ("notes2.png", _png_bytes(None))]:
        (user / name).write_bytes(data)
    assert outputs.claim(str(user / "ours.json"), "--json", overwrite=True).replace
    assert outputs.claim(str(user / "ours.png"), "--grid", overwrite=True).replace
    with pytest.raises(ValueError, match="did not write it"):  # a PNG without the mark: someone else's
        outputs.claim(str(user / "notes2.png"), "--grid", overwrite=True)
    (run / layout.EVAL_GRID_FILE).write_bytes(b"earlier grid")
    assert outputs.claim(str(run / layout.EVAL_GRID_FILE), "--grid", own=[str(run / layout.EVAL_GRID_FILE)]).replace
    with pytest.raises(ValueError, match="part of the training workdir"):  # not another command's own file
        outputs.claim(str(run / layout.EVAL_GRID_FILE), "--json", overwrite=True)


def test_a_file_that_appears_meanwhile_is_not_replaced(user):
    target = outputs.claim(str(user / "late.json"), "--json")
    (user / "late.json").write_text("written by someone else meanwhile\n")
    with pytest.raises(ValueError, match="appeared while this command ran"):
        target.write("ours\n")
    assert (user / "late.json").read_text() == "written by someone else meanwhile\n"


def test_own_folder_is_new_empty_or_marked(tmp_path, user):
    before = fsutil.tree_digests(user)
    with pytest.raises(ValueError, match="not empty and was not written by this command"):
        outputs.own_folder(str(user), "--out", ".mark")
    _same(user, before)
    new = outputs.own_folder(str(tmp_path / "new"), "--out", ".mark")
    (tmp_path / "new" / "summary.md").write_text("ours\n")
    assert outputs.own_folder(str(tmp_path / "new"), "--out", ".mark") == new  # ours: reusable


# ---------------------------------------------------------------------------------------------------------
# each writer
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.imagemagick
def test_evaluate_refuses_before_any_work_and_overwrites_only_when_asked(run, user, monkeypatch):
    photos = user / "photos"
    before, run_before = fsutil.tree_digests(user), fsutil.tree_digests(run)
    monkeypatch.setattr(load, "load_run", lambda *a, **k: pytest.fail("work started before the check"))
    for kw, needle in [(dict(grid_path=str(photos / "a.png")), "inside --data"),
                       (dict(json_path=str(photos / "b.png"), overwrite=True), "inside --data"),
                       (dict(json_path=str(user / "notes.json")), "use --overwrite"),
                       (dict(json_path=str(run / "config.json"), overwrite=True), "training workdir"),
                       (dict(grid_path=str(run / "checkpoints" / "3" / "INTEGRITY"), overwrite=True), "checkpoint")]:
        with pytest.raises(ValueError, match=needle):
            evaluate.run(str(run), "best", data=str(photos), **kw)
    _same(user, before)
    _same(run, run_before)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="did not write it .*never replaced, even with --overwrite"):
        evaluate.run(str(run), "best", data=str(photos), json_path=str(user / "notes.json"), overwrite=True)
    _same(user, before)  # a user's own file: never replaced, whatever the flags
    rows = evaluate.run(str(run), "best", data=str(photos), json_path=str(user / "rows.json"),
                        grid_path=str(run / layout.EVAL_GRID_FILE))
    rows = evaluate.run(str(run), "best", data=str(photos), json_path=str(user / "rows.json"), overwrite=True,
                        grid_path=str(run / layout.EVAL_GRID_FILE))  # ours (marked): replaced when asked
    assert json.loads((user / "rows.json").read_text())["rows"][0]["method"] == rows[0]["method"] == "noisy input"
    evaluate.run(str(run), "best", data=str(photos), grid_path=str(run / layout.EVAL_GRID_FILE))  # its own: again
    assert checkpointing.load_params(str(run), "best")[2] == 3  # the run still restores


def test_plots_keep_a_users_figures_and_replace_their_own_only_when_asked(run, user, tmp_path):
    before = fsutil.tree_digests(user)
    with pytest.raises(ValueError, match="psnr_per_epoch.png exists"):
        plots.plot_curves([str(run)], str(user))
    with pytest.raises(ValueError, match="psnr_per_epoch.png exists and jaxdenoise did not write it"):
        plots.plot_curves([str(run)], str(user), overwrite=True)  # the user's figure: never replaced
    _same(user, before)
    with pytest.raises(ValueError, match="training workdir"):
        plots.plot_curves([str(run)], str(run / "checkpoints"))
    figs = tmp_path / "figs"
    assert len(plots.plot_curves([str(run)], str(figs))) == 2
    with pytest.raises(ValueError, match="exists: use --overwrite"):
        plots.plot_curves([str(run)], str(figs))
    assert len(plots.plot_curves([str(run)], str(figs), overwrite=True)) == 2  # its own figures (marked)
    assert (figs / "psnr_per_epoch.png").read_bytes()[:4] == b"\x89PNG"
    plots.plot_curves([str(run)], str(run))  # the run's own figures: replaced without asking
    plots.plot_curves([str(run)], str(run))
    other = user.parent / "other"
    shutil.copytree(run, other)
    with pytest.raises(ValueError, match="is the training workdir"):  # another run's figures: never
        plots.plot_curves([str(run)], str(other), overwrite=True)


def test_gpu_check_never_writes_into_or_deletes_a_users_folder(user, tmp_path, capsys):
    (user / "gpu_check_store").mkdir()
    (user / "gpu_check_store" / "keep.txt").write_text("keep me\n")
    (user / "summary.md").write_text("my summary\n")
    before = fsutil.tree_digests(user)
    assert gpucheck.main(["--dry-run", "--out", str(user)]) == 1
    assert "not empty and was not written by this command" in capsys.readouterr().err
    _same(user, before)
    with pytest.raises(SystemExit) as e:
        gpucheck.main(["--dry-run", "--only", "nosuchstep", "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "unknown step 'nosuchstep'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.imagemagick
def test_denoise_output_inside_a_run_is_refused_and_a_failed_run_leaves_no_folder(run, user, tmp_path):
    before = fsutil.tree_digests(run)
    with pytest.raises(ValueError, match="part of the training workdir"):
        denoise_files.denoise_paths(str(run), str(user / "photos"), str(run / "checkpoints" / "out"), progress=False)
    _same(run, before)
    with pytest.raises(checkpointing.CheckpointError):  # no such run: nothing is made
        denoise_files.denoise_paths(str(tmp_path / "nope"), str(user / "photos"), str(tmp_path / "den" / "sub"),
                              progress=False)
    with pytest.raises(ValueError, match="--tile 8 is too small"):  # smaller than the receptive field
        denoise_files.denoise_paths(str(run), str(user / "photos"), str(tmp_path / "den"), tile=8, progress=False)
    assert not (tmp_path / "den").exists()


def test_refused_training_runs_leave_no_workdir(run, tmp_path, cache, user):
    src = str(run)
    cases = [(dict(init_from=str(tmp_path / "missing")), "does not exist"),
             (dict(init_from=str(user)), "not a training workdir"),
             (dict(init_from=f"{src}:99"), "no checkpoint at step 99"),
             (dict(init_from=src, **{"model.latent": 5}), r"model differs \(model.latent\)"),
             (dict(init_from=src, optimizer="sgd"), "optimizer 'adam' -> 'sgd'"),
             (dict(init_from=src, ema_decay=0.9), "ema_decay 0 -> 0.9"),
             ({"data.patch": 32}, "data.patch=32 is larger"),
             (dict(micro_batch=3), "micro_batch=3"),
             (dict(steps_per_call=2), "steps_per_call")]
    for i, (over, needle) in enumerate(cases):
        wd = tmp_path / f"new{i}"
        with pytest.raises(ValueError, match=needle) as e:
            train.train_and_evaluate(tiny_config(cache, num_epochs=1, **over), str(wd))
        assert "\n" not in str(e.value)
        assert not wd.exists(), (over, os.listdir(wd))


def test_training_refuses_foreign_folders_and_a_late_init_from(run, tmp_path, cache, user):
    before = fsutil.tree_digests(user)
    with pytest.raises(ValueError, match="not a training workdir: it holds psnr_per_epoch.png"):
        train.train_and_evaluate(tiny_config(cache), str(user))
    (user / "config.json").write_text("[1, 2]\n")  # valid JSON, not a run's config
    with pytest.raises(ValueError, match="its config.json is not the config of a jaxdenoise run"):
        train.train_and_evaluate(tiny_config(cache), str(user))
    (user / "config.json").unlink()
    _same(user, before)
    with pytest.raises(ValueError, match="part of the training workdir"):
        train.train_and_evaluate(tiny_config(cache), str(run / "checkpoints" / "x"))
    assert not (run / "checkpoints" / "x").exists()
    run_before = fsutil.tree_digests(run)
    with pytest.raises(ValueError, match="already has checkpoints of its own"):  # was silently ignored
        train.train_and_evaluate(tiny_config(cache, num_epochs=2, init_from=str(user)), str(run))
    assert {k: v for k, v in fsutil.tree_digests(run).items() if k != ".lock"} == \
        {k: v for k, v in run_before.items() if k != ".lock"}


def test_a_config_json_that_is_not_a_run_config_is_one_line(run):
    (run / "config.json").write_text("[1, 2, 3]\n")
    with pytest.raises(checkpointing.CheckpointError, match="is not the config of a jaxdenoise run"):
        evaluate.run(str(run), "best")
    with pytest.raises(checkpointing.CheckpointError, match="is not the config of a jaxdenoise run"):
        load.load_run(str(run))


_script = script  # tests.helpers: the one subprocess runner


def test_benchmark_refuses_its_own_config_as_json_and_zero_steps(user):
    cfg = user / "myconfig.py"
    shutil.copy(os.path.join(REPO, "configs", "demo.py"), cfg)
    before = fsutil.tree_digests(user)
    p = _script("benchmark.py", "--config", str(cfg), "--json", str(cfg), "--overwrite", "--steps", "0")
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 1 and last.startswith("error: --steps must be >= 1"), p.stderr
    p = _script("benchmark.py", "--config", str(cfg), "--json", str(cfg), "--overwrite")
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 1 and "is --config itself, an input" in last and "Traceback" not in p.stderr, p.stderr
    _same(user, before)


# ---------------------------------------------------------------------------------------------------------
# found by a sweep of 373 bad inputs (2026-12-02)
# ---------------------------------------------------------------------------------------------------------
def test_training_never_writes_into_a_store_or_another_runs_files(run, tmp_path, cache):
    from jaxdenoise.data import builtin
    c = tiny_config(cache)
    store_dir = builtin.builtin_store(c.data.size, c.data.builtin_train_crops, c.data.builtin_val_crops,
                                      cache_dir=str(cache))
    before, run_before = fsutil.tree_digests(store_dir), fsutil.tree_digests(run)
    with pytest.raises(ValueError, match="is a prepared store"):
        train.train_and_evaluate(tiny_config(cache), store_dir)
    with pytest.raises(ValueError, match=r"data.cache_dir=\S+ is part of the training workdir"):
        train.train_and_evaluate(tiny_config(run / "checkpoints" / "cc"), str(tmp_path / "new"))
    _same(store_dir, before)
    _same(run, run_before)
    assert not (tmp_path / "new").exists()


@pytest.mark.imagemagick
def test_a_refused_run_takes_back_its_lock_and_its_data_cache(tmp_path, cache):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="data.patch=32"):
        train.train_and_evaluate(tiny_config(cache, **{"data.patch": 32}), str(empty))
    assert os.listdir(empty) == []  # no .lock left in a folder that was already there
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(photos / f"p{i}.png")
    over = {"data.source": "dir", "data.dir": str(photos), "data.cache_dir": "", "data.val_fraction": 0.01}
    with pytest.raises(ValueError, match="split .* is empty|smaller than one batch"):
        train.train_and_evaluate(tiny_config(cache, **over), str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()  # its data cache (WORKDIR/data) went with it


def test_a_run_that_cannot_resume_keeps_its_config(run, cache):
    for step_dir in (run / "checkpoints").iterdir():
        data = max((p for p in step_dir.rglob("*") if p.is_file() and "state" in p.parts), key=os.path.getsize)
        data.write_bytes(b"\0" * data.stat().st_size)
    before = (run / "config.json").read_bytes()
    with pytest.raises(checkpointing.CheckpointError, match="no intact checkpoint"):
        train.train_and_evaluate(tiny_config(cache, num_epochs=2), str(run))
    assert (run / "config.json").read_bytes() == before  # num_epochs 1 -> 2 was not recorded


@pytest.mark.imagemagick
def test_denoise_says_what_it_does_not_use_and_what_it_cannot_read(run, user, tmp_path, capsys):
    res = denoise_files.denoise_paths(str(run), str(user / "photos" / "a.png"), str(tmp_path / "o1"), progress=False,
                                noise_level="gaussian:25")
    assert len(res["written"]) == 1 and "--noise-level gaussian:25 is not used: the model is blind" in \
        capsys.readouterr().err
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        denoise_files.denoise_paths(str(run), str(tmp_path / "emptydir"), str(tmp_path / "o2"), progress=False)
    with pytest.raises(ValueError, match=r"no readable image among its 1 file\(s\) \(the first, notes.json:"):
        denoise_files.denoise_paths(str(run), str(user / "notes.json"), str(tmp_path / "o3"), progress=False)
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_plots_skip_incomplete_rows_and_say_when_there_is_nothing(run, tmp_path, capsys):
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "eval", "step": 9, "epoch": 9, "ssim": 0.5}) + "\n")  # no psnr
    assert [r["epoch"] for r in plots.read_eval_rows(str(run))] == [1]
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "loss": 1.0}) + "\n")
    assert len(plots.plot_curves([str(bare)], str(tmp_path / "figs"))) == 2
    assert "no evaluation rows yet" in capsys.readouterr().err


@pytest.mark.imagemagick
def test_prepare_refuses_caches_stores_inside_others_and_empty_results(run, user, tmp_path, cache):
    from jaxdenoise.data import builtin, prepare
    c = tiny_config(cache)
    cached = builtin.builtin_store(c.data.size, c.data.builtin_train_crops, c.data.builtin_val_crops,
                                   cache_dir=str(cache))
    before = fsutil.tree_digests(cached)
    photos = str(user / "photos")
    for out, kw, needle in [(cached, {}, "is a data cache that training made for itself"),
                            (os.path.join(cached, "clean", "sub"), {}, "lies in the prepared store"),
                            (str(run / "checkpoints" / "st"), {}, "part of the training workdir"),
                            (str(tmp_path / "s1"), dict(mode="full", size=64), "none of its 2 files could be kept"),
                            (str(tmp_path / "s2"), dict(workers=-1), "--workers must be >= 1")]:
        with pytest.raises(ValueError, match=needle):
            prepare.prepare_folder(photos, out, progress=False, **{"size": 8, **kw})
        assert not os.path.exists(tmp_path / "s1") and not os.path.exists(tmp_path / "s2")
    _same(cached, before)


def test_a_killed_writers_temporary_file_is_removed_by_the_next_claim_and_a_live_ones_is_not(tmp_path):
    old, live, other = (tmp_path / ".m.jaxdn.ab12_xyz.tmp", tmp_path / ".m.jaxdn.cd34_xyz.tmp",
                        tmp_path / ".m.jaxdn.notours.tmp")
    for f in (old, live, other):
        f.write_bytes(b"partial")
    past = os.path.getmtime(old) - 10 * fsutil.STALE_TEMP_SECONDS
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    outputs.claim(str(tmp_path / "m.jaxdn"), "--out")
    assert not old.exists() and live.exists() and other.exists()  # only its own pattern, and only when stale
