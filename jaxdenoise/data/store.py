"""The prepared store: what a preparation writes, what the loader reads, and how one replaces another safely.

Layout of a store directory::

    manifest.json          counts, size, seed, split rule, file lists, skipped files with reasons
    train.npy, val.npy     uint8 [N, size, size, C], memory-mappable (np.load(..., mmap_mode="r"));
                           C = 3, or 6 in a store of real noisy/clean pairs (manifest "channels": 6,
                           "pairs": true): the clean image's RGB then the noisy shot's, so every crop,
                           flip and rotation applies to both at once
                           or, in a full-size store (manifest "layout": "ragged"), every image's pixels
                           one after another, uint8 [total bytes], with
    train_index.npy, ...   int64 [N, 3]: (byte offset, height, width) of each image (full-size stores only)
    clean/train/*.png      the same images as PNG, for people to look at (the paper's "clear images"; of a
                           pairs store, the clean references)
    clean/val/*.png

Everything is written deterministically (no time stamps, fixed PNG settings), so the same input gives
byte-identical files. The store's marker is ``manifest["store"] == "jaxdenoise"``; stores written before the
marker existed are recognised by ``format_version`` and ``train_files``. (The marker lives in the manifest,
not in a file of its own, so a store holds exactly the files listed above.)

Nothing but a store (or an empty folder) is ever replaced, and never one holding a file jaxdenoise did not
write. A store is built aside, in the hidden sibling ``.NAME.jaxdenoise-new.HOST.PID``, marked as ours by
``.jaxdenoise-writing`` (written before anything else), and published by ``close``:

    1. rename NAME -> .NAME.jaxdenoise-old.HOST.PID       (when NAME exists)
    2. rename .NAME.jaxdenoise-new.HOST.PID -> NAME
    3. rename the old store to .NAME.jaxdenoise-trash-old.HOST.PID and delete it

so a crash at any point leaves a whole store under NAME or under the "old" name. ``recover``, run before every
write, repairs what a crash left, touching only siblings of ours whose writer process is gone: an "old" store
goes back to NAME when NAME is missing (a crash between 1 and 2), else to the trash, like a marked "new" one;
the trash is deleted.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
from typing import Any, Dict, List, Optional

import numpy as np

from jaxdenoise import fsutil, layout

MANIFEST = layout.STORE_MANIFEST
SPLITS = ("train", "val")
FORMAT_VERSION = 1
MARK = layout.STORE_MARK  # manifest["store"]
WRITING = ".jaxdenoise-writing"  # first file of a store being built aside: {"host", "pid"} of its writer
_ASIDE = re.compile(r"(new|old|trash-new|trash-old)\.(.+)\.(\d+)")  # after the ".NAME.jaxdenoise-" prefix
_PNG = re.compile(r"\d{6,}\.png")
_HOST = socket.gethostname()
_building: set = set()  # aside folders this process is writing now (a reused PID is not a live writer)


class StoreError(ValueError):
    """A missing, incomplete, unusable or irreplaceable prepared store; the message is one line."""


is_store = layout.is_store  # one home: layout (outputs reads it without importing this module)


def read_manifest(path: str | os.PathLike) -> Dict[str, Any]:
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise StoreError(f"prepared store not found: {path} does not exist")
    if not os.path.isfile(mpath):
        raise StoreError(f"not a prepared store: {path} has no {MANIFEST} (run scripts/prepare_data.py)")
    try:
        with open(mpath) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(f"unreadable manifest {mpath}: {e}") from e


class RaggedImages:
    """The images of a full-size store's split, each at its own size (read-only, memory-mapped).

    ``len``/``shape[0]``: N; ``sizes``: ``int64 [N, 2]`` (h, w); ``images[i]``: ``uint8 [h_i, w_i, C]``
    (``channels``: 3, or 6 for a pairs store);
    ``crop(i, y, x, side)``: a ``[side, side, 3]`` window; ``center_crops(side)``: the fixed-size view that
    training-time validation batches (``[N, side, side, 3]`` indexing, like a fixed-size split).
    """

    def __init__(self, flat: np.ndarray, index: np.ndarray, channels: int = 3):
        self.flat, self.index, self.channels = flat, index, channels
        self.sizes = index[:, 1:3]
        self.shape = (int(index.shape[0]), None, None, channels)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        off, h, w = (int(v) for v in self.index[int(i)])
        c = self.channels
        return self.flat[off:off + h * w * c].reshape(h, w, c)

    def crop(self, i: int, y: int, x: int, side: int) -> np.ndarray:
        return self[i][y:y + side, x:x + side]

    def center_crops(self, side: int) -> "CenterCrops":
        return CenterCrops(self, side)


class CenterCrops:
    """``uint8 [N, side, side, 3]`` view of a ``RaggedImages``: each image's central square (fancy indexing)."""

    def __init__(self, images: RaggedImages, side: int):
        self.images, self.side = images, side
        self.shape = (len(images), side, side, images.channels)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, (int, np.integer)):
            h, w = self.images.sizes[int(idx)]
            return self.images.crop(int(idx), (h - self.side) // 2, (w - self.side) // 2, self.side)
        ids = np.arange(len(self))[idx]
        return np.stack([self[int(i)] for i in ids]) if len(ids) else np.zeros((0,) + self.shape[1:], np.uint8)


class _Parts:
    """Where image ``i`` of a concatenation lives: (part, index in it)."""

    def __init__(self, parts):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def locate(self, i: int):
        i = int(i)
        if not 0 <= i < self.starts[-1]:
            raise IndexError(f"image {i} of {self.starts[-1]}")
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[k], i - int(self.starts[k])


class ConcatImages:
    """Fixed-size splits of several stores as one ``uint8 [N, H, W, 3]`` (read lazily, part by part): the
    images of store 0, then those of store 1, ... Indexing: an int, a slice or an integer array."""

    def __init__(self, parts):
        self._p = _Parts(parts)
        self.shape = (int(self._p.starts[-1]),) + tuple(parts[0].shape[1:])
        self.dtype = np.uint8

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, (int, np.integer)):
            part, j = self._p.locate(idx)
            return np.asarray(part[j])
        ids = np.arange(len(self))[idx]
        out = np.empty((len(ids),) + self.shape[1:], np.uint8)
        for n, i in enumerate(ids):
            out[n] = self[int(i)]
        return out

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate([np.asarray(p) for p in self._p.parts])
        return out if dtype is None else out.astype(dtype)


class ConcatRagged(RaggedImages):
    """Full-size splits of several stores as one ``RaggedImages`` (the same interface, read part by part)."""

    def __init__(self, parts):
        self._p = _Parts(parts)
        self.sizes = np.concatenate([p.sizes for p in parts])
        self.channels = parts[0].channels
        self.shape = (int(self._p.starts[-1]), None, None, self.channels)

    def __getitem__(self, i: int) -> np.ndarray:
        part, j = self._p.locate(i)
        return part[j]


def open_splits(paths, split: str):
    """``open_split`` of one store, or the concatenation (store order) of the same split of several stores:
    all fixed-size at one size (``ConcatImages``) or all full-size (``ConcatRagged``). ``split="all"``: every
    image of every store, each store's train split then its val split (a folder used whole: ``data.val_dir``,
    or the training folders when the validation images come from there)."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    splits = SPLITS if split == "all" else (split,)
    wanted = [(p, s) for p in paths for s in splits]
    if len(wanted) > 1:  # a small folder may have no validation images: the joined split must have some
        kept = [(p, s) for p, s in wanted if read_manifest(p).get(f"{s}_count") != 0]
        if not kept:
            raise StoreError(f"the {split} split of every store ({', '.join(map(str, paths))}) is empty")
        wanted = kept
    parts = [open_split(p, s) for p, s in wanted]
    names = [str(p) for p, _ in wanted]
    if len(parts) == 1:
        return parts[0]
    if len({p.shape[-1] for p in parts}) > 1:
        kinds = ", ".join(dict.fromkeys(f"{q}: " + ("noisy/clean pairs" if p.shape[-1] == 6 else "clean images")
                                        for q, p in zip(names, parts)))
        raise StoreError(f"the stores to train on together mix clean images and real noisy/clean pairs ({kinds}): "
                         f"train on one kind")
    ragged = [isinstance(p, RaggedImages) for p in parts]
    if all(ragged):
        return ConcatRagged(parts)
    if any(ragged) or len({tuple(p.shape[1:]) for p in parts}) > 1:
        shapes = ", ".join(dict.fromkeys(f"{q}: " + ("full size" if r else "x".join(map(str, p.shape[1:3])))
                                         for q, p, r in zip(names, parts, ragged)))
        raise StoreError(f"the stores to train on together differ in image size ({shapes}): prepare them with the "
                         f"same data.size and data.resize_mode")
    return ConcatImages(parts)


def is_store_folder(path: str | os.PathLike) -> bool:
    """A store, or a folder holding only stores (a workdir's data cache for several data folders)."""
    if is_store(path):
        return True
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return bool(names) and all(is_store(os.path.join(path, n)) for n in names)


def open_split(path: str | os.PathLike, split: str):
    """The split's images as a read-only memmap, ``uint8 [N, size, size, C]`` (a ``RaggedImages`` for a
    full-size store; C = ``channels(manifest)``); never empty."""
    if split not in SPLITS:
        raise StoreError(f"unknown split {split!r}: use one of {SPLITS}")
    manifest = read_manifest(path)
    npy = os.path.join(path, f"{split}.npy")
    if not os.path.isfile(npy):
        raise StoreError(f"prepared store {path} lacks {split}.npy (incomplete preparation?)")
    try:
        arr = np.load(npy, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise StoreError(f"unreadable {npy}: {e}") from e
    if manifest.get("layout") == "ragged":
        return _open_ragged(path, split, manifest, arr)
    c = channels(manifest)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != c:
        raise StoreError(f"{npy} holds {arr.dtype} {arr.shape}, expected uint8 [N, H, W, {c}]")
    if arr.shape[0] != manifest.get(f"{split}_count"):
        raise StoreError(f"{npy} holds {arr.shape[0]} images but the manifest says {manifest.get(f'{split}_count')}")
    if arr.shape[0] == 0:
        raise StoreError(f"the {split} split of {path} is empty")
    return arr


def _open_ragged(path, split: str, manifest, flat: np.ndarray) -> RaggedImages:
    ipath = os.path.join(path, f"{split}_index.npy")
    try:
        index = np.load(ipath)
    except (ValueError, OSError) as e:
        raise StoreError(f"unreadable {ipath}: {fsutil.first_line(e)}") from e
    if flat.dtype != np.uint8 or flat.ndim != 1 or index.ndim != 2 or index.shape[1] != 3:
        raise StoreError(f"{path}: {split}.npy / {split}_index.npy are not a full-size store's layout")
    if index.shape[0] != manifest.get(f"{split}_count"):
        raise StoreError(f"{ipath} lists {index.shape[0]} images but the manifest says {manifest.get(f'{split}_count')}")
    if index.shape[0] == 0:
        raise StoreError(f"the {split} split of {path} is empty")
    c = channels(manifest)
    ends = index[:, 0] + index[:, 1] * index[:, 2] * c
    if index.min() < 0 or int(ends.max()) > flat.shape[0]:
        raise StoreError(f"{ipath} points past the end of {split}.npy (a damaged store: prepare it again)")
    return RaggedImages(flat, index, c)


def channels(manifest: Dict[str, Any]) -> int:
    """Channels per stored pixel: 3 (RGB), or 6 in a store of real pairs (clean RGB, then noisy RGB)."""
    c = manifest.get("channels", 3)
    if c not in (3, 6):
        raise StoreError(f"the manifest says {c} channels per pixel: a store holds 3 (images) or 6 (pairs)")
    return c


def png_bytes(arr: np.ndarray) -> bytes:
    """Deterministic PNG encoding of ``uint8 [H, W, 3]`` (no time stamps, fixed compression)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _npy_header(shape) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": tuple(shape)})
    return buf.getvalue()


def foreign_file(path: str | os.PathLike) -> Optional[str]:
    """Relative path of one entry under a store folder that jaxdenoise did not write, or None.

    Ours: manifest.json, train.npy, val.npy, {train,val}_index.npy, clean/{train,val}/NNNNNN.png. Links are
    never ours.
    """
    path = os.fspath(path)
    ours = {MANIFEST: False, "train.npy": False, "val.npy": False, "train_index.npy": False,
            "val_index.npy": False, "clean": True}  # name -> is a folder
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_symlink() or ours.get(entry.name) != entry.is_dir():
            return entry.name
    clean = os.path.join(path, "clean")
    if not os.path.isdir(clean):
        return None
    for split in sorted(os.scandir(clean), key=lambda e: e.name):
        if split.name not in SPLITS or split.is_symlink() or not split.is_dir():
            return f"clean/{split.name}"
        for png in sorted(os.scandir(split.path), key=lambda e: e.name):
            if not _PNG.fullmatch(png.name) or png.is_symlink() or not png.is_file():
                return f"clean/{split.name}/{png.name}"
    return None


def check_replaceable(out: str | os.PathLike) -> None:
    """Raise StoreError (one line) unless ``out`` is missing, an empty folder, or a store of ours alone."""
    out = os.fspath(out)
    if not os.path.lexists(out):
        return
    if not os.path.isdir(out):
        raise StoreError(f"{out} is a file, not a folder: choose a folder for the store")
    try:
        entries = sorted(os.listdir(out))
        if not entries:
            return
        if not is_store(out):
            raise StoreError(f"{out} is not empty and is not a jaxdenoise store (it holds {entries[0]}): "
                             f"choose a new or empty folder")
        stranger = foreign_file(out)
    except OSError as e:
        raise StoreError(f"cannot inspect {out}: {fsutil.describe(e)}") from e
    if stranger is not None:
        raise StoreError(f"{out} is a store but holds {stranger}, which jaxdenoise did not write: "
                         f"move it away or choose another folder")


def _aside(out: str, kind: str) -> str:
    parent, name = os.path.split(out)
    return os.path.join(parent, f".{name}.jaxdenoise-{kind}.{_HOST}.{os.getpid()}")


def _writer_gone(host: str, pid: int, path: str) -> bool:
    """True when the process that named ``path`` after itself (host, pid) no longer runs."""
    if host != _HOST:  # another machine sharing the folder: its processes are out of sight
        return False
    if pid == os.getpid():
        return path not in _building
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _discard(path: str) -> None:
    """Delete a folder of ours: first renamed to the trash, so a crash mid-delete leaves a name we know."""
    parent, name = os.path.split(path)
    trash = os.path.join(parent, re.sub(r"\.jaxdenoise-(new|old)\.", r".jaxdenoise-trash-\1.", name, count=1))
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def recover(out: str | os.PathLike) -> None:
    """Repair what a crashed preparation of ``out`` left beside it (see the module docstring)."""
    out = os.path.realpath(out)
    parent, name = os.path.split(out)
    prefix = f".{name}.jaxdenoise-"
    try:
        names = sorted(n for n in os.listdir(parent) if n.startswith(prefix))
    except OSError:  # no parent yet, or unreadable: then nothing of ours is there either
        return
    for aside in names:
        m = _ASIDE.fullmatch(aside[len(prefix):])
        path = os.path.join(parent, aside)
        if m is None or not _writer_gone(m.group(2), int(m.group(3)), path):
            continue
        kind = m.group(1)
        if kind == "old" and is_store(path):
            if not os.path.lexists(out):
                os.rename(path, out)  # the crash fell between the two renames of a swap
            else:
                _discard(path)
        elif kind == "new" and (os.path.isfile(os.path.join(path, WRITING)) or is_store(path)):
            _discard(path)
        elif kind.startswith("trash"):
            shutil.rmtree(path, ignore_errors=True)


def _make_parent(out: str) -> None:
    """Create the folders above ``out``; a file in the way is a one-line StoreError naming it."""
    above = os.path.dirname(out)
    ancestor = above
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise StoreError(f"cannot create the store {out}: {ancestor} is a file, not a folder")
    try:
        os.makedirs(above, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the store {out}: {fsutil.describe(e, above)}") from e


class StoreWriter:
    """Writes a store incrementally: images arrive one by one, counts are known only at the end.

    The store is built aside and published by ``close`` (see the module docstring); until then ``out`` is
    untouched. ``replace=False`` publishes only where no store exists yet (a concurrent writer that published
    first wins, and this one's work is discarded). Use as a context manager: an exception discards the work.

    Each split's ``.npy`` is allocated for an upper bound of images, filled in order, and at ``close`` its
    header is rewritten for the real count and the file truncated, so nothing is copied twice.
    ``ragged``: a full-size store (images of any size, at least ``size`` on their short side): pixels are
    appended to the split's file and indexed in ``{split}_index.npy``.
    ``channels=6``: a store of real pairs (``[.., 6]`` images: clean RGB then noisy RGB; the PNG copies are
    of the clean half).
    ``pngs=False`` leaves out the PNG copies under ``clean/`` (they are for people to look at; a synthetic
    store of tens of thousands of crops would spend most of its time encoding them).
    Raises StoreError (one line) when ``out`` may not be replaced or cannot be written.
    """

    def __init__(self, out: str | os.PathLike, size: int, capacity: Dict[str, int], replace: bool = True,
                 ragged: bool = False, pngs: bool = True, channels: int = 3):
        self.out = os.path.realpath(out)
        self.channels = channels
        self.size = size
        self.replace = replace
        self.ragged = ragged
        self.pngs = pngs
        self._index: Dict[str, List] = {s: [] for s in SPLITS}
        self._raw: Dict[str, Any] = {}
        recover(self.out)
        check_replaceable(self.out)
        _make_parent(self.out)
        self.tmp = _aside(self.out, "new")
        self.files: Dict[str, List[str]] = {s: [] for s in SPLITS}
        self._arrays = {}
        try:
            os.mkdir(self.tmp)
            _building.add(self.tmp)
            fsutil.atomic_write(os.path.join(self.tmp, WRITING), json.dumps({"host": _HOST, "pid": os.getpid()}))
            for split in SPLITS:
                os.makedirs(os.path.join(self.tmp, "clean", split))
                if ragged:
                    self._raw[split] = open(os.path.join(self.tmp, f"{split}.npy.partial"), "wb")
                    continue
                shape = (max(1, capacity.get(split, 0)), size, size, channels)  # memmap cannot be empty
                self._arrays[split] = np.lib.format.open_memmap(
                    os.path.join(self.tmp, f"{split}.npy.partial"), mode="w+", dtype=np.uint8, shape=shape)
        except OSError as e:
            self.abort()
            where = os.path.dirname(self.out)
            raise StoreError(f"cannot write the store {self.out}: {fsutil.describe(e, where)}") from e

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, split: str, image: np.ndarray, source: str, png: bytes | None = None) -> None:
        """Append ``uint8 [size, size, C]`` (any size in a ragged store) to a split; ``source`` is recorded in
        the manifest."""
        i = len(self.files[split])
        if self.ragged:
            f = self._raw[split]
            self._index[split].append((f.tell(), image.shape[0], image.shape[1]))
            f.write(np.ascontiguousarray(image, np.uint8).tobytes())
        else:
            self._arrays[split][i] = image
        if self.pngs:
            with open(os.path.join(self.tmp, "clean", split, f"{i:06d}.png"), "wb") as f:
                f.write(png if png is not None else png_bytes(image[..., :3]))
        self.files[split].append(source)

    def close(self, **manifest_fields: Any) -> Dict[str, Any]:
        """Complete the store aside, publish it under ``out`` and return its manifest."""
        for split in SPLITS:
            if self.ragged:
                f = self._raw.pop(split)
                nbytes = f.tell()
                f.close()
                partial = os.path.join(self.tmp, f"{split}.npy.partial")
                _finalize_npy(partial, 0, (nbytes,))  # prepends the header
                os.replace(partial, os.path.join(self.tmp, f"{split}.npy"))
                index = np.asarray(self._index[split], np.int64).reshape(-1, 3)
                buf = io.BytesIO()
                np.save(buf, index)
                fsutil.atomic_write(os.path.join(self.tmp, f"{split}_index.npy"), buf.getvalue())
                continue
            arr = self._arrays.pop(split)
            n = len(self.files[split])
            offset = arr.offset
            arr.flush()
            del arr
            partial = os.path.join(self.tmp, f"{split}.npy.partial")
            _finalize_npy(partial, offset, (n, self.size, self.size, self.channels))
            os.replace(partial, os.path.join(self.tmp, f"{split}.npy"))
        manifest = {
            "format_version": FORMAT_VERSION,
            "store": MARK,
            "size": self.size,
            **({"layout": "ragged"} if self.ragged else {}),
            **({"channels": self.channels, "pairs": True} if self.channels == 6 else {}),
            "train_count": len(self.files["train"]),
            "val_count": len(self.files["val"]),
            **manifest_fields,
            "train_files": self.files["train"],
            "val_files": self.files["val"],
        }
        fsutil.atomic_write(os.path.join(self.tmp, MANIFEST), json.dumps(manifest, indent=1) + "\n")
        os.remove(os.path.join(self.tmp, WRITING))  # complete: the manifest marks it as ours from here on
        self._publish()
        return manifest

    def _publish(self) -> None:
        vacant = not os.path.lexists(self.out) or (os.path.isdir(self.out) and not os.listdir(self.out))
        if not self.replace or vacant:
            try:
                os.rename(self.tmp, self.out)  # replaces an empty folder; fails on one that is not (any more)
            except OSError:
                if self.replace or not is_store(self.out):
                    raise
                self.abort()  # a concurrent writer published the same store first
            _building.discard(self.tmp)
            return
        check_replaceable(self.out)  # again: something may have been put there while we worked
        old = _aside(self.out, "old")
        os.rename(self.out, old)
        try:
            os.rename(self.tmp, self.out)
        except OSError:
            os.rename(old, self.out)
            raise
        _building.discard(self.tmp)
        _discard(old)

    def abort(self) -> None:
        """Discard the work (the aside folder); ``out`` is left as it was."""
        self._arrays.clear()
        for f in self._raw.values():
            f.close()
        self._raw.clear()
        if os.path.lexists(self.tmp):
            _discard(self.tmp)
        _building.discard(self.tmp)


def _finalize_npy(path: str, old_offset: int, shape) -> None:
    """Rewrite an over-allocated .npy for its real shape: new header, data truncated."""
    header = _npy_header(shape)
    nbytes = int(np.prod(shape))
    if len(header) == old_offset:  # the usual case: the header is padded to 64 bytes either way
        with open(path, "r+b") as f:
            f.write(header)
            f.truncate(old_offset + nbytes)
        return
    tmp = path + ".resized"
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        dst.write(header)
        src.seek(old_offset)
        remaining = nbytes
        while remaining:
            chunk = src.read(min(remaining, 64 << 20))
            dst.write(chunk)
            remaining -= len(chunk)
    os.replace(tmp, path)
