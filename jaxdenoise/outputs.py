"""Where a command may write the files a user names (``--json``, ``--grid``, ``--out``, plots, summaries).

The promise (README, "What a workdir guarantees"): no command overwrites or deletes a file it did not write.
``claim`` (a file) and ``claim_folder`` (a folder the command fills with files of known names) check a path
*before* the command does any work, and refuse it in one line (``ValueError`` naming the flag and the path)
when it is

1. an input of the command (``inputs``: files, or folders whose every file is an input); never allowed;
2. inside what a training run owns (``protected``): a workdir's config.json, metrics.jsonl, lock, grid,
   TensorBoard events, checkpoints and data cache, any orbax checkpoint folder, a prepared store; never
   allowed, except the files the command itself writes into its own workdir by default (``own``: paths, e.g.
   evaluate's ``WORKDIR/eval_grid.png`` of its ``--workdir``), which it may replace;
3. inside the installed jaxdenoise package (its zoo files and cards): never allowed (``scripts/build_zoo.py``
   writes there itself, not through this module);
4. an existing file, unless the caller passes ``overwrite`` (``--overwrite``) and the file carries
   jaxdenoise's mark (``marks.ours``: a file this project wrote), which is then replaced atomically. A file
   without the mark (a user's own photo, JSON or notes) is never replaced, with or without ``--overwrite``.

The write itself (``Target.write``) is atomic, and a file that did not exist when the path was claimed is
created with ``os.link`` semantics, so one that appears meanwhile is not replaced either.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterable, List, Optional, Sequence

from jaxdenoise import fsutil, layout, marks

# the installed package (its zoo models and cards): no command writes there
PACKAGE = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
# a folder holding one of these is (part of) an orbax checkpoint: nothing is written inside it
_CHECKPOINT_MARKERS = ("_CHECKPOINT_METADATA", "INTEGRITY", "_METADATA", "manifest.ocdbt")


@dataclasses.dataclass(frozen=True)
class Target:
    """A claimed output file: write it with ``write`` (atomic; ``replace``: an existing file may be replaced)."""
    path: str
    flag: str
    replace: bool

    def write(self, data: fsutil.Data) -> str:
        """Write ``data`` (bytes, str, or a callable writing the temporary path it is given); returns the path."""
        created: list = []
        try:
            fsutil.makedirs(os.path.dirname(self.path), created)
            ok = fsutil.atomic_write(self.path, data, overwrite=self.replace)
        except BaseException:
            fsutil.remove_empty(created)  # a failed write leaves no folder it made
            raise
        if not ok:
            raise ValueError(f"{self.flag} {self.path} appeared while this command ran: not replaced (use "
                             f"--overwrite to replace it)")
        return self.path


def _real(path: str | os.PathLike) -> str:
    """The absolute path with every symlink resolved (a link named as an output is judged by its target)."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def protected(path: str | os.PathLike, own: Iterable[str] = ()) -> Optional[str]:
    """Why ``path`` lies in what a training run or a store owns (one phrase), or None.

    own: paths of files in a workdir that the asking command writes there itself (allowed).
    """
    p = _real(path)
    if fsutil.is_within(p, PACKAGE):
        return f"lies inside the installed jaxdenoise package ({PACKAGE})"
    is_own = p in {_real(o) for o in own}
    folder = p
    while True:
        parent = os.path.dirname(folder)
        if folder != p or os.path.isdir(p):
            if layout.is_workdir(folder):
                rel = os.path.relpath(p, folder)
                if rel == ".":
                    return f"is the training workdir {folder}"
                top = rel.split(os.sep)[0]
                if top in layout.RUN_FILES and not is_own:
                    return f"is part of the training workdir {folder} ({top})"
            if layout.is_store(folder):
                return f"lies in the prepared store {folder}"
            if any(os.path.lexists(os.path.join(folder, m)) for m in _CHECKPOINT_MARKERS):
                return f"lies in the checkpoint {folder}"
        if parent == folder:
            return None
        folder = parent


def _input_clash(p: str, inputs: Sequence[tuple]) -> Optional[str]:
    for flag, inp in inputs:
        if not inp:
            continue
        q = _real(inp)
        if p == q:
            return f"is {flag} itself, an input of this command"
        if os.path.isdir(q) and fsutil.is_within(p, q):
            return f"lies inside {flag} {inp}, an input of this command"
    return None


def claim(path: str | os.PathLike, flag: str, *, inputs: Sequence[tuple] = (), overwrite: bool = False,
          own: Iterable[str] = (), writable: bool = True) -> Target:
    """Check that ``path`` may be written (rules in the module docstring); returns its ``Target``.

    inputs: ``(flag, path)`` pairs of what the command reads, e.g. ``[("--data", "photos/")]``.
    writable: also refuse a path whose folder cannot be created or written now (False: leave that to the
    write, for an optional output such as a figure, whose failure is only a warning).
    Raises ValueError, one line: ``--json X <reason>``.
    """
    text = os.fspath(path)
    if not text:
        raise ValueError(f"{flag} needs a file path")
    p = _real(text)
    if os.path.isdir(p):
        raise ValueError(f"{flag} {text} is a folder: name a file")
    why = _input_clash(p, inputs) or protected(p, own)
    if why:
        raise ValueError(f"{flag} {text} {why}: write it elsewhere")
    why = fsutil.creatable(p) if writable and not os.path.lexists(p) else None
    if why:
        raise ValueError(f"{flag} {text}: {why}")
    is_own = p in {_real(o) for o in own}
    fsutil.remove_stale_temps(p)  # a killed earlier run of this command left its temporary file here
    exists = os.path.lexists(p)
    if exists and not is_own and not overwrite:
        raise ValueError(f"{flag} {text} exists: use --overwrite to replace it (only a file jaxdenoise wrote), "
                         f"or name a new file")
    if exists and not is_own and not marks.ours(p):
        raise ValueError(f"{flag} {text} exists and jaxdenoise did not write it (no jaxdenoise mark inside): "
                         f"never replaced, even with --overwrite; name a new file")
    return Target(p, flag, replace=exists)


def claim_folder(folder: str | os.PathLike, flag: str, names: Sequence[str], *, inputs: Sequence[tuple] = (),
                 overwrite: bool = False, own: Iterable[str] = ()) -> List[Target]:
    """``claim`` for each of ``names`` inside ``folder`` (which may not exist yet); the folder itself may
    not be an input, lie inside one, or lie in what a run owns (unless it is a workdir whose files of those
    names are all ``own``)."""
    text = os.fspath(folder)
    p = _real(text)
    if os.path.lexists(p) and not os.path.isdir(p):
        raise ValueError(f"{flag} {text} is a file, not a folder")
    why = _input_clash(p, inputs)
    owned = {_real(o) for o in own}
    if why is None and not (layout.is_workdir(p) and all(os.path.join(p, n) in owned for n in names)):
        why = protected(p)
    if why:
        raise ValueError(f"{flag} {text} {why}: choose another folder")
    return [claim(os.path.join(p, n), f"{flag} {text}:", inputs=inputs, overwrite=overwrite, own=own)
            for n in names]


def own_folder(folder: str | os.PathLike, flag: str, marker: str, *, inputs: Sequence[tuple] = ()) -> str:
    """A folder a command fills and may refill: new, empty, or marked by an earlier run of that command (a
    hidden ``marker`` file inside). Creates it and writes the marker; returns its absolute path. Refuses (one
    line) a file, an input, what a run owns, and a non-empty folder without the marker: its files are not
    ours to replace."""
    text = os.fspath(folder)
    p = _real(text)
    if os.path.lexists(p) and not os.path.isdir(p):
        raise ValueError(f"{flag} {text} is a file, not a folder")
    why = _input_clash(p, inputs) or protected(p)
    if why:
        raise ValueError(f"{flag} {text} {why}: choose another folder")
    if os.path.isdir(p):
        entries = sorted(os.listdir(p))
        if entries and marker not in entries:
            raise ValueError(f"{flag} {text} is not empty and was not written by this command (it holds "
                             f"{entries[0]}): choose a new or empty folder")
    try:
        os.makedirs(p, exist_ok=True)
        fsutil.atomic_write(os.path.join(p, marker), "written by jaxdenoise; its files here may be replaced\n")
    except OSError as e:
        raise ValueError(f"{flag} {text}: {fsutil.describe(e)}") from None
    return p
