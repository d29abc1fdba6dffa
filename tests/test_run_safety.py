"""A training run never loses work: fixed config on resume, workdir lock, damaged checkpoints, a full disk,
one-line errors, stalled runs. Each test reproduces a defect that main had (issue 9)."""
import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxdenoise import checkpointing, cli, config as config_lib, errors, fsutil, run_io, train
from tests.test_train import TINY_CONFIG, final_params, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def one_epoch(trained):
    """The session's finished 1-epoch run (checkpoint at step 3) and what it printed; copied before changes."""
    return trained


def copy_run(one_epoch, tmp_path):
    wd = tmp_path / "run"
    shutil.copytree(one_epoch[0], wd)
    return wd


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, cache):
    """The workdir of a 2-epoch run (steps 3 and 6 saved): what every recovery must reproduce."""
    wd = tmp_path_factory.mktemp("unbroken") / "run"
    train.train_and_evaluate(tiny_config(cache, num_epochs=2), str(wd))
    return wd


def assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def tree_bytes(root):
    return fsutil.tree_digests(root)


# noqa: E402 below: the one subprocess runner (others import it from here)
from tests.helpers import assert_same_state, script, tensorboard_scalars  # noqa: E402


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr
    for n in needles:
        assert n in last, last
    return last


def tiny_args(wd, cache, *extra):
    """``train.py``'s arguments for ``tiny_config(cache, num_epochs=1)``."""
    return ["--config", TINY_CONFIG, "--workdir", str(wd), f"--config.data.cache_dir={cache}",
            "--config.num_epochs=1", *extra]


# ---------------------------------------------------------------------------------------------------------
# item 3: the config of a run is fixed once it has a checkpoint
# ---------------------------------------------------------------------------------------------------------
def test_run_defining_changes_are_refused_before_anything_is_written(one_epoch, cache):
    wd = one_epoch[0]
    before = tree_bytes(wd)
    for overrides, fields in [({"model.latent": 4}, ["model.latent"]),
                              ({"batch_size": 4, "learning_rate": 1e-4}, ["learning_rate", "batch_size"]),
                              ({"noise": "gaussian:25", "seed": 7}, ["seed", "noise"])]:
        with pytest.raises(ValueError, match="holds a run with other settings") as e:
            train.train_and_evaluate(tiny_config(cache, num_epochs=2, **overrides), str(wd))
        msg = str(e.value)
        assert "\n" not in msg and "init_from" in msg
        for f in fields:
            assert f in msg, msg
        assert tree_bytes(wd) == before  # config.json and everything else untouched
    # the saved run still evaluates
    _, params, step = checkpointing.load_params(str(wd), "latest")
    assert step == 3


def test_changes_that_keep_the_run_are_accepted_and_recorded(one_epoch, tmp_path, cache, unbroken):
    wd = copy_run(one_epoch, tmp_path)
    train.train_and_evaluate(tiny_config(cache, num_epochs=2, log_every_steps=1, eval_batch_size=3), str(wd))
    saved = json.loads((wd / "config.json").read_text())
    assert saved["num_epochs"] == 2 and saved["log_every_steps"] == 1 and saved["eval_batch_size"] == 3
    changes = run_io.read_rows(str(wd), "config")
    assert changes and changes[-1]["step"] == 3 and changes[-1]["changed"]["num_epochs"] == [1, 2]
    assert_same_state(wd, unbroken)


def test_init_from_forks_a_run_exactly(one_epoch, tmp_path, cache, unbroken):
    """The README: with the same settings a fork "continues exactly as the old run would have": the whole
    state (parameters, optimiser moments, rng, data position, step), not the parameters alone."""
    src, fork = one_epoch[0], tmp_path / "fork"
    train.train_and_evaluate(tiny_config(cache, num_epochs=2, init_from=f"{src}:3"), str(fork))
    assert_same_state(fork, unbroken)
    with pytest.raises(ValueError, match="model differs"):
        train.train_and_evaluate(tiny_config(cache, **{"model.latent": 5, "init_from": str(src)}),
                                 str(tmp_path / "other"))


def test_tensorboard_after_a_resume_shows_each_step_once(one_epoch, tmp_path, cache, unbroken):
    """A run that died after step 6 was logged but before checkpoint 6 was saved resumes from step 3: read
    as TensorBoard reads it, tb/ holds steps 1-6 once each, the resumed values, equal to metrics.jsonl's."""
    wd = copy_run(one_epoch, tmp_path)  # checkpoint 3; then the logs of the same run up to step 6
    for name in ("tb", "metrics.jsonl"):
        shutil.rmtree(wd / name) if name == "tb" else os.remove(wd / name)
        (shutil.copytree if name == "tb" else shutil.copy)(unbroken / name, wd / name)
    train.train_and_evaluate(tiny_config(cache, num_epochs=2), str(wd))
    shown = tensorboard_scalars(wd / "tb")  # raises on a step logged twice
    for kind, group in (("train", "train"), ("eval", "val")):
        rows = run_io.read_rows(str(wd), kind)
        assert rows and rows[-1]["step"] == 6
        for key in ("loss", "wall_s") if kind == "train" else ("psnr", "wall_s"):
            # wall_s differs between the dead run's steps 4-6 and the resumed ones: the resumed values show
            assert shown[f"{group}/{key}"] == {r["step"]: pytest.approx(r[key], rel=1e-6) for r in rows}, key


def test_a_run_that_fails_validation_leaves_no_workdir(tmp_path, cache):
    wd = tmp_path / "new"
    with pytest.raises(ValueError, match="steps_per_call"):
        train.train_and_evaluate(tiny_config(cache, steps_per_call=2), str(wd))
    assert not wd.exists()


def test_config_diff_compares_against_defaults_and_normalises_paths():
    old = config_lib.base_config().to_dict()
    del old["grad_clip"]  # a config.json written before this field existed
    new = config_lib.base_config()
    new.num_epochs = 30
    new.data.dir = "."
    old["data"]["dir"] = os.path.abspath(".")
    fixed, mutable = config_lib.resume_changes(old, new)
    assert fixed == [] and mutable == [("num_epochs", 25, 30)]
    new.grad_clip = 1.0
    assert config_lib.resume_changes(old, new)[0] == [("grad_clip", 0.0, 1.0)]


# ---------------------------------------------------------------------------------------------------------
# item 4: one training process per workdir
# ---------------------------------------------------------------------------------------------------------
def test_a_second_run_on_a_locked_workdir_exits_without_touching_it(one_epoch, cache):
    wd = one_epoch[0]
    before = tree_bytes(wd)
    with run_io.Workdir(str(wd)):  # this process holds the lock, as a running train.py would
        with pytest.raises(errors.WorkdirBusy, match=f"in use by pid {os.getpid()}"):
            train.train_and_evaluate(tiny_config(cache, num_epochs=2, learning_rate=0.1), str(wd))
    after = tree_bytes(wd)
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from jaxdenoise import run_io\n"
        "w = run_io.Workdir(sys.argv[2]).__enter__(); print('locked', flush=True); time.sleep(600)"), REPO, str(wd)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(errors.WorkdirBusy, match=f"pid {holder.pid}"):
            run_io.Workdir(str(wd)).__enter__()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with run_io.Workdir(str(wd)) as w:  # the OS released the lock with the process
        fd = os.open(w.file(run_io.LOCK_FILE), os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------
# item 5: damaged checkpoints
# ---------------------------------------------------------------------------------------------------------
def _biggest_data_file(step_dir):
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
    return max(files, key=os.path.getsize)


def _damage(step_dir, kind):
    if kind == "truncated":
        path = _biggest_data_file(step_dir)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif kind == "zeroed":
        path = _biggest_data_file(step_dir)
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.write(b"\0" * size)
    elif kind == "manifest_deleted":
        os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))
    elif kind == "flipped":
        path = _biggest_data_file(step_dir)
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            for i in np.random.default_rng(0).choice(len(data), 64, replace=False):
                data[i] ^= 0xFF
            f.seek(0)
            f.write(data)
    else:
        raise ValueError(kind)


@pytest.mark.parametrize("kind", ["truncated", "zeroed", "manifest_deleted", "flipped"])
def test_verify_names_each_kind_of_damage(tmp_path, kind):
    ck = checkpointing.Checkpointer(str(tmp_path / "ck"), async_save=False)
    tree = {"w": jax.numpy.linspace(0.0, 1.0, 4096)}
    ck.save(1, tree, {"next_index": 1})
    ck.wait()
    step_dir = os.path.join(ck.directory, "1")
    assert checkpointing.verify(step_dir) == (None, True)
    _damage(step_dir, kind)
    reason, verified = checkpointing.verify(step_dir)
    assert verified and reason and "\n" not in reason
    with pytest.raises(checkpointing.CheckpointError, match="no intact checkpoint") as e:
        ck.restore_intact(checkpointing.abstract_like(tree), log=lambda m: None)
    assert "step 1" in str(e.value) and "\n" not in str(e.value)
    ck.close()


def test_unverified_step_with_non_finite_values_is_damaged(tmp_path):
    ck = checkpointing.Checkpointer(str(tmp_path / "ck"), async_save=False)
    good, bad = {"w": jax.numpy.ones(8)}, {"w": jax.numpy.full(8, jax.numpy.nan)}
    ck.save(1, good, {"next_index": 1}, metrics={"psnr": 30.0})
    ck.save(2, bad, {"next_index": 2})
    ck.wait()
    os.remove(os.path.join(ck.directory, "2", checkpointing.INTEGRITY_FILE))  # as after a crash before sealing
    notes = []
    step, state, data = ck.restore_intact(checkpointing.abstract_like(good), with_data=True, log=notes.append)
    assert step == 1 and data == {"next_index": 1} and len(notes) == 1 and "non-finite" in notes[0]
    assert os.listdir(ck.directory + ".damaged")[0].startswith("2-")  # set aside, not deleted
    ck.close()


# ---------------------------------------------------------------------------------------------------------
# item 6: a full disk, torn metric lines, no step logged twice
# ---------------------------------------------------------------------------------------------------------
def test_a_crashed_run_leaves_nothing_that_spoils_the_resume(one_epoch, tmp_path, cache):
    """Rows logged past the last checkpoint, a torn last line, a half-written orbax step: all cleaned."""
    wd = copy_run(one_epoch, tmp_path)
    with open(wd / "metrics.jsonl", "a") as f:  # a run that logged steps 4-5, then died mid-line
        f.write(json.dumps({"kind": "train", "step": 4, "loss": 1.0}) + "\n")
        f.write(json.dumps({"kind": "train", "step": 5, "loss": 1.0}) + "\n")
        f.write('{"kind": "train", "st')
    stale = wd / "checkpoints" / "4.orbax-checkpoint-tmp-1234"
    (stale / "state").mkdir(parents=True)
    assert [r["step"] for r in run_io.read_rows(str(wd), "train")][-2:] == [4, 5]  # readers skip torn lines
    train.train_and_evaluate(tiny_config(cache, num_epochs=2, log_every_steps=1), str(wd))
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]  # every line parses
    train_steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-3:] == [4, 5, 6]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [3, 6]
    assert not stale.exists()


def test_a_full_disk_stops_with_one_line_naming_the_last_checkpoint(one_epoch, tmp_path, cache, monkeypatch):
    wd = copy_run(one_epoch, tmp_path)
    real = shutil.disk_usage
    monkeypatch.setattr(train.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(errors.DiskFull) as e:
        train.train_and_evaluate(tiny_config(cache, num_epochs=2), str(wd))
    assert str(e.value) == (f"no space left on {wd}; last good checkpoint step 3 (free some space, then rerun "
                            f"the same command to resume)")
    monkeypatch.setattr(train.shutil, "disk_usage", real)
    train.train_and_evaluate(tiny_config(cache, num_epochs=2), str(wd))  # resumes once there is space
    assert final_params(wd)[1] == 6


def test_our_own_writes_raise_disk_full_too(tmp_path, cache, monkeypatch):
    wd = tmp_path / "run"

    def full(self, row, group):
        raise OSError(errno.ENOSPC, "No space left on device", self.path)
    monkeypatch.setattr(run_io.MetricWriter, "write", full)
    with pytest.raises(errors.DiskFull, match="no checkpoint was saved yet"):
        train.train_and_evaluate(tiny_config(cache, num_epochs=1), str(wd))


# ---------------------------------------------------------------------------------------------------------
# item 7: one line, not a traceback
# ---------------------------------------------------------------------------------------------------------
def test_workdir_that_is_a_file_or_unwritable_is_one_line(tmp_path, cache):
    f = tmp_path / "file"
    f.write_text("x")
    assert_one_line_error(script("train.py", *tiny_args(f, cache)), "is a file")
    assert_one_line_error(script("train.py", *tiny_args(f / "sub", cache)), "cannot use workdir")
    assert f.read_text() == "x"


def test_mistyped_config_field_is_one_line_with_a_suggestion(tmp_path):
    proc = script("train.py", "--config", os.path.join(REPO, "configs", "demo.py"), "--workdir",
                  str(tmp_path / "w"), "--config.learnin_rate=1")
    last = assert_one_line_error(proc, "learnin_rate", "learning_rate")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "did you mean" in last
    assert not (tmp_path / "w").exists()


def test_cli_describes_errors_in_one_line():
    assert cli.describe(OSError(errno.ENOSPC, "x", "/w")) == "no space left on /w"
    assert cli.describe(OSError(errno.EROFS, "x", "/w")) == "/w is on a read-only file system"
    assert cli.describe(FileNotFoundError("peer not found at /p")) == "peer not found at /p"


def test_evaluate_prints_the_table_when_the_grid_cannot_be_written(one_epoch, tmp_path):
    wd = copy_run(one_epoch, tmp_path)  # the evaluation adds its table to the run's model card
    (tmp_path / "file").write_text("x")
    proc = script("evaluate.py", "--workdir", str(wd), "--grid", str(tmp_path / "file" / "grid.png"))
    assert proc.returncode == 0, proc.stderr
    assert "noisy input" in proc.stdout and "warning: comparison grid not written" in proc.stderr


# ---------------------------------------------------------------------------------------------------------
# item 8: a run that cannot learn says so
# ---------------------------------------------------------------------------------------------------------
def test_the_retry_hint_names_the_checkpoint_to_start_from(tmp_path):
    ck = checkpointing.Checkpointer(str(tmp_path / "ck"), async_save=False)
    assert "no checkpoint was saved" in train._retry_hint(ck, "/runs/x")
    ck.save(4, {"w": jax.numpy.ones(2)}, {"next_index": 4})
    ck.wait()
    assert "--config.init_from=/runs/x:4" in train._retry_hint(ck, "/runs/x")
    ck.close()


def test_a_run_with_zero_gradients_stops_as_stalled(tmp_path, cache):
    cfg = tiny_config(cache, learning_rate=1e6, steps_per_epoch=24, num_epochs=1, log_every_steps=4)
    with pytest.raises(train.TrainingStalled, match=r"exactly zero for \d+ steps") as e:
        train.train_and_evaluate(cfg, str(tmp_path / "run"))
    assert "\n" not in str(e.value) and "learning_rate" in str(e.value)


def test_a_model_worse_than_its_input_is_reported(one_epoch):
    # 3 steps of a tiny model score below the noisy input: said at the evaluation and at the end
    out = one_epoch[1]
    assert "warning: at epoch 1 the model is worse than its noisy input" in out
    assert "warning: the final model" in out.splitlines()[-1]


# ---------------------------------------------------------------------------------------------------------
# item 9: small
# ---------------------------------------------------------------------------------------------------------
def test_no_tracked_metric_warning_on_periodic_saves(tmp_path, cache, caplog):
    train.train_and_evaluate(tiny_config(cache, num_epochs=1, checkpoint_every_steps=1), str(tmp_path / "run"))
    assert len(checkpointing.step_dirs(str(tmp_path / "run" / "checkpoints"))) >= 1
    assert not [r for r in caplog.records if "tracked_metric" in r.getMessage()]
