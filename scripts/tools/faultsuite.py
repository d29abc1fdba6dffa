"""The fault-injection suite behind ``scripts/faultcheck.py``: break a small real training run (and the data
jobs) in every way we know, then check that nothing was lost.

Every training fault is injected into real ``scripts/train.py`` processes on a tiny config (16x16 built-in
crops, the paper model at widths 8/4), then the same command is rerun until the run is complete, and its
final parameters are compared bit for bit with an unbroken run of the same command. Per fault we record:

- recovered: the rerun(s) finished the run;
- bitwise: its final parameters equal the unbroken run's (where a fault leaves a checkpoint to resume);
- files_lost: user files changed or deleted, and finished checkpoints lost (the newest finished step
  before the fault is missing afterwards and nothing newer replaced it); must be 0;
- one_line / tracebacks: for each process that had to stop (SIGTERM, lock, full disk, bad path), whether
  it said so in one ``error:`` line or printed a traceback.

The faults: ``kill -9`` at random moments (many land inside checkpoint writes: ``in_checkpoint_write``
counts them), SIGTERM, each kind of checkpoint damage (truncated, zeroed, deleted manifest, 64 flipped
bytes, and flipped bytes in a step whose checksums were lost), a disk that fills up during training (a
small tmpfs, where this machine lets us mount one), a second run on the same workdir, read-only and
unusable paths, the data-safety cases of prepare_data.py and denoise.py, and every output flag of every
script pointed at inputs, a run's own files and a user's files (``output_paths``). Then the image reader is
fuzzed (``fuzz.fuzz_reader``).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from jaxdenoise import fsutil, layout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAMAGE_KINDS = ("truncated", "zeroed", "manifest_deleted", "flipped_64_bytes", "flipped_unsealed")

# The tests' tiny run (configs/tiny.py), 3 epochs x 6 steps; evaluation each epoch, a checkpoint every 2 steps,
# a log row per step.
TINY_CONFIG = os.path.join(REPO, "configs", "tiny.py")
TINY = {"steps_per_epoch": 6, "num_epochs": 3, "log_every_steps": 1, "checkpoint_every_steps": 2}


class Outcome(dict):
    """One scenario's figures (a dict, so the summary is plain JSON)."""

    def __init__(self, name: str, **fields):
        super().__init__(scenario=name, faults=0, recovered=0, bitwise=0, bitwise_expected=0, files_lost=0,
                         one_line=0, tracebacks=0, seconds=0.0, notes=[], **fields)

    def stopped(self, proc: subprocess.CompletedProcess, expect: str = "") -> bool:
        """Count a process that had to stop: one ``error:`` line (containing ``expect``) or a traceback."""
        lines = proc.stderr.strip().splitlines()
        ok = (proc.returncode != 0 and "Traceback" not in proc.stderr and bool(lines)
              and lines[-1].startswith("error: ") and expect in lines[-1])
        self["one_line" if ok else "tracebacks"] += 1
        if not ok:
            self["notes"].append(f"expected one error line with {expect!r}, got rc={proc.returncode}: "
                                 f"{(lines or ['(no output)'])[-1][:200]}")
        return ok


def _lost(before: Dict[str, str], after: Dict[str, str]) -> int:
    return sum(1 for k, v in before.items() if after.get(k) != v)


def _steps(workdir: str) -> List[int]:
    from jaxdenoise import checkpointing
    return checkpointing.step_dirs(os.path.join(workdir, layout.CHECKPOINTS_DIR))


class Runner:
    """Starts ``scripts/*.py`` as real processes with the tiny config; keeps the unbroken run's parameters."""

    def __init__(self, base: str, log: Callable[[str], None]):
        self.base, self.log = base, log
        self.cache = os.path.join(base, "cache")
        # JAX's persistent compilation cache: every restart loads the same executables instead of compiling
        # them again (seconds per start on a small CPU); results are those of the same compiled code
        self.env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        JAX_COMPILATION_CACHE_DIR=os.environ.get("JAX_COMPILATION_CACHE_DIR")
                        or os.path.join(base, "jax-cache"),  # the caller's (the test session's) when it has one
                        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
        self.reference = None
        self.timeline = (0.0, 0.0)  # seconds to the first logged step, and to the end, of the unbroken run

    def train_args(self, workdir: str, **overrides) -> List[str]:
        fields = {**TINY, "data.cache_dir": self.cache, **overrides}
        return ([sys.executable, os.path.join(REPO, "scripts", "train.py"), "--config", TINY_CONFIG,
                 "--workdir", workdir]
                + [f"--config.{k}={v}" for k, v in fields.items()])

    def script(self, name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, os.path.join(REPO, "scripts", name), *args], capture_output=True,
                              text=True, timeout=timeout, env=self.env)

    def train(self, workdir: str, timeout: float = 300, **overrides) -> subprocess.CompletedProcess:
        return subprocess.run(self.train_args(workdir, **overrides), capture_output=True, text=True,
                              timeout=timeout, env=self.env)

    def start(self, workdir: str, **overrides) -> subprocess.Popen:
        return subprocess.Popen(self.train_args(workdir, **overrides), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env)

    def finish(self, workdir: str, out: Outcome, tries: int = 3, **overrides) -> bool:
        """Rerun the same command until the run completes; count recovery and bitwise equality."""
        for _ in range(tries):
            proc = self.train(workdir, **overrides)
            if proc.returncode == 0:
                out["recovered"] += 1
                out["bitwise_expected"] += 1
                if self.same_as_reference(workdir):
                    out["bitwise"] += 1
                else:
                    out["notes"].append(f"{workdir}: final parameters differ from the unbroken run")
                return True
            out["notes"].append(f"rerun failed: {(proc.stderr.strip().splitlines() or [''])[-1][:200]}")
        return False

    def state(self, workdir: str):
        """(step, every leaf of the latest checkpoint's whole state: parameters, optimiser state, EMA, the
        run's rng; then its data position) of a workdir."""
        from jaxdenoise import checkpointing
        import jax
        _, tree, step, data_state = checkpointing.load_state(workdir, "latest")
        leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
        return step, leaves + [json.dumps(data_state, sort_keys=True, default=str)]

    def same_as_reference(self, workdir: str) -> bool:
        """The run in ``workdir`` ended exactly as the unbroken one: the same step and whole state, bit for bit
        (not the parameters alone: a resume that lost the optimiser moments or the data position would pass)."""
        step, leaves = self.state(workdir)
        ref_step, ref = self.reference
        return step == ref_step and len(leaves) == len(ref) and all(
            np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b for a, b in zip(leaves, ref))

    def make_reference(self) -> None:
        """Run the tiny config once unbroken (after a first run that fills the data and compilation caches,
        so that its timeline is that of every later start)."""
        warm = self.train(os.path.join(self.base, "warm-up"))
        if warm.returncode != 0:
            raise RuntimeError(f"the warm-up run failed: {warm.stderr.strip().splitlines()[-1:]}")
        wd = os.path.join(self.base, "unbroken")
        t0 = time.perf_counter()
        proc = self.start(wd)
        first = None
        while proc.poll() is None:
            if first is None and os.path.isfile(os.path.join(wd, "metrics.jsonl")):
                first = time.perf_counter() - t0
            time.sleep(0.02)
        total = time.perf_counter() - t0
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"the unbroken reference run failed: {err.strip().splitlines()[-1:]}")
        self.reference = self.state(wd)
        self.timeline = (first or total / 2, total)
        self.log(f"unbroken run: {total:.1f} s (first step logged at {self.timeline[0]:.1f} s)")


# ----------------------------------------------------------------------------------------------------------
# training faults
# ----------------------------------------------------------------------------------------------------------
def kills(r: Runner, n: int, rng: np.random.Generator) -> Outcome:
    """``kill -9`` at random moments of the training phase, several per run; every run that reaches its end
    (on its own between kills, or rerun after the last kill) is compared with the unbroken run."""
    out = Outcome("kill -9", in_checkpoint_write=0, kills_after_exit=0)
    first, total = r.timeline
    runs, killed = 0, 0  # runs started (one workdir each), kills in the current one
    wd = os.path.join(r.base, "kills-0")
    while out["faults"] < n:
        before = _steps(wd)
        proc = r.start(wd)
        time.sleep(rng.uniform(first * 0.8, total))
        if proc.poll() is not None:  # the run reached its end before the kill
            _, err = proc.communicate()
            out["kills_after_exit"] += 1
            if proc.returncode != 0:
                out["notes"].append(f"a resumed run failed: {(err.strip().splitlines() or [''])[-1][:200]}")
            elif killed:
                out["recovered"] += 1
                out["bitwise_expected"] += 1
                out["bitwise"] += r.same_as_reference(wd)
            runs, killed = runs + 1, 0
            wd = os.path.join(r.base, f"kills-{runs}")
            continue
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        out["faults"] += 1
        killed += 1
        ck = os.path.join(wd, layout.CHECKPOINTS_DIR)
        if os.path.isdir(ck) and any("orbax-checkpoint-tmp" in name for name in os.listdir(ck)):
            out["in_checkpoint_write"] += 1
        after = _steps(wd)
        if before and (not after or max(after) < max(before)):
            out["files_lost"] += 1
            out["notes"].append(f"finished checkpoint {max(before)} lost after a kill")
    if killed:
        r.finish(wd, out)
    return out


def sigterm(r: Runner) -> Outcome:
    """SIGTERM once training is under way: one line, a checkpoint, exit non-zero; the rerun finishes."""
    out = Outcome("SIGTERM")
    wd = os.path.join(r.base, "sigterm")
    proc = r.start(wd)
    metrics = os.path.join(wd, "metrics.jsonl")
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not (
            os.path.isfile(metrics) and open(metrics).read().count("\n") >= 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    out["faults"] += 1
    out.stopped(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), "SIGTERM")
    r.finish(wd, out)
    return out


def damage(step_dir: str, kind: str, rng: np.random.Generator) -> str:
    """Damage a finished checkpoint step in place; returns what was done."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
    data_file = max(files, key=os.path.getsize)
    if kind == "truncated":
        with open(data_file, "r+b") as f:
            f.truncate(os.path.getsize(data_file) // 2)
    elif kind == "zeroed":
        size = os.path.getsize(data_file)
        with open(data_file, "r+b") as f:
            f.write(b"\0" * size)
    elif kind == "manifest_deleted":
        os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))
    elif kind in ("flipped_64_bytes", "flipped_unsealed"):
        if kind == "flipped_unsealed":  # as after a crash between orbax's commit and our checksums
            from jaxdenoise import checkpointing
            os.remove(os.path.join(step_dir, checkpointing.INTEGRITY_FILE))
        with open(data_file, "r+b") as f:
            data = bytearray(f.read())
            for i in rng.choice(len(data), min(64, len(data)), replace=False):
                data[i] ^= 1 + int(rng.integers(255))
            f.seek(0)
            f.write(data)
    else:
        raise ValueError(f"unknown damage {kind!r}")
    return f"{kind}: {os.path.relpath(data_file, step_dir)}"


def checkpoint_damage(r: Runner, kinds: Sequence[str], rng: np.random.Generator, workers: int = 1) -> Outcome:
    """Damage the latest checkpoint of a half-finished run in each way; evaluate.py and the rerun must fall
    back to the intact earlier step (unsealed flips may restore silently: then the run continues from
    them, and only the checksums could have told; we count what happens). ``workers``: kinds at a time
    (each in its own copy of the run, with its own random stream)."""
    out = Outcome("checkpoint damage", fell_back=0, silent=0)
    half = os.path.join(r.base, "half")
    # a run at step 12 with its step-6 checkpoint still on disk (retention keeps latest + best: put 6 back
    # if epoch 2 was the best), as a run that crashed after saving 12 would leave it
    steps_per_epoch = TINY["steps_per_epoch"]
    for epochs in (1, 2):
        proc = r.train(half, num_epochs=epochs)
        if proc.returncode != 0:
            out["notes"].append(f"setup run failed: {proc.stderr.strip().splitlines()[-1:]}")
            return out
        if epochs == 1:
            shutil.copytree(os.path.join(half, layout.CHECKPOINTS_DIR, str(steps_per_epoch)), os.path.join(r.base, "early"))
    if steps_per_epoch not in _steps(half):
        shutil.copytree(os.path.join(r.base, "early"), os.path.join(half, layout.CHECKPOINTS_DIR, str(steps_per_epoch)))
    from concurrent.futures import ThreadPoolExecutor
    streams = [np.random.default_rng(int(rng.integers(2**32))) for _ in kinds]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        parts = list(pool.map(lambda a: _damage_one(r, half, *a), zip(kinds, streams)))
    for part in parts:  # in the kinds' order
        for k, v in part.items():
            if k == "notes":
                out["notes"].extend(v)
            elif isinstance(v, int) and k in out:
                out[k] += v
    return out


def _damage_one(r: Runner, half: str, kind: str, rng: np.random.Generator) -> Outcome:
    """One kind of damage on a copy of the half-finished run ``half`` (see ``checkpoint_damage``)."""
    out = Outcome("checkpoint damage", fell_back=0, silent=0)
    wd = os.path.join(r.base, f"damage-{kind}")
    shutil.copytree(half, wd)
    steps = _steps(wd)
    what = damage(os.path.join(wd, layout.CHECKPOINTS_DIR, str(steps[-1])), kind, rng)
    out["faults"] += 1
    ev = r.script("evaluate.py", "--workdir", wd, "--checkpoint", "latest", "--limit", "2",
                  "--grid", os.path.join(r.base, f"grid-{kind}.png"))
    fell_back = ev.returncode == 0 and f"(step {steps[-2]})" in ev.stdout and "is damaged" in ev.stderr
    if "Traceback" in ev.stderr:
        out["tracebacks"] += 1
        kept = os.path.join(r.base, f"damage-{kind}.stderr")
        with open(kept, "w") as f:  # for diagnosis: the whole stderr
            f.write(ev.stderr)
        out["notes"].append(f"{what}: evaluate printed a traceback ({kept}): "
                            f"{(ev.stderr.strip().splitlines() or [''])[-1][:200]}")
    if fell_back:
        out["fell_back"] += 1
    elif kind == "flipped_unsealed" and ev.returncode == 0:
        out["silent"] += 1  # no checksums: corrupted values that are finite restore like any others
    else:
        out["notes"].append(f"{what}: evaluate did not fall back: {(ev.stderr.strip().splitlines() or [''])[-1]}")
    if kind == DAMAGE_KINDS[0]:  # denoise.py reads checkpoints the same way: it must fall back too (once: cheap)
        photos = os.path.join(r.base, f"damage-{kind}-photos")
        _photos(photos, 1)
        dn = r.script("denoise.py", "--workdir", wd, "--checkpoint", "latest", "--input", photos, "--output",
                      os.path.join(r.base, f"damage-{kind}-out"))
        if not (dn.returncode == 0 and "is damaged" in dn.stderr
                and os.listdir(os.path.join(r.base, f"damage-{kind}-out"))):
            out["notes"].append(f"{what}: denoise.py did not fall back: rc={dn.returncode}: "
                                f"{(dn.stderr.strip().splitlines() or [''])[-1][:200]}")
    if kind == "flipped_unsealed" and not fell_back:
        return out  # the run would continue from the corrupted values: no bitwise comparison possible
    r.finish(wd, out)
    return out


def _can_mount() -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = tempfile.mkdtemp(prefix="jaxdenoise-mount-")
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", probe], capture_output=True)
    os.rmdir(probe)
    return ok


@contextlib.contextmanager
def tmpfs(path: str, size: str):
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


def _fill(path: str) -> None:
    """Take every free byte of the file system holding ``path``."""
    chunk = b"\0" * 4096
    fd = os.open(os.path.join(path, "filler"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, chunk) == len(chunk):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)


def disk_full(r: Runner, n: int, rng: np.random.Generator) -> Outcome:
    """The disk fills up at a random moment of training (workdir on an 8 MB tmpfs, a filler file takes the
    rest): one line naming the last good checkpoint, exit non-zero, nothing corrupted (plot.py and
    evaluate.py still work); once space is freed, the same command finishes the run bitwise."""
    out = Outcome("disk full", fills_after_last_write=0, ended_before_fill=0)
    if not _can_mount():
        out["skipped"] = ("not run: this machine does not let us mount a tmpfs (the unit tests cover the "
                          "handling with an injected ENOSPC)")
        r.log(f"disk full: {out['skipped']}")
        return out
    first, total = r.timeline
    for i in range(3 * n):  # attempts: a fill can land after the run's last write
        if out["faults"] == n:
            break
        with tmpfs(os.path.join(r.base, f"full-{i}"), "8m") as mnt:
            wd = os.path.join(mnt, "run")
            proc = r.start(wd)
            time.sleep(rng.uniform(first * 0.9, total * 0.8))
            if proc.poll() is not None:
                proc.communicate()
                out["ended_before_fill"] += 1
                continue
            before = _steps(wd)
            _fill(mnt)
            try:
                stdout, stderr = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
                out["notes"].append("the run hung on a full disk")
            done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
            if proc.returncode == 0:  # the disk filled after the run's last write: nothing to report
                out["fills_after_last_write"] += 1
                os.remove(os.path.join(mnt, "filler"))
                continue
            out["faults"] += 1
            if not out.stopped(done, "no space left on"):
                with open(os.path.join(r.base, f"disk-full-{i}.stderr"), "w") as f:
                    f.write(stderr)
                out["notes"].append(f"stderr kept in {f.name}")
            after = _steps(wd)
            if before and (not after or max(after) < max(before)):
                out["files_lost"] += 1
            for check in (["plot.py", "--workdir", wd, "--out", os.path.join(r.base, f"plots-{i}")],
                          ["evaluate.py", "--workdir", wd, "--checkpoint", "latest", "--limit", "1", "--grid",
                           os.path.join(r.base, f"g-{i}.png")]):
                res = r.script(*check)
                if res.returncode != 0 and _steps(wd):
                    out["notes"].append(f"{check[0]} failed after the full disk: {res.stderr.strip()[-200:]}")
                    out["tracebacks"] += "Traceback" in res.stderr
            os.remove(os.path.join(mnt, "filler"))
            r.finish(wd, out)
    return out


def concurrent(r: Runner) -> Outcome:
    """A second train.py on a workdir in use: one line naming the holder, nothing touched; the first ends
    as if alone."""
    out = Outcome("second run on a busy workdir")
    wd = os.path.join(r.base, "busy")
    first = r.start(wd)
    deadline = time.time() + 120
    while first.poll() is None and time.time() < deadline and not os.path.isfile(os.path.join(wd, "metrics.jsonl")):
        time.sleep(0.02)
    # Paused (SIGSTOP) while the second runs: alive, holding the workdir, and no further on. Left running, the
    # tiny first run could end while the second was still starting up (seen on a slow CPU, 2026-12-06): the
    # second then met a free workdir and its resume check instead of the lock. The pause changes no result.
    paused = first.poll() is None
    if paused:
        os.kill(first.pid, signal.SIGSTOP)
    try:
        second = r.train(wd, num_epochs=5, learning_rate=0.01)
    finally:
        if paused:
            os.kill(first.pid, signal.SIGCONT)
    out["faults"] += 1
    if paused:
        out.stopped(second, f"in use by pid {first.pid}")
    else:
        out["notes"].append(f"the first run ended (rc={first.returncode}) before the second started: not tested")
    first.communicate(timeout=300)
    if first.returncode == 0:
        out["recovered"] += 1
        out["bitwise_expected"] += 1
        out["bitwise"] += r.same_as_reference(wd)
    cfg = json.load(open(os.path.join(wd, "config.json")))
    if cfg["num_epochs"] != TINY["num_epochs"]:
        out["files_lost"] += 1
        out["notes"].append("the second run changed config.json")
    return out


def bad_paths(r: Runner) -> Outcome:
    """Unusable paths for every job (a workdir that is a file, or under a file; a read-only folder where
    the machine lets us make one): one line each, nothing written."""
    out = Outcome("unusable and read-only paths")
    base = os.path.join(r.base, "paths")
    os.makedirs(base)
    afile = os.path.join(base, "a_file")
    with open(afile, "w") as f:
        f.write("not a folder\n")
    src = os.path.join(base, "photos")
    _photos(src, 3)
    trained = os.path.join(r.base, "unbroken")
    cases = [("train.py workdir is a file", lambda: r.train(afile), "is a file"),
             ("train.py workdir under a file", lambda: r.train(os.path.join(afile, "run")), "cannot use workdir"),
             ("prepare_data.py --out under a file",
              lambda: r.script("prepare_data.py", "--src", src, "--out", os.path.join(afile, "store")), ""),
             ("denoise.py --output under a file",
              lambda: r.script("denoise.py", "--workdir", trained, "--input", src, "--output",
                               os.path.join(afile, "out")), ""),
             ("denoise.py --batch 0",
              lambda: r.script("denoise.py", "--workdir", trained, "--input", src, "--output",
                               os.path.join(base, "o"), "--batch", "0"), "batch"),
             ("train.py mistyped field", lambda: subprocess.run(
                 r.train_args(os.path.join(base, "w"))[:6] + ["--config.learnin_rate=1"], capture_output=True,
                 text=True, env=r.env, timeout=120), "did you mean")]
    ro = os.path.join(base, "readonly")
    mountable = _can_mount()
    if mountable:
        os.makedirs(ro)
        shutil.copytree(trained, os.path.join(ro, "run"))
    before = fsutil.tree_digests(base)
    # a bind mount of a folder onto itself, remounted read-only (os.path.ismount cannot see it: same device)
    mounted = mountable and subprocess.run(["mount", "--bind", ro, ro], capture_output=True).returncode == 0
    readonly = mounted and subprocess.run(["mount", "-o", "remount,bind,ro", ro], capture_output=True).returncode == 0
    if readonly:
        cases += [("train.py on a read-only workdir", lambda: r.train(os.path.join(ro, "run"), num_epochs=4),
                   "read-only"),
                  ("prepare_data.py --out read-only",
                   lambda: r.script("prepare_data.py", "--src", src, "--out", os.path.join(ro, "store")), "")]
    try:
        for name, call, expect in cases:
            out["faults"] += 1
            if not out.stopped(call(), expect):
                out["notes"][-1] = f"{name}: {out['notes'][-1]}"
        if readonly:  # evaluate on a read-only workdir: the table first, the grid only a warning
            out["faults"] += 1
            ev = r.script("evaluate.py", "--workdir", os.path.join(ro, "run"), "--limit", "2")
            if ev.returncode == 0 and "noisy input" in ev.stdout and "warning" in ev.stderr:
                out["one_line"] += 1
            else:
                out["tracebacks"] += "Traceback" in ev.stderr
                out["notes"].append(f"evaluate on a read-only workdir: rc={ev.returncode}")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", ro], capture_output=True)
    out["files_lost"] += _lost(before, fsutil.tree_digests(base))
    return out


def _photos(folder: str, n: int, seed: int = 0, names: Optional[Sequence[str]] = None) -> List[str]:
    """Write ``n`` small smooth photos (PNG/JPEG) into ``folder``; returns their names."""
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(names or [f"img{i:03d}.{'png' if i % 2 else 'jpg'}" for i in range(n)])
    y, x = np.mgrid[0:40, 0:48] / 48.0
    for name in names:
        a, b = rng.random(2) * 6
        img = np.stack([np.sin(a * x + b), np.cos(b * y + a), x * y], -1) * 0.4 + 0.5
        Image.fromarray((img * 255).astype(np.uint8)).save(os.path.join(folder, name))
    return names


def data_safety(r: Runner) -> Outcome:
    """prepare_data.py and denoise.py with the mistakes users make: nothing of theirs is lost, every output
    is written and is an image, and a preparation killed mid-way leaves the old store whole."""
    from PIL import Image
    out = Outcome("data safety")
    base = os.path.join(r.base, "data")
    x = os.path.join(base, "X")
    _photos(os.path.join(x, "clean"), 4)
    with open(os.path.join(x, "clean", "keep_me.png"), "wb") as f:
        f.write(open(os.path.join(x, "clean", "img001.png"), "rb").read())
    before = fsutil.tree_digests(base)
    for args, expect in [(["--src", os.path.join(x, "clean"), "--out", x], ""),
                         (["--src", x, "--out", os.path.join(x, "clean", "store")], ""),
                         (["--src", x, "--out", os.path.join(x, "clean")], "")]:
        out["faults"] += 1
        out.stopped(r.script("prepare_data.py", *args), expect)
    out["files_lost"] += _lost(before, fsutil.tree_digests(base))

    # a store rebuilt and killed mid-way: the old one stays whole and openable
    store_dir, big = os.path.join(base, "store"), os.path.join(base, "many")
    _photos(big, 400, seed=1)
    first = r.script("prepare_data.py", "--src", big, "--out", store_dir, "--size", "16", timeout=600)
    if first.returncode == 0:
        old = fsutil.tree_digests(store_dir)
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, "scripts", "prepare_data.py"), "--src", big,
                                 "--out", store_dir, "--size", "32"], env=r.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 60  # kill once the new store is being written aside
        while proc.poll() is None and time.time() < deadline and not any(
                n.startswith(".store.jaxdenoise-new") for n in os.listdir(base)):
            time.sleep(0.01)
        time.sleep(0.2)
        proc.kill()
        proc.wait()
        out["faults"] += 1
        from jaxdenoise.data import store
        intact = fsutil.tree_digests(store_dir) == old and store.open_split(store_dir, "train").shape[1] == 16
        out["recovered"] += intact
        out["files_lost"] += 0 if intact else 1
        again = r.script("prepare_data.py", "--src", big, "--out", store_dir, "--size", "32", timeout=600)
        out["recovered"] += again.returncode == 0 and store.open_split(store_dir, "train").shape[1] == 32
        leftovers = [n for n in os.listdir(base) if n.startswith(".")]
        if leftovers:
            out["notes"].append(f"left behind after a killed preparation: {leftovers}")

    # denoise.py: same stem in two formats, output folder = input folder, no extension with --keep-format
    trained = os.path.join(r.base, "unbroken")
    photos = os.path.join(base, "photos")
    _photos(photos, 0, names=["photo.jpg", "photo.png"])
    shutil.copy(os.path.join(photos, "photo.png"), os.path.join(photos, "noext"))
    inputs = fsutil.tree_digests(photos)
    for args in (["--output", os.path.join(base, "den")], ["--output", photos],
                 ["--output", photos, "--keep-format", "--overwrite"]):
        want = len(inputs)  # with --output equal to the input folder, earlier outputs are inputs too
        out["faults"] += 1
        res = r.script("denoise.py", "--workdir", trained, "--input", photos, *args)
        now = fsutil.tree_digests(photos)
        out["files_lost"] += _lost(inputs, now)
        written = [p for p in now if p not in inputs]
        ok = res.returncode == 0 and f"wrote {want} image(s)" in res.stdout
        for p in written:
            try:
                Image.open(os.path.join(photos, p)).verify()
            except Exception:
                ok = False
                out["notes"].append(f"denoise output {p} is not an image")
        out["recovered"] += ok
        if not ok:
            out["notes"].append(f"denoise {args}: {res.stdout.strip()[-200:]} {res.stderr.strip()[-200:]}")
        inputs = now if args[1] == photos else inputs
    return out


def output_paths(r: Runner, workers: int = 2) -> Outcome:
    """Every output flag of every script pointed at an input of the command, at a file a training run owns
    (config.json, metrics.jsonl, a checkpoint's INTEGRITY, checkpoints/, tb/) and at an existing file of the
    user's: each is refused in one line, before any work, and nothing changes (--overwrite too, where it
    must still refuse: a file without jaxdenoise's mark). Then what must work: --overwrite replaces a file
    evaluate wrote; evaluate's default grid in the workdir is replaced on every run."""
    from concurrent.futures import ThreadPoolExecutor
    out = Outcome("output paths")
    base = os.path.join(r.base, "outputs")
    run = os.path.join(base, "run")
    shutil.copytree(os.path.join(r.base, "unbroken"), run)
    step = _steps(run)[-1]
    clean, noisy, user = (os.path.join(base, n) for n in ("clean", "noisy", "user"))
    _photos(clean, 2, seed=3, names=["a.png", "b.png"])
    _photos(noisy, 2, seed=4, names=["a.png", "b.png"])
    os.makedirs(os.path.join(user, "gpu_check_store"))
    for name, text in (("notes.json", '{"mine": true}\n'), ("summary.md", "# my notes\n"),
                       ("psnr_per_epoch.png", "not a plot\n"), ("gpu_check_store/keep.txt", "keep me\n")):
        with open(os.path.join(user, name), "w") as f:
            f.write(text)
    shutil.copy(os.path.join(REPO, "configs", "demo.py"), os.path.join(user, "myconfig.py"))
    ev = ["evaluate.py", "--workdir", run, "--data", clean, "--noisy", noisy]
    ck = os.path.join(run, layout.CHECKPOINTS_DIR, str(step))
    refused = [  # (what, script and args, text the error line names)
        ("evaluate --grid at a clean input", ev + ["--grid", os.path.join(clean, "a.png")], "input"),
        ("evaluate --json at a noisy input", ev + ["--json", os.path.join(noisy, "b.png"), "--overwrite"], "input"),
        ("evaluate --grid new file in an input folder", ev + ["--grid", os.path.join(clean, "grid.png")], "input"),
        ("evaluate --json at a user's file", ev + ["--json", os.path.join(user, "notes.json")], "--overwrite"),
        ("evaluate --json --overwrite at a user's file", ev + ["--json", os.path.join(user, "notes.json"),
                                                             "--overwrite"], "did not write it"),
        ("evaluate --json at config.json", ev + ["--json", os.path.join(run, "config.json"), "--overwrite"],
         "training workdir"),
        ("evaluate --grid at a checkpoint's INTEGRITY", ev + ["--grid", os.path.join(ck, "INTEGRITY"), "--overwrite"],
         "checkpoint"),
        ("benchmark --json at its --config", ["benchmark.py", "--config", os.path.join(user, "myconfig.py"), "--json",
                                              os.path.join(user, "myconfig.py"), "--overwrite"], "--config"),
        ("benchmark --json at metrics.jsonl", ["benchmark.py", "--json", os.path.join(run, "metrics.jsonl")],
         "workdir"),
        ("plot --out at a user's folder", ["plot.py", "--workdir", run, "--out", user], "--overwrite"),
        ("plot --out at checkpoints/", ["plot.py", "--workdir", run, "--out", os.path.join(run, layout.CHECKPOINTS_DIR)],
         "workdir"),
        ("faultcheck --json at a user's file", ["faultcheck.py", "--json", os.path.join(user, "notes.json"),
                                                "--kills", "0", "--fuzz", "0", "--only", "sigterm"], "--overwrite"),
        ("denoise --output at checkpoints/", ["denoise.py", "--workdir", run, "--input", clean, "--output",
                                              os.path.join(run, layout.CHECKPOINTS_DIR)], "workdir"),
        ("train --workdir at a user's folder", r.train_args(user)[1:], "not a training workdir"),
        ("train --workdir inside tb/", r.train_args(os.path.join(run, "tb", "x"))[1:], "workdir"),
        ("prepare_data --out at a workdir", ["prepare_data.py", "--src", clean, "--out", run], "not empty"),
        ("gpu_check --out at a user's folder", ["gpu_check.sh", "--dry-run", "--out", user], "not empty"),
    ]
    before = fsutil.tree_digests(base)

    def one(case):
        what, (name, *args), expect = case
        if name == "gpu_check.sh":
            cmd = [os.path.join(REPO, "scripts", name), *args]
            env = dict(r.env, PYTHON=sys.executable)
        else:
            cmd = [sys.executable, os.path.join(REPO, "scripts", name) if not name.startswith("/") else name, *args]
            env = r.env
        return what, expect, subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(one, refused))
    for what, expect, proc in results:
        out["faults"] += 1
        if not out.stopped(proc, expect):
            out["notes"][-1] = f"{what}: {out['notes'][-1]}"
    after = fsutil.tree_digests(base)
    lost = [k for k, v in before.items() if after.get(k) != v]
    new = sorted(set(after) - set(before))
    out["files_lost"] += len(lost)
    if lost or new:
        out["notes"].append(f"refused commands changed files: lost {lost[:5]}, new {new[:5]}")
    # what must still work: evaluate's own JSON replaced with --overwrite (it carries jaxdenoise's mark),
    # and its default grid in the workdir replaced on every run
    mine = os.path.join(base, "ours.json")
    for args in (["--json", mine], ["--json", mine, "--overwrite"]):
        proc = r.script(*ev, "--limit", "1", *args)
        ok = proc.returncode == 0 and os.path.isfile(os.path.join(run, "eval_grid.png"))
        try:
            ok = ok and json.load(open(mine))["rows"][0]["method"] == "noisy input"
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            ok = False
        out["recovered"] += ok
        if not ok:
            out["notes"].append(f"evaluate {' '.join(args)} failed: rc={proc.returncode}: "
                                f"{(proc.stderr.strip().splitlines() or [''])[-1][:200]}")
    return out


# ----------------------------------------------------------------------------------------------------------
# the whole suite
# ----------------------------------------------------------------------------------------------------------
SCENARIOS = ("kills", "sigterm", "damage", "disk_full", "concurrent", "paths", "data", "outputs")


def run(kills_n: int = 5, fuzz_n: int = 200, disk_full_n: int = 1, seed: int = 0, base: Optional[str] = None,
        log: Callable[[str], None] = print, only: Sequence[str] = SCENARIOS, workers: int = 1) -> Dict:
    """Run the scenarios named in ``only`` (all by default) and the reader fuzz (``fuzz_n`` cases); returns
    ``{"scenarios": [Outcome...], "fuzz": {...}, "totals": {...}, "settings": {...}}``.

    workers: scenarios run this many at a time (each in its own folders, with its own random stream seeded
    by (seed, scenario)); their processes mostly start up and wait, so two at a time fill two cores.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tools import fuzz
    own = base is None
    base = base or tempfile.mkdtemp(prefix="jaxdenoise-faultcheck-")
    t_start = time.perf_counter()
    try:
        r = Runner(base, log)
        r.make_reference()
        scenarios = []
        rngs = {name: np.random.default_rng([seed, i]) for i, name in enumerate(SCENARIOS)}
        table = {"kills": lambda: kills(r, kills_n, rngs["kills"]), "sigterm": lambda: sigterm(r),
                 "damage": lambda: checkpoint_damage(r, DAMAGE_KINDS, rngs["damage"]),
                 "disk_full": lambda: disk_full(r, disk_full_n, rngs["disk_full"]), "concurrent": lambda: concurrent(r),
                 "paths": lambda: bad_paths(r), "data": lambda: data_safety(r), "outputs": lambda: output_paths(r)}
        unknown = set(only) - set(table)
        if unknown:
            raise ValueError(f"unknown fault scenario(s) {sorted(unknown)}: choose from {', '.join(SCENARIOS)}")

        def timed(fn):
            t0 = time.perf_counter()
            out = fn()
            out["seconds"] = round(time.perf_counter() - t0, 1)
            return out
        chosen = [name for name in SCENARIOS if name in only]
        # the longest first (checkpoint damage restarts 2 processes per kind), so the others fill the gaps
        order = sorted(chosen, key=lambda n: (n != "damage", n != "kills", chosen.index(n)))
        with ThreadPoolExecutor(max(1, workers)) as pool:
            futures = {name: pool.submit(timed, table[name]) for name in order}
            results = [futures[name].result() for name in chosen]
        for out in results:  # reported in the scenarios' order, whatever order they finished in
            scenarios.append(out)
            log(f"{out['scenario']}: {out['faults']} faults, {out['recovered']} recovered, bitwise "
                f"{out['bitwise']}/{out['bitwise_expected']}, files lost {out['files_lost']}, one-line "
                f"{out['one_line']}, tracebacks {out['tracebacks']} ({out['seconds']} s)")
            for note in out["notes"]:
                log(f"  note: {note}")
        fz = fuzz.fuzz_reader(fuzz_n, seed=seed, out_dir=os.path.join(base, "fuzz-failures")) if fuzz_n else {}
        if fz:
            log(f"reader fuzz: {fz['cases']} cases: {fz['images']} images, {fz['skips']} one-line skips, "
                f"{fz['crashes']} crashes, {fz['hangs']} hangs, {fz['errors']} errors, peak RSS "
                f"{fz['peak_rss_mb']:.0f} MB ({fz['seconds']:.0f} s)")
    finally:
        if own:
            shutil.rmtree(base, ignore_errors=True)
    keys = ("faults", "recovered", "bitwise", "bitwise_expected", "files_lost", "one_line", "tracebacks")
    totals = {k: sum(s[k] for s in scenarios) for k in keys}
    totals["seconds"] = round(time.perf_counter() - t_start, 1)
    return {"scenarios": scenarios, "fuzz": fz, "totals": totals,
            "settings": {"kills": kills_n, "fuzz": fuzz_n, "disk_full": disk_full_n, "seed": seed}}


def format_table(summary: Dict) -> str:
    cols = ("scenario", "faults", "recovered", "bitwise", "files_lost", "one_line", "tracebacks", "seconds")
    rows = [[str(s[c]) if c != "bitwise" else f"{s['bitwise']}/{s['bitwise_expected']}" for c in cols]
            for s in summary["scenarios"]]
    t = summary["totals"]
    rows.append(["total", str(t["faults"]), str(t["recovered"]), f"{t['bitwise']}/{t['bitwise_expected']}",
                 str(t["files_lost"]), str(t["one_line"]), str(t["tracebacks"]), str(t["seconds"])])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    fz = summary.get("fuzz")
    if fz:
        lines.append(f"reader fuzz: {fz['cases']} mutated PNG/JPEG/TIFF/WebP/GIF/BMP files: {fz['images']} decoded, "
                     f"{fz['skips']} one-line skips, {fz['crashes']} crashes, {fz['hangs']} hangs, "
                     f"{fz['errors']} other errors; worker peak RSS {fz['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


def passed(summary: Dict) -> bool:
    """Nothing lost, no traceback, every recovery complete and bitwise where it can be, a clean fuzz."""
    t, fz = summary["totals"], summary.get("fuzz") or {}
    return (t["files_lost"] == 0 and t["tracebacks"] == 0 and t["bitwise"] == t["bitwise_expected"]
            and not any(s["notes"] for s in summary["scenarios"])
            and fz.get("crashes", 0) == 0 and fz.get("hangs", 0) == 0 and fz.get("errors", 0) == 0)
