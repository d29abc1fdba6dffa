"""Store resolution and device feeders: what puts training batches on the devices.

``resolve_stores`` finds (or prepares on first use) the stores a config names. ``DevicePrefetcher`` moves the
grain loader's host batches (this process's rows of every global batch) onto the mesh, a few steps ahead;
``DeviceResidentBatches`` keeps a small training split on the one device and gathers batches there.
"""
from __future__ import annotations

import collections
import hashlib
import os
from typing import List, Optional

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdenoise import layout
from jaxdenoise.data import data_dirs
from jaxdenoise.data import builtin, loader, prepare


def resolve_stores(config: ml_collections.ConfigDict, workdir: str) -> List[str]:
    """Paths of the prepared stores the config asks for (one per ``data.dir`` folder, in its order),
    preparing each on first use. Each folder is split on its own (``data.val_fraction``, ``data.split_seed``),
    so adding a folder does not move another folder's images between train and val; ``store.open_splits``
    joins the splits.

    Where: in ``data.cache_dir``, one subfolder per (folder, preparation settings); else in the workdir,
    ``WORKDIR/data`` for one folder and ``WORKDIR/data/<i>-<name>`` for several (or beside a ``data.val_dir``).
    """
    d = config.data
    if d.source == "builtin":
        return [builtin.builtin_store(d.size, d.builtin_train_crops, d.builtin_val_crops, seed=d.split_seed,
                                      cache_dir=d.cache_dir or None)]
    dirs = data_dirs(d.dir)
    for folder in dirs:
        _check_folder("data.dir", folder)
    several = len(dirs) > 1 or bool(d.get("val_dir"))
    return [_prepare(config, workdir, folder, bool(d.get("pairs")), f"{i}-" if several else None)
            for i, folder in enumerate(dirs)]


def resolve_val_store(config: ml_collections.ConfigDict, workdir: str) -> Optional[str]:
    """The prepared store of ``data.val_dir`` (every image of it is validation: ``store.open_splits(path,
    "all")``), or None when the run validates on its training folders' own split. A folder holding
    ``clean/`` and ``noisy/`` is prepared as real pairs (how a run trained on noisy photos alone is scored);
    any other folder as clean images, noised like the training ones. Kept at ``WORKDIR/data/val-<name>``."""
    folder = config.data.get("val_dir")
    if not folder:
        return None
    _check_folder("data.val_dir", folder)
    return _prepare(config, workdir, folder, is_pairs_folder(folder), "val-")


def is_pairs_folder(folder: str) -> bool:
    """A folder of real noisy/clean pairs: it holds ``clean/`` and ``noisy/`` (``prepare.PAIR_DIRS``)."""
    return all(os.path.isdir(os.path.join(folder, n)) for n in prepare.PAIR_DIRS)


def _check_folder(field: str, folder: str) -> None:
    if not os.path.isdir(folder):
        raise ValueError(f"{field}={folder!r} " + ("is a file, not a folder of images" if os.path.exists(folder)
                                                   else "does not exist"))


def _prepare(config, workdir: str, folder: str, pairs: bool, prefix: Optional[str]) -> str:
    """The store of one folder, prepared on first use: in ``data.cache_dir`` (keyed by the folder and the
    preparation settings) or in the workdir (``WORKDIR/data``, or ``WORKDIR/data/<prefix><name>``)."""
    d = config.data
    if d.cache_dir:  # a shared cache holds many stores (built-in ones too): one subfolder per preparation
        key = f"{os.path.realpath(folder)}|{d.size}|{d.val_fraction}|{d.split_seed}|{d.resize_mode}"
        key += f"|{d.max_side}" if d.resize_mode == "full" else ""
        key += "|pairs" if pairs else ""
        cache = os.path.join(d.cache_dir, "prepared-" + hashlib.sha256(key.encode()).hexdigest()[:12])
    elif prefix is None:
        cache = os.path.join(workdir, layout.DATA_DIR)
    else:
        name = os.path.basename(os.path.normpath(os.path.realpath(folder))) or "data"
        cache = os.path.join(workdir, layout.DATA_DIR, f"{prefix}{name}")
    return prepare.ensure_prepared(folder, cache, d.size, d.val_fraction, d.split_seed, d.resize_mode,
                                   d.max_side if d.resize_mode == "full" else 0, pairs)


class DevicePrefetcher:
    """Host batches -> device arrays, ``depth`` ahead of the step (the transfer overlaps the compute).

    Yields ``(device_batch, data_state)``, where ``data_state`` is the grain iterator's state right after
    this batch was read: what a checkpoint taken after the step must store. With ``k > 1`` each device
    batch stacks k host batches, ``uint8 [k, B, H, W, 3]``, for ``steps.multi_train_step``.
    """

    def __init__(self, iterator, sharding: NamedSharding, k: int = 1, depth: int = 2):
        self.it, self.sharding, self.k, self.depth = iterator, sharding, k, depth
        self.queue: collections.deque = collections.deque()

    def _pull(self) -> None:
        host = [next(self.it) for _ in range(self.k)]  # arrays, or dicts of them (fixed-noise batches)
        host = host[0] if self.k == 1 else jax.tree.map(lambda *x: np.stack(x), *host)
        dev = jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.sharding, x), host)
        self.queue.append((dev, self.it.get_state()))

    def __iter__(self):
        return self

    def __next__(self):
        while len(self.queue) < self.depth:
            try:
                self._pull()
            except StopIteration:
                break
        if not self.queue:
            raise StopIteration
        return self.queue.popleft()


class DeviceResidentBatches:
    """The whole training split on the device; batches gathered there in the grain loader's epoch order.

    For datasets that fit in device memory (FFHQ at 128x128 is 3.4 GB as uint8): no host reads or
    host-to-device copies in the loop. The order is ``loader.epoch_permutation`` (grain's shuffle), batch k
    of epoch e takes positions [j B, (j+1) B) of it, exactly as ``loader.make_loader``; the state is the same
    ``{"next_index": k}`` as the grain iterator's, so checkpoints move between the two paths.
    Yields ``(device_batch, state)`` like ``DevicePrefetcher``. No augmentation (flips/rot90) in this mode.
    """

    def __init__(self, images: np.ndarray, batch_size: int, seed: int, sharding: NamedSharding, k: int = 1):
        mesh = sharding.mesh  # one device: train.py refuses data.device_resident with more
        self.images = jax.device_put(np.asarray(images), NamedSharding(mesh, P()))
        self.n, self.b, self.seed, self.k = images.shape[0], batch_size, seed, k
        self.spe = self.n // batch_size
        self.next_index = 0
        self._perm_epoch, self._perm = -1, None
        self.gather = jax.jit(lambda imgs, idx: imgs[idx], out_shardings=sharding)
        self.idx_sharding = NamedSharding(mesh, P(*sharding.spec[:-1])) if k > 1 else NamedSharding(mesh, P("data"))

    def _indices(self, batch_index: int) -> np.ndarray:
        epoch, j = divmod(batch_index, self.spe)
        if epoch != self._perm_epoch:
            self._perm_epoch, self._perm = epoch, loader.epoch_permutation(self.n, self.seed, epoch).astype(np.int32)
        return self._perm[j * self.b:(j + 1) * self.b]

    def get_state(self) -> dict:
        return {"next_index": self.next_index}

    def set_state(self, state: dict) -> None:
        self.next_index = int(state["next_index"])

    def __iter__(self):
        return self

    def __next__(self):
        idx = np.stack([self._indices(self.next_index + i) for i in range(self.k)])
        idx = idx[0] if self.k == 1 else idx
        self.next_index += self.k
        batch = self.gather(self.images, jax.device_put(idx, self.idx_sharding))
        return batch, self.get_state()
