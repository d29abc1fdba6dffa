"""The prepared store: what a preparation writes and what the loader reads.

Layout of a store directory::

    manifest.json          counts, size, seed, split rule, file lists, skipped files with reasons
    train.npy, val.npy     uint8 [N, size, size, 3], memory-mappable (np.load(..., mmap_mode="r"))
    clean/train/*.png      the same images as PNG, for people to look at (the paper's "clear images")
    clean/val/*.png

Everything is written deterministically (no time stamps, fixed PNG settings), so the same input gives
byte-identical files.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from typing import Any, Dict, List

import numpy as np

MANIFEST = "manifest.json"
SPLITS = ("train", "val")
FORMAT_VERSION = 1


class StoreError(ValueError):
    """A missing, incomplete or unusable prepared store; the message is one line."""


def is_store(path: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(path, MANIFEST))


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


def open_split(path: str | os.PathLike, split: str) -> np.ndarray:
    """The split's images as a read-only memmap, ``uint8 [N, size, size, 3]``; never empty."""
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
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise StoreError(f"{npy} holds {arr.dtype} {arr.shape}, expected uint8 [N, H, W, 3]")
    if arr.shape[0] != manifest.get(f"{split}_count"):
        raise StoreError(f"{npy} holds {arr.shape[0]} images but the manifest says {manifest.get(f'{split}_count')}")
    if arr.shape[0] == 0:
        raise StoreError(f"the {split} split of {path} is empty")
    return arr


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


class StoreWriter:
    """Writes a store incrementally: images arrive one by one, counts are known only at the end.

    Each split's ``.npy`` is allocated for an upper bound of images, filled in order, and at ``close`` its
    header is rewritten for the real count and the file truncated, so nothing is copied twice.
    """

    def __init__(self, out: str | os.PathLike, size: int, capacity: Dict[str, int]):
        self.out = os.fspath(out)
        self.size = size
        os.makedirs(self.out, exist_ok=True)
        # a re-run replaces a previous store completely (stale PNGs would otherwise survive)
        for name in (MANIFEST, "train.npy", "val.npy"):
            if os.path.exists(os.path.join(self.out, name)):
                os.remove(os.path.join(self.out, name))
        shutil.rmtree(os.path.join(self.out, "clean"), ignore_errors=True)
        self.files: Dict[str, List[str]] = {s: [] for s in SPLITS}
        self._arrays = {}
        for split in SPLITS:
            os.makedirs(os.path.join(self.out, "clean", split), exist_ok=True)
            shape = (max(1, capacity.get(split, 0)), size, size, 3)  # memmap cannot be empty
            self._arrays[split] = np.lib.format.open_memmap(
                os.path.join(self.out, f"{split}.npy.partial"), mode="w+", dtype=np.uint8, shape=shape)

    def add(self, split: str, image: np.ndarray, source: str, png: bytes | None = None) -> None:
        """Append ``uint8 [size, size, 3]`` to a split; ``source`` is recorded in the manifest."""
        i = len(self.files[split])
        self._arrays[split][i] = image
        with open(os.path.join(self.out, "clean", split, f"{i:06d}.png"), "wb") as f:
            f.write(png if png is not None else png_bytes(image))
        self.files[split].append(source)

    def close(self, **manifest_fields: Any) -> Dict[str, Any]:
        for split in SPLITS:
            arr = self._arrays.pop(split)
            n = len(self.files[split])
            offset = arr.offset
            arr.flush()
            del arr
            partial = os.path.join(self.out, f"{split}.npy.partial")
            _finalize_npy(partial, offset, (n, self.size, self.size, 3))
            os.replace(partial, os.path.join(self.out, f"{split}.npy"))
        manifest = {
            "format_version": FORMAT_VERSION,
            "size": self.size,
            "train_count": len(self.files["train"]),
            "val_count": len(self.files["val"]),
            **manifest_fields,
            "train_files": self.files["train"],
            "val_files": self.files["val"],
        }
        # the manifest is written last: a store without one is incomplete and is never opened
        tmp = os.path.join(self.out, MANIFEST + ".partial")
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, os.path.join(self.out, MANIFEST))
        return manifest


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
