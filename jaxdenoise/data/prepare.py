"""Prepare a folder of photos of any size and format into a store (see ``store.py``).

The paper resizes every image to 128x128 with Wand and keeps the clean set in its own directory; this does
that for folders of tens of thousands of files, with all cores, and never stops on a bad file: each one is
listed in ``manifest["skipped"]`` with its reason. SRC is only ever read, and OUT is only ever replaced
when it is empty or a store of ours (``store.StoreWriter``: built aside, swapped in when complete).

Real noisy/clean pairs (``pairs=True``): SRC holds ``clean/`` and ``noisy/``, a noisy shot and its clean
reference sharing a relative path without the extension (formats may differ). Each pair is kept at its own
size as one 6-channel image (clean RGB, then noisy RGB: ``store``), so a patch, flip or rotation cuts both at
the same place; a file without its partner, a pair of different sizes or an unreadable half is skipped with
its reason, like a bad file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing as mp
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from jaxdenoise import fsutil
from jaxdenoise.data import imageio, store


def is_val(relpath: str, seed: int, val_fraction: float) -> bool:
    """Deterministic split from a seeded hash of the relative path.

    Depends on nothing but (seed, path), so adding or removing other files never moves an image between
    the splits.
    """
    digest = hashlib.sha256(f"{seed}/{relpath}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


def list_files(src: str) -> List[str]:
    """Relative paths (POSIX separators) of every non-hidden file under src, sorted."""
    out = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith("."):
                out.append(os.path.relpath(os.path.join(root, name), src).replace(os.sep, "/"))
    return sorted(out)


def _work(args: Tuple[str, str, int, str, int]):
    """Worker: one file -> (relpath, uint8 image, png bytes, None) or (relpath, None, None, reason)."""
    src, rel, size, mode, max_side = args
    try:
        if mode == "full":
            arr = imageio.load_rgb(os.path.join(src, rel), max_side or None, "full")
            if min(arr.shape[:2]) < size:
                return rel, None, None, (f"smaller than {size} px on its short side ({arr.shape[0]}x"
                                         f"{arr.shape[1]} after the {max_side} px cap)")
        else:
            arr = imageio.load_rgb(os.path.join(src, rel), size, mode)
    except imageio.ImageReadError as e:
        return rel, None, None, str(e)
    except Exception as e:  # a bad file never stops the run; the reason names the surprise
        return rel, None, None, f"{type(e).__name__}: {fsutil.first_line(e)}"
    return rel, arr, store.png_bytes(arr), None


PAIR_DIRS = ("clean", "noisy")


def _work_pair(args: Tuple[str, str, str, int, str, int]):
    """Worker: one pair -> (clean relpath, uint8 [H, W, 6] clean ++ noisy, png of the clean, None) or a reason."""
    src, rel, nrel, size, _mode, max_side = args
    halves = []
    for folder, r in (("clean", rel), ("noisy", nrel)):
        try:
            halves.append(imageio.load_rgb(os.path.join(src, folder, r), None, "full"))
        except imageio.ImageReadError as e:
            return rel, None, None, f"{folder}/{r}: {e}"
        except Exception as e:
            return rel, None, None, f"{folder}/{r}: {type(e).__name__}: {fsutil.first_line(e)}"
    clean, noisy = halves
    why = imageio.pair_mismatch(clean, noisy)
    if why:
        return rel, None, None, f"with noisy/{nrel}: {why}"
    h, w = clean.shape[:2]
    if max_side and max(h, w) > max_side:  # both shrunk alike (which also averages the noise down: see README)
        scale = max_side / max(h, w)
        hh, ww = max(1, round(h * scale)), max(1, round(w * scale))
        clean, noisy = imageio.resize_array(clean, hh, ww), imageio.resize_array(noisy, hh, ww)
    if min(clean.shape[:2]) < size:
        return rel, None, None, f"smaller than {size} px on its short side ({clean.shape[0]}x{clean.shape[1]})"
    arr = np.concatenate([clean, noisy], axis=-1)
    return rel, arr, store.png_bytes(clean), None


def match_pairs(src: str, src_flag: str = "--src") -> Tuple[List[Tuple[str, str]], List[Dict]]:
    """([(clean relpath, noisy relpath)], skipped) for a pairs folder ``src`` (``clean/`` and ``noisy/``),
    matched by relative path without the extension; a name with no partner, or one that two files of a side
    share, is skipped with its reason. Raises ValueError (one line) when either folder is missing."""
    for folder in PAIR_DIRS:
        if not os.path.isdir(os.path.join(src, folder)):
            raise ValueError(f"{src_flag} {src}: a folder of real pairs holds clean/ and noisy/ (matched by file name); "
                             f"it has no {folder}/")
    stem = lambda rel: os.path.splitext(rel)[0]
    sides, skipped = {}, []
    for folder in PAIR_DIRS:
        by = {}
        for rel in list_files(os.path.join(src, folder)):
            by.setdefault(stem(rel), []).append(rel)
        for name, rels in list(by.items()):
            if len(rels) > 1:  # which one is the partner cannot be told
                skipped += [{"path": f"{folder}/{r}", "reason": f"{len(rels)} files in {folder}/ share the name "
                             f"{name!r}: pairs are matched by name without the extension"} for r in rels]
                del by[name]
        sides[folder] = by
    pairs = []
    for name in sorted(set(sides["clean"]) | set(sides["noisy"])):
        c, n = sides["clean"].get(name), sides["noisy"].get(name)
        if c and n:
            pairs.append((c[0], n[0]))
        elif c:
            skipped.append({"path": f"clean/{c[0]}", "reason": "no noisy shot of the same name in noisy/"})
        else:
            skipped.append({"path": f"noisy/{n[0]}", "reason": "no clean reference of the same name in clean/"})
    return pairs, skipped


@dataclasses.dataclass(frozen=True)
class Preparation:
    """How ``prepare_folder`` turns a folder into a store (``scripts/prepare_data.py``'s flags).

    size: the side of a resized image, or the shortest side kept at full size; val_fraction, seed: the split
    (a hash of each file's path); mode: "resize", "center_crop" or "full" (each image at its own size, a
    full-size store for patch training: a longer side above ``max_side``, 0 = no cap, is shrunk to it, aspect
    kept; images shorter than ``size`` on their short side are skipped with that reason). pairs: the folder
    holds real pairs (module docstring): a full-size store of 6-channel images (mode "full"); the split hashes
    the clean file's path. workers: processes (None: every core); progress: a bar on stderr; cache: the
    store is one training makes for itself (``ensure_prepared`` rebuilding it); src_flag: how the user named
    the folder in error messages (training: ``--config.data.dir``)."""
    size: int = 128
    val_fraction: float = 0.2
    seed: int = 0
    mode: str = "resize"
    max_side: int = 0
    pairs: bool = False
    workers: Optional[int] = None
    progress: bool = True
    cache: bool = False
    src_flag: str = "--src"


def prepare_folder(src: str, out: str, **options) -> Dict:
    """Read every image under ``src`` through Wand, resize (``Preparation(**options)``), split, and write a
    store to ``out``.

    Returns the manifest. Raises ValueError (one line) for bad options, for an ``out`` that overlaps ``src``
    and for one that is not an empty folder or a store of ours (``store.check_replaceable``), and for a store
    that training keeps for itself (a built-in store, a data cache: ``"cache": true`` in its manifest) unless
    ``cache``; bad files are skipped, not raised; an unknown option is a TypeError naming it.
    """
    p = Preparation(**options)
    src_abs, out_abs = _check_preparation(p, src, out)
    skipped = []
    if p.pairs:
        matched, skipped = match_pairs(src_abs, p.src_flag)
        files = [c for c, _ in matched]
        tasks = [(src_abs, c, n, p.size, p.mode, p.max_side) for c, n in matched]
        if not files:
            raise ValueError(f"{p.src_flag} {src}: no file in noisy/ has a clean reference of the same name in clean/")
    else:
        files = list_files(src_abs)
        tasks = [(src_abs, f, p.size, p.mode, p.max_side) for f in files]
    if not files:
        raise ValueError(f"no files under {src}")
    val_set = {f for f in files if is_val(f, p.seed, p.val_fraction)}
    unpaired = len(skipped)
    workers = p.workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    with store.StoreWriter(out_abs, p.size, {"train": len(files) - len(val_set), "val": len(val_set)},
                           ragged=p.mode == "full", channels=6 if p.pairs else 3) as writer:
        bar = _progress(len(files), "preparing", p.progress)
        # spawn, not fork: the caller may have JAX's threads running
        with mp.get_context("spawn").Pool(workers) as pool:
            for rel, arr, png, reason in pool.imap(_work_pair if p.pairs else _work, tasks, chunksize=8):
                if reason is None:
                    writer.add("val" if rel in val_set else "train", arr, rel, png)
                else:
                    skipped.append({"path": rel, "reason": reason})
                bar.update(1)
        bar.close()
        if len(skipped) - unpaired == len(files):  # an empty store would only fail later, in training
            first = skipped[unpaired]
            raise ValueError(f"{p.src_flag} {src}: none of its {len(files)} files could be kept (the first, "
                             f"{first['path']}: {first['reason']})")
        extra = {"max_side": p.max_side} if p.mode == "full" else {}
        extra.update({"cache": True} if p.cache else {})
        manifest = writer.close(seed=p.seed, val_fraction=p.val_fraction, mode=p.mode, source=src_abs, **extra,
                                split_rule="sha256(f'{seed}/{relpath}') < val_fraction", skipped=skipped)
    dt = time.perf_counter() - t0
    done = manifest["train_count"] + manifest["val_count"]
    print(f"prepared {done} {'pairs' if p.pairs else 'images'} ({manifest['train_count']} train / "
          f"{manifest['val_count']} val) "
          + (f"at full size (short side >= {p.size}, long side <= {p.max_side or 'any'})" if p.mode == "full"
             else f"at {p.size}x{p.size}") + f" in {dt:.1f} s ({done / max(dt, 1e-9):.0f} img/s, {workers} "
          f"processes); skipped {len(skipped)}" + (f" (see {out}/manifest.json)" if skipped else ""), file=sys.stderr)
    return manifest


def _check_preparation(p: Preparation, src: str, out: str) -> Tuple[str, str]:
    """(real path of ``src``, of ``out``), or a one-line ValueError before any file is read."""
    from jaxdenoise import outputs
    if not 0.0 <= p.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {p.val_fraction}")
    if not imageio.MIN_SIDE <= p.size <= imageio.MAX_SIZE:
        raise ValueError(f"--size must be in [{imageio.MIN_SIDE}, {imageio.MAX_SIZE}], got {p.size}")
    if p.mode not in ("resize", "center_crop", "full"):
        raise ValueError(f"unknown resize mode {p.mode!r}: use 'resize', 'center_crop' or 'full'")
    if p.mode == "full" and p.max_side and p.max_side < p.size:
        raise ValueError(f"--max-side {p.max_side} is smaller than --size {p.size}")
    if p.pairs and p.mode != "full":
        raise ValueError(f"real pairs are kept at their own size (resizing would blur the noise): use mode 'full', "
                         f"got {p.mode!r}")
    if p.workers is not None and p.workers < 1:
        raise ValueError(f"--workers must be >= 1 (0 on the command line: every core), got {p.workers}")
    if not str(src).strip() or not str(out).strip():
        raise ValueError(f"{p.src_flag} and --out need a path, got an empty value")
    src_abs, out_abs = os.path.realpath(src), os.path.realpath(out)
    if not os.path.isdir(src_abs):
        raise ValueError(f"{p.src_flag} {src} " + ("is a file, not a folder" if os.path.exists(src_abs)
                                                   else "does not exist"))
    inside = outputs.protected(os.path.dirname(out_abs))
    if inside:  # e.g. --out RUN/checkpoints/store, or a store inside a store
        raise ValueError(f"--out {out}: its folder {inside}: choose a folder outside it")
    if fsutil.is_within(out_abs, src_abs):
        raise ValueError(f"--out {out} lies inside {p.src_flag} {src}: choose a folder outside the source")
    if fsutil.is_within(src_abs, out_abs):
        raise ValueError(f"--out {out} contains {p.src_flag} {src}: choose a folder outside the source")
    store.check_replaceable(out_abs)  # now, not after listing a large source (the writer checks again)
    if store.is_store(out_abs) and not p.cache:
        m = store.read_manifest(out_abs)
        if m.get("cache") or m.get("source") == "builtin":  # a run reads it: replacing it would change its data
            raise ValueError(f"--out {out} is a data cache that training made for itself (from {m.get('source')}): "
                             f"choose another folder")
    return src_abs, out_abs


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


def ensure_prepared(src: str, cache: str, size: int, val_fraction: float, seed: int,
                    mode: str = "resize", max_side: int = 0, pairs: bool = False) -> str:
    """A prepared store for ``src``: ``src`` itself when it already is one, else ``cache`` (made on first use).

    The cache is reused only when its manifest matches the requested size, split and source; a crash
    while it was being replaced is repaired first (``store.recover``).
    """
    if store.is_store(src):
        m = store.read_manifest(src)
        if m.get("size") != size:
            raise ValueError(f"prepared store {src} holds {m.get('size')}px images but the config asks for {size}px")
        if (m.get("layout") == "ragged") != (mode == "full"):
            kind = "full-size" if m.get("layout") == "ragged" else f"{m.get('size')}px"
            raise ValueError(f"prepared store {src} holds {kind} images but the config asks for data.resize_mode={mode!r}")
        if bool(m.get("pairs")) != pairs:
            raise ValueError(f"prepared store {src} holds " + ("real noisy/clean pairs but data.pairs is off" if m.get("pairs")
                             else "clean images but data.pairs asks for real noisy/clean pairs"))
        return src
    store.recover(cache)
    if store.is_store(cache):
        m = store.read_manifest(cache)
        want = {"size": size, "val_fraction": val_fraction, "seed": seed, "mode": mode,
                "source": os.path.realpath(src), **({"max_side": max_side} if mode == "full" else {}),
                "pairs": pairs or None}
        if all(m.get(k) == v for k, v in want.items()):
            return cache
    prepare_folder(src, cache, size=size, val_fraction=val_fraction, seed=seed, mode=mode, max_side=max_side,
                   cache=True, pairs=pairs, src_flag="--config.data.dir")
    return cache

