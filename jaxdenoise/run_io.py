"""The edges of a training run: its workdir (lock, config.json), its metric log, and its stop signals.

A workdir is used by one training process at a time: ``Workdir`` takes an exclusive ``flock`` on
``WORKDIR/.lock`` before anything is read or written. The operating system releases it when the process
ends, however it ends, so a killed run never leaves a stale lock; a second run gets ``WorkdirBusy``
naming the holder's pid and changes nothing.

``config.json`` is written atomically, and only once the rerun is accepted: fields that define the run
may not change once it has a checkpoint (``config.resume_changes``); the others are recorded.

``metrics.jsonl`` gets one JSON object per line, each line written whole with one ``write`` call; a line
torn by a crash or a full disk is skipped by ``read_rows`` and dropped by ``MetricWriter.resume``, which
also drops rows past the restored step (so no step appears twice after a resume).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

from jaxdenoise import config as config_lib, errors, fsutil

from jaxdenoise.layout import (CHECKPOINTS_DIR, CONFIG_FILE, DATA_DIR, LOCK_FILE, METRICS_FILE, RUN_FILES,  # noqa: F401
                               TB_DIR)


def read_saved_config(path: str | os.PathLike) -> dict:
    """A workdir's config.json as a dict; ValueError (one line) when it is unreadable or not a run's config."""
    saved, problem = _load_config(os.path.join(os.fspath(path), CONFIG_FILE))
    if problem:
        raise ValueError(f"{os.path.join(os.fspath(path), CONFIG_FILE)} {problem}")
    return saved


def _load_config(f: str) -> tuple:
    """(the saved config, None) or (None, what is wrong with it: one phrase)."""
    try:
        with open(f) as fh:
            saved = json.load(fh)
    except (OSError, ValueError) as e:
        return None, f"is unreadable ({fsutil.first_line(e)})"
    if not (isinstance(saved, dict) and isinstance(saved.get("model"), dict) and "name" in saved["model"]
            and "noise" in saved):
        return None, "is not the config of a jaxdenoise run (no model and noise fields)"
    return saved, None


def foreign_entry(path: str | os.PathLike) -> Optional[str]:
    """Why an existing folder cannot become (or stay) a training workdir, or None: it holds a name a run
    writes (config.json, metrics.jsonl, tb/, checkpoints/, ...) that jaxdenoise did not write there."""
    path = os.fspath(path)
    names = set(os.listdir(path)) & RUN_FILES
    if CONFIG_FILE in names:
        _, problem = _load_config(os.path.join(path, CONFIG_FILE))
        if problem and not names & {CHECKPOINTS_DIR, METRICS_FILE}:
            return f"its {CONFIG_FILE} {problem}"
        return None  # ours (a damaged one beside a run's checkpoints: resuming says so, ``check_config``)
    from jaxdenoise.data import store
    for n in sorted(names - {LOCK_FILE}):
        if n == DATA_DIR and store.is_store_folder(os.path.join(path, n)):
            continue  # a data cache prepared by a run that stopped before its config was accepted
        return f"it holds {n} but no {CONFIG_FILE}"
    return None


# ----------------------------------------------------------------------------------------------------------
# The workdir: lock and config
# ----------------------------------------------------------------------------------------------------------
class Workdir:
    """Create (if needed) and lock a run's workdir; ``with Workdir(path) as wd:``.

    Errors, one line each: the path is a file, cannot be created or written (``ValueError``), or another
    process holds the lock (``errors.WorkdirBusy``). If this call created the folder and the run fails
    before its config was accepted, the folder is removed again (no workdir that looks like a run).

    primary: False for processes other than 0 of a multi-process run: they neither create nor lock the
    folder nor write config.json (process 0 does, before they open it).
    """

    def __init__(self, path: str, primary: bool = True):
        if not str(path).strip():
            raise ValueError("--workdir needs a path, got an empty value")
        self.path = os.path.abspath(path)
        self.primary = primary
        self._fd: Optional[int] = None
        self._created = False
        self._had: set = set()  # what the folder held before this run
        self.accepted = False

    def __enter__(self) -> "Workdir":
        if not self.primary:
            if not os.path.isdir(self.path):
                raise ValueError(f"workdir {self.path} is not visible from this process: a multi-process run "
                                 f"needs a workdir on a file system every host shares")
            return self
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"workdir {self.path} is a file, not a folder")
        from jaxdenoise import outputs
        from jaxdenoise.data import store
        inside = outputs.protected(os.path.dirname(self.path))
        if inside:  # e.g. --workdir OTHER_RUN/checkpoints/run
            raise ValueError(f"workdir {self.path}: its folder {inside}: choose a folder outside it")
        if store.is_store(self.path):
            raise ValueError(f"workdir {self.path} is a prepared store (data, not a run): choose another folder")
        if os.path.isdir(self.path):
            try:
                why = foreign_entry(self.path)
            except OSError as e:
                raise ValueError(f"cannot use workdir {self.path}: {fsutil.describe(e)}") from None
            if why:
                raise ValueError(f"workdir {self.path} is not a training workdir: {why}; use a new or empty folder "
                                 f"(or a run's workdir to resume it)")
        try:
            if not os.path.isdir(self.path):
                os.makedirs(self.path)
                self._created = True
            self._had = set(os.listdir(self.path))
            fd = os.open(os.path.join(self.path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ValueError(f"cannot use workdir {self.path}: {fsutil.describe(e)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise errors.WorkdirBusy(f"workdir {self.path} is in use by pid {holder} (a training run); wait for "
                                     f"it to finish or stop it, or use another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.primary and not self.accepted:  # a run that never started leaves nothing behind
            self._take_back()
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def _take_back(self) -> None:
        """Remove what this refused run wrote: its lock file and a data cache it prepared (only when they were
        not there before), and the folder if this run created it and it is now empty."""
        from jaxdenoise.data import store
        data = self.file(DATA_DIR)
        try:
            if DATA_DIR not in self._had and store.is_store_folder(data):
                shutil.rmtree(data)
            if LOCK_FILE not in self._had:
                os.unlink(self.file(LOCK_FILE))
            if self._created:
                os.rmdir(self.path)  # only if empty: whatever else appeared stays
        except OSError:
            pass

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def check_config(self, config, has_checkpoint: bool) -> List[tuple]:
        """Refuse a rerun whose run-defining fields differ from the saved config (``ValueError``, one line,
        listing each change); return the changed fields that may change, ``[(field, saved, new)]``.
        Reads only: ``accept_config`` writes."""
        path = self.file(CONFIG_FILE)
        if not has_checkpoint or not os.path.isfile(path):
            return []
        try:
            saved = read_saved_config(self.path)
        except ValueError as e:
            raise ValueError(f"{e}: move it away to resume with this command's config") from None
        if config.init_from and config.init_from != saved.get("init_from", ""):
            raise ValueError(f"init_from={config.init_from!r} starts a new run, but workdir {self.path} already has "
                             f"checkpoints of its own: rerun without --config.init_from to resume it, or use a new "
                             f"--workdir")
        fixed, mutable = config_lib.resume_changes(saved, config)
        if fixed:
            diff = ", ".join(f"{k} {short(a)} -> {short(b)}" for k, a, b in fixed)
            raise ValueError(
                f"workdir {self.path} holds a run with other settings ({diff}); these define a run and cannot "
                f"change on resume: rerun with the saved values, or start a new --workdir (add "
                f"--config.init_from={self.path} to start it from this run's latest checkpoint)")
        return mutable

    def accept_config(self, config) -> None:
        """Write ``config.json`` (atomically): the run is accepted from here on."""
        if not self.primary:
            self.accepted = True
            return
        fsutil.atomic_write(self.file(CONFIG_FILE), config.to_json(indent=1) + "\n")
        self.accepted = True


def short(v: Any) -> str:
    """A config value as a message shows it: strings quoted, floats as %g, the rest as JSON; cut at 60."""
    text = repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------------------------------------
# metrics.jsonl (+ TensorBoard)
# ----------------------------------------------------------------------------------------------------------
def iter_rows(path: str) -> Iterator[Dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file, skipping lines that do not parse (a line torn by a crash)."""
    with open(path, "rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                yield row


def read_rows(workdir: str, kind: Optional[str] = None) -> List[Dict[str, Any]]:
    """Rows of ``WORKDIR/metrics.jsonl`` (of one ``kind`` if given); FileNotFoundError (one line) when absent."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {METRICS_FILE} in {workdir}: not a training workdir, or no step logged yet")
    return [r for r in iter_rows(path) if kind is None or r.get("kind") == kind]


class MetricWriter:
    """``metrics.jsonl`` + TensorBoard (tensorboardX) in the workdir, continued from ``start_step``.

    Rows after ``start_step`` (written by a run that died after its last checkpoint) and torn lines are
    dropped first, by an atomic rewrite; TensorBoard is told to purge events from ``start_step + 1`` on.
    Every row gets ``wall_s``: the run's wall-clock seconds so far, summed over its sessions (from the last
    kept row's value, plus the time since this writer was made: set-up, compilation and evaluations count),
    the x axis of a learning curve against time (``plot.py --x minutes``).
    """

    def __init__(self, workdir: str, start_step: int = 0, enabled: bool = True):
        self.path = os.path.join(workdir, METRICS_FILE)
        self.enabled = enabled  # False on processes other than 0: one writer per run
        self.tb = None
        self.t0, self.wall0 = time.perf_counter(), 0.0
        if not enabled:
            return
        if os.path.exists(self.path):
            kept = [r for r in iter_rows(self.path) if r.get("step", 0) <= start_step]
            fsutil.atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))
            self.wall0 = max([float(r["wall_s"]) for r in kept if isinstance(r.get("wall_s"), (int, float))],
                             default=0.0)
        try:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=start_step + 1 if start_step else None)
        except ImportError:  # tensorboardX is a dependency; a broken install only loses the TB copy
            pass

    def write(self, row: Dict[str, Any], group: str) -> None:
        if not self.enabled:
            return
        row = {**row, "wall_s": round(self.wall0 + time.perf_counter() - self.t0, 1)}
        line = (json.dumps(row) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.write(fd, line) != len(line):  # one write: a full disk tears at most this last line
                raise OSError(28, "No space left on device", self.path)
        finally:
            os.close(fd)
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch", "kind") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{group}/{k}", v, row["step"])

    def image(self, tag: str, image, step: int) -> None:
        if self.tb is not None:
            self.tb.add_image(tag, image, step, dataformats="HWC")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ----------------------------------------------------------------------------------------------------------
# Signals and a full disk
# ----------------------------------------------------------------------------------------------------------
class StopFlag:
    """SIGTERM / SIGINT (or ``signals``) set a flag that the loop reads after each step; a second Ctrl-C
    aborts at once. ``preempted``: set by the loop when the stop came from JAX's preemption sync point."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signum: Optional[int] = None
        self.preempted = False
        self.signals = tuple(signals)
        self._old = {}

    def __enter__(self):
        for sig in self.signals:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step, then saving a checkpoint...",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# What background threads print once the disk is full: orbax/TensorStore write errors and their echoes
# (an event loop closed under a pending write, a save still in flight while the interpreter shuts down,
# TensorBoard's writer thread reading its closed queue).
_ECHOES = ("event loop is closed", "sys.meta_path is none", "python is likely shutting down", "handle is closed",
           "cannot schedule new futures")


_QUIET = False


def quiet_echoes() -> None:
    """For the rest of the process, drop what orbax's and TensorStore's background threads still report once
    a job has stopped with its one-line error (a pending read posting to an event loop that is closed, a save
    scheduled while the interpreter shuts down): echoes of the error, not news. Other errors pass. Idempotent."""
    global _QUIET
    if _QUIET:
        return
    _QUIET = True

    def echo(exc, text: str = "") -> bool:
        blob = (str(exc) + " " + text).lower()
        return any(e in blob for e in _ECHOES)
    import inspect
    thread_hook, unraisable_hook, except_hook = threading.excepthook, sys.unraisablehook, sys.excepthook
    threading.excepthook = lambda a: None if echo(a.exc_value) else thread_hook(a)
    # a restore that failed leaves orbax's read coroutines behind, each raising the same error when collected
    sys.unraisablehook = lambda a: None if inspect.iscoroutine(a.object) or echo(a.exc_value, str(a.err_msg or "")) \
        else unraisable_hook(a)
    sys.excepthook = lambda kind, value, tb: None if echo(value) else except_hook(kind, value, tb)


class DiskWatch(logging.Filter):
    """While active, a full disk seen anywhere (our writes, orbax's or TensorBoard's background threads)
    sets ``full`` instead of printing tracebacks; the loop checks ``full`` and stops with one line.

    Errors that are not about disk space pass through untouched to the usual hooks and handlers.
    """

    def __init__(self):
        super().__init__()
        self.full = False

    def _swallow(self, exc: Optional[BaseException], text: str = "") -> bool:
        if (exc is not None and fsutil.is_disk_full(exc)) or fsutil.is_disk_full(Exception(text)):
            self.full = True
            return True
        blob = (str(exc) + " " + text).lower()
        # an event loop closed under a pending TensorStore write can be reported before the write's own
        # error: it is an echo of a failed save whatever came first
        return (self.full or "event loop is closed" in blob) and any(e in blob for e in _ECHOES)

    def filter(self, record: logging.LogRecord) -> bool:  # logging.Filter: False drops the record
        exc = record.exc_info[1] if record.exc_info else None
        return not self._swallow(exc, record.getMessage())

    def __enter__(self) -> "DiskWatch":
        self._hooks = (threading.excepthook, sys.unraisablehook, sys.excepthook)

        def thread_hook(args):
            if not self._swallow(args.exc_value):
                self._hooks[0](args)

        def unraisable_hook(args):
            if not self._swallow(args.exc_value, str(args.err_msg or "")):
                self._hooks[1](args)

        def except_hook(kind, value, tb):  # what C++ threads (TensorStore's callbacks) report via PyErr_Print
            if not self._swallow(value):
                self._hooks[2](kind, value, tb)
        threading.excepthook, sys.unraisablehook, sys.excepthook = thread_hook, unraisable_hook, except_hook
        self._loggers = [logging.getLogger(), logging.getLogger("absl"), logging.getLogger("asyncio")]
        for logger in self._loggers:
            logger.addFilter(self)
            for handler in logger.handlers:
                handler.addFilter(self)
        return self

    def __exit__(self, *exc) -> None:
        # the hooks stay filtered for the rest of the process once the disk was full: orbax's threads
        # may still report their failed writes while the interpreter shuts down
        if not self.full:
            threading.excepthook, sys.unraisablehook, sys.excepthook = self._hooks
            for logger in self._loggers:
                logger.removeFilter(self)
                for handler in logger.handlers:
                    handler.removeFilter(self)


def last_validation(workdir: str) -> Optional[Dict[str, Any]]:
    """The run's last validation row of metrics.jsonl (PSNR, SSIM, ... at its eval noise), or None."""
    try:
        rows = read_rows(workdir, "eval")
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        return None
    return rows[-1] if rows else None
