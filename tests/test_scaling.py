"""Scale-out on JAX's distributed runtime, with real processes: 4 devices in one process, 2 processes of 2
devices over the CPU collectives (gloo), preemption (SIGTERM to one process), a topology change on resume,
and a process that dies.

Every run is ``scripts/train.py`` on the tiny built-in config; every wait has a timeout. Ports come from the
OS. 1 device, 4 devices and 2 x 2 devices must agree to float tolerance (the gradient's cross-device sum is
reduced in another order); the same topology resumed after a SIGTERM must agree bitwise.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxdenoise import checkpointing, config as config_lib, run_io
from tests.helpers import assert_same_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 240
# to the first logged steps of a 2-process run: most of it is start-up and compiling, which slows the most when
# the other test worker's processes share the cores (a CI run once saw no step within 240 s)
START_TIMEOUT = 420
# 3 epochs x 6 steps of 8 images (2 per device on 4 devices); a log row per step, a checkpoint per epoch
TINY_CONFIG = os.path.join(REPO, "configs", "tiny.py")
TINY = {"steps_per_epoch": 6, "num_epochs": 3, "log_every_steps": 1}  # configs/tiny.py's run, 18 steps long


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", PYTHONFAULTHANDLER="1")
    env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    return env


def _cmd(wd, cache, **over):
    fields = {**TINY, "data.cache_dir": str(cache), **over}
    text = lambda v: "(" + ",".join(map(str, v)) + ")" if isinstance(v, tuple) else v
    return ([sys.executable, os.path.join(REPO, "scripts", "train.py"), "--config",
             TINY_CONFIG, "--workdir", str(wd)]
            + [f"--config.{k}={text(v)}" for k, v in fields.items()])


def _train_here(wd, cache, **over):
    """The same run as ``_cmd`` would start, in this process (one CPU device): no start-up cost."""
    from jaxdenoise import train
    c = config_lib.load_file(TINY_CONFIG)
    for k, v in {**TINY, "data.cache_dir": str(cache), **over}.items():
        node, *path = c, *k.split(".")
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = v
    return train.train_and_evaluate(c, str(wd))


# Installed in a process through PYTHONPATH: an audit hook that logs every file or folder the process's Python
# code opens for writing, creates, renames or removes (TensorStore's C++ writes inside orbax are not seen)
_WRITE_LOG = """
import os, sys
_log = os.environ["JAXDENOISE_WRITE_LOG"]
def _hook(event, args):
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        mode, flags = args[1] or "", args[2] or 0
        if any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            path = os.fspath(args[0])
        else:
            return
    elif event in ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.link", "os.symlink"):
        path = os.fspath(args[0]) if not isinstance(args[0], int) else ""
    else:
        return
    if path and path != _log:
        with open(_log, "a", opener=lambda p, f: os.open(p, f | os.O_CREAT | os.O_APPEND | os.O_WRONLY,
                                                           0o644)) as f:
            f.write(f"{event} {os.path.abspath(path)}\n")
sys.addaudithook(_hook)
"""


def _start(wd, cache, processes=1, devices=1, extra=(), write_log=None, **over):
    """Start a run: ``processes`` real processes with ``devices`` CPU devices each; returns the Popens.
    write_log: a file where process 1 logs every path its Python code writes (``_WRITE_LOG``)."""
    cmd = _cmd(wd, cache, **over) + list(extra)
    if processes == 1:
        return [subprocess.Popen(cmd, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    port = _free_port()
    envs = [_env(devices) for _ in range(processes)]
    if write_log:
        hook_dir = os.path.join(os.path.dirname(str(write_log)), "write-hook")
        os.makedirs(hook_dir, exist_ok=True)
        with open(os.path.join(hook_dir, "sitecustomize.py"), "w") as f:
            f.write(_WRITE_LOG)
        envs[1].update(PYTHONPATH=hook_dir + os.pathsep + envs[1]["PYTHONPATH"], JAXDENOISE_WRITE_LOG=str(write_log))
    return [subprocess.Popen(cmd + [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}",
                                    f"--process_id={i}", "--heartbeat_timeout_seconds=5"],
                             env=envs[i], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(processes)]


def _finish(procs, timeout=TIMEOUT):
    """[(returncode, stdout, stderr)] of every process; kills them all if any outlives ``timeout``."""
    deadline, out = time.time() + timeout, []
    try:
        for p in procs:
            o, e = p.communicate(timeout=max(deadline - time.time(), 1))
            out.append((p.returncode, o, e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return out


def _run(wd, cache, processes=1, devices=1, **over):
    res = _finish(_start(wd, cache, processes, devices, **over))
    for rc, o, e in res:
        assert rc == 0, (rc, o[-2000:], e[-3000:])
    return res


def _params(wd, which="latest"):
    _, state, step, data = checkpointing.load_state(str(wd), which)
    return state["train_state"].params, step, data


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _evals(wd):
    return [r for r in run_io.read_rows(str(wd)) if r["kind"] == "eval"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache):
    """The same run on 1 device (here), on 4 devices of one process, and as 2 processes x 2 devices over gloo
    (workdirs, and the 2 processes' outputs and wall time). The two subprocess runs start together: most of
    their time is starting up."""
    base = tmp_path_factory.mktemp("runs")
    four = _start(base / "four", cache, devices=4, micro_batch=1)  # each device: 2 micro-batches of 1 image
    t0 = time.time()
    two = _start(base / "two", cache, processes=2, devices=2, write_log=base / "process1-writes.log")
    assert jax.device_count() == 1
    _train_here(base / "one", cache)
    res_two = _finish(two)
    seconds = time.time() - t0
    for rc, o, e in _finish(four) + res_two:
        assert rc == 0, (rc, o[-2000:], e[-3000:])
    return base / "one", base / "four", (base / "two", res_two, seconds)


@pytest.fixture(scope="module")
def reference(runs):
    return runs[0], runs[1]


@pytest.fixture(scope="module")
def two_processes(runs):
    return runs[2]


def test_four_devices_match_one_device(reference):
    one, four = reference
    p1, s1, _ = _params(one)
    p4, s4, _ = _params(four)
    assert s1 == s4 == 18
    print(f"1 vs 4 devices: max |parameter difference| {_max_diff(p1, p4):.3g}")
    assert _max_diff(p1, p4) < 1e-5
    for a, b in zip(_evals(one), _evals(four), strict=True):
        assert a["step"] == b["step"] and abs(a["psnr"] - b["psnr"]) < 1e-3, (a, b)


def test_two_processes_match_one_process_and_write_once(reference, two_processes):
    one, four = reference
    wd, res, seconds = two_processes
    p2, s2, data = _params(wd)
    assert s2 == 18 and data[run_io_key()] == 2
    ev_diff = max(abs(a[k] - b[k]) for a, b in zip(_evals(one), _evals(wd)) for k in ("psnr", "ssim", "noisy_psnr"))
    print(f"2 processes vs 4 devices: {_max_diff(p2, _params(four)[0]):.3g}, vs 1 device: "
          f"{_max_diff(p2, _params(one)[0]):.3g} (max |parameter difference|); metrics vs 1 device: {ev_diff:.3g}")
    assert _max_diff(p2, _params(four)[0]) < 1e-5  # the 4-device mesh split over 2 processes (whole batches)
    assert _max_diff(p2, _params(one)[0]) < 1e-5
    ev1, ev2 = _evals(one), _evals(wd)
    assert [r["step"] for r in ev2] == [6, 12, 18]  # one row per evaluation: one writer
    for a, b in zip(ev1, ev2, strict=True):
        for k in ("psnr", "ssim", "noisy_psnr"):
            assert abs(a[k] - b[k]) < 1e-3, (k, a, b)
    train_rows = [r["step"] for r in run_io.read_rows(str(wd), "train")]
    assert train_rows == sorted(set(train_rows)) and len(train_rows) == 18
    (rc0, out0, _), (rc1, out1, _) = res
    assert "in 2 processes" in out0 and "val PSNR" in out0
    # process 1 writes nothing of the run's but its part of the checkpoints (config.json, metrics, tb/, plots and
    # grid are process 0's): every path its Python code wrote, created, renamed or removed, under the workdir
    log = wd.parent / "process1-writes.log"
    written = [line.split(" ", 1)[1] for line in log.read_text().splitlines()] if log.exists() else []
    inside = sorted({os.path.relpath(p, wd) for p in written if p.startswith(str(wd) + os.sep) or p == str(wd)})
    print(f"process 1 wrote under the workdir: {inside}")
    assert all(p.startswith("checkpoints" + os.sep) or p == "checkpoints" for p in inside), inside
    assert os.path.isfile(wd / "config.json") and os.path.isdir(wd / "tb")  # process 0 did write them
    # process 1 prints nothing of ours (gloo's C++ connection lines, which threads may interleave, aside)
    assert [line for line in out1.splitlines() if line.strip() and "Gloo" not in line and "peer ranks" not in line
            and not line.startswith("[")] == []
    with open(os.path.join(wd, "config.json")) as f:
        assert json.load(f)["batch_size"] == 8
    print(f"2 processes x 2 devices: {seconds:.1f} s wall for the 18-step run")


def run_io_key():
    from jaxdenoise import train
    return train.PROCESS_COUNT_KEY


def _wait_for_rows(wd, procs, n, timeout=START_TIMEOUT):
    metrics = os.path.join(wd, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if os.path.isfile(metrics) and sum(1 for _ in open(metrics)) >= n:
            return
        time.sleep(0.02)
    rows = sum(1 for _ in open(metrics)) if os.path.isfile(metrics) else 0
    alive = [p.poll() is None for p in procs]
    for p in procs:  # SIGABRT: faulthandler (PYTHONFAULTHANDLER, _env) prints where every thread was
        if p.poll() is None:
            p.send_signal(signal.SIGABRT)
    outs = _finish(procs, timeout=60)
    tails = [re.sub(r"\nExtension modules:.*", "", e)[-3000:] for _, _, e in outs]  # faulthandler's module list
    raise AssertionError(f"the run did not get under way: {rows} of {n} rows in {timeout} s, processes alive "
                         f"{alive}; " + " | ".join(f"process {i} (rc {rc}): ...{t}"
                                                  for i, ((rc, _, _), t) in enumerate(zip(outs, tails))))


def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes_exactly(tmp_path, cache, two_processes, capsys):
    wd = tmp_path / "run"
    procs = _start(wd, cache, processes=2, devices=2)
    _wait_for_rows(wd, procs, 2)
    procs[1].send_signal(signal.SIGTERM)  # one process only: the preemption notice reaches the other
    (rc0, out0, err0), (rc1, _, err1) = _finish(procs)
    assert rc0 != 0 and rc1 != 0
    steps_said = []
    for err in (err0, err1):
        last = err.strip().splitlines()[-1]
        assert "stopped by a preemption notice" in last, err[-2000:]
        steps_said.append(int(re.search(r"after step (\d+)", last).group(1)))
    stopped = checkpointing.step_dirs(os.path.join(wd, "checkpoints"))[-1]
    assert steps_said == [stopped, stopped] and 2 <= stopped < 18, (steps_said, stopped)
    # the topology changes: a copy resumes in 1 process with 1 device, from the same step and position
    moved = tmp_path / "moved"
    shutil.copytree(wd, moved)
    # the same topology resumes: bitwise the unbroken run, its whole state (optimiser, rng, data position)
    _run(wd, cache, processes=2, devices=2)
    assert _params(wd)[1] == 18
    assert_same_state(wd, two_processes[0])
    ref, _, _ = _params(two_processes[0])
    _train_here(moved, cache)
    out = capsys.readouterr().out
    assert f"resumed from {moved}/checkpoints/{stopped}" in out
    assert "written by 2 process(es), this run has 1" in out
    p1, step1, data1 = _params(moved)
    assert step1 == 18 and data1[run_io_key()] == 1
    print(f"stopped at step {stopped}; 2 -> 1 process resume vs unbroken 2-process run: {_max_diff(p1, ref):.3g}")
    assert _max_diff(p1, ref) < 1e-5


def test_a_killed_process_stops_the_other_within_the_heartbeat_timeout(tmp_path, cache):
    wd = tmp_path / "run"
    procs = _start(wd, cache, processes=2, devices=2, num_epochs=100)
    _wait_for_rows(wd, procs, 2)
    procs[1].kill()
    t0 = time.time()
    (rc0, _, err0), _ = _finish(procs, timeout=90)  # heartbeat timeout 5 s; _finish kills it after 90
    print(f"killed process 1: process 0 exited with {rc0} after {time.time() - t0:.1f} s (heartbeat timeout 5 s)")
    assert rc0 not in (0, -signal.SIGKILL), rc0  # it stopped by itself, not by our kill at the time limit
    assert "another task died" in err0 or "stopped sending heartbeats" in err0, err0[-2000:]


def _last_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err[-3000:]
    return lines[-1]


def test_processes_started_with_other_settings_stop_in_one_line(tmp_path, cache):
    """batch 8 on process 0, 4 on process 1: both stop before compiling (not a gloo 'collective mismatch'
    abort), process 1 naming the field; no workdir is left."""
    port = _free_port()
    procs = [subprocess.Popen(_cmd(tmp_path / "run", cache, batch_size=8 if i == 0 else 4) + [
        f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
        "--heartbeat_timeout_seconds=5", "--initialization_timeout=60"], env=_env(1), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]
    (rc0, _, err0), (rc1, _, err1) = _finish(procs, timeout=120)
    assert rc0 == rc1 == 1, (rc0, rc1, err0[-2000:], err1[-2000:])
    assert "config.batch_size 8 vs 4 here" in _last_error(err1)
    assert "process(es) 1 were started with other settings" in _last_error(err0)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags,needle", [
    (["--coordinator_address=127.0.0.1", "--num_processes=2", "--process_id=0"], "HOST:PORT"),
    (["--coordinator_address=127.0.0.1:99999", "--num_processes=2", "--process_id=0"], "HOST:PORT"),
    (["--coordinator_address=127.0.0.1:1234", "--num_processes=2", "--process_id=2"], "--process_id must be in"),
    (["--coordinator_address=127.0.0.1:1234", "--num_processes=2", "--process_id=1",
      "--heartbeat_timeout_seconds=-1"], "--heartbeat_timeout_seconds must be in [1, 86400]"),
    (["--coordinator_address=127.0.0.1:1234", "--num_processes=0", "--process_id=0"], "--num_processes must be >= 1"),
    (["--coordinator_address=127.0.0.1:1234", "--num_processes=2", "--process_id=0",
      "--initialization_timeout=99999999999"], "--initialization_timeout must be in [1, 86400]"),
])
def test_bad_distributed_flags_are_one_line(tmp_path, cache, flags, needle):
    p = subprocess.run(_cmd(tmp_path / "run", cache) + flags, env=_env(1), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1 and needle in _last_error(p.stderr), p.stderr[-2000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("process_id", [0, 1])
def test_a_run_whose_other_processes_never_come_says_so_and_ends(tmp_path, cache, process_id):
    """Process 0 alone (the others never started), or process 1 with nobody listening at the address: a line
    says what it waits for, and the wait ends with one error line, not a native abort or a silent hang."""
    p = subprocess.run(_cmd(tmp_path / "run", cache) + [
        f"--coordinator_address=127.0.0.1:{_free_port()}", "--num_processes=2", f"--process_id={process_id}",
        "--initialization_timeout=3"], env=_env(1), capture_output=True, text=True, timeout=120)
    assert "waiting up to 3 s for every process" in p.stderr, p.stderr[-2000:]
    assert p.returncode == 1 and "could not join the run within 3 s" in _last_error(p.stderr)
    assert not (tmp_path / "run").exists()
