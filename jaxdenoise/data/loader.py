"""The grain input pipeline: shuffled uint8 batches from a prepared store.

Shape of the pipeline (grain ``MapDataset``, random access, so any position can be restored)::

    range(N).shuffle(seed).repeat()        grain's per-epoch permutation (epoch e uses seed + e)
    range(num_batches).map(batch k)        batch k of epoch e = k // steps_per_epoch takes the next B
                                           indices of epoch e's permutation (drop_remainder per epoch)
        -> this process's shard of the B indices (grain.sharding.ShardOptions)
        -> read from the memmapped store, optional random patch crops, flips and 90-degree rotations,
           and permutations of the colour channels
           (all seeded by (seed, batch index): a restored iterator position replays the same crops)
    .to_iter_dataset(ReadOptions(num_threads, prefetch_buffer_size))

Host output is ``uint8 [B_local, H, W, 3]``: normalisation happens on the device, so host-to-device
traffic stays uint8. With ``fixed=True`` (``config.noise_fixed``) a batch is instead a dict: the whole,
untouched stored images and, per row, where they come from and what to do to them (``META_FIELDS``), so that
the device can noise each image in its stored frame, keyed by its index, before it crops and turns it
(``steps.fixed_noisy``): the noisy image then is one and the same every epoch, as in a real noisy dataset. Batches never straddle epochs. The global batch at a step is the same whatever the
number of processes, so scaling out changes no result. ``epoch_permutation`` gives the same order for
the device-resident path.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import grain
import numpy as np

from jaxdenoise.data import store

_AUG_SALT = 0x5EED_A06
# a fixed-noise batch's per-row int32 meta: the image's index in the training split, the crop's top-left
# corner (0, 0 for whole images), the flips and the quarter turns, applied in that order (as ``augment``)
META_FIELDS = ("index", "y", "x", "hflip", "vflip", "rot")


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """``int64 [n]``: the order in which epoch ``epoch`` visits the store (grain's shuffle)."""
    perm = grain.MapDataset.range(n).shuffle(seed=seed).repeat()
    return np.fromiter((perm[epoch * n + i] for i in range(n)), np.int64, count=n)


def augment(batch: np.ndarray, hflip: np.ndarray, vflip: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Flip / rotate each image of ``uint8 [B, S, S, 3]`` (square): bool [B] flips, int [B] quarter turns."""
    out = np.empty_like(batch)
    for i, img in enumerate(batch):
        img = img[:, ::-1] if hflip[i] else img
        img = img[::-1] if vflip[i] else img
        out[i] = np.rot90(img, int(rot[i]))
    return out


_CROP_SALT = 0xC209
_CHANNEL_SALT = 0xC0102
# the 6 orders of the R, G, B channels; a colour augmentation (data.channels) gives each image one of them
CHANNEL_ORDERS = np.array([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


def crop_origins(rng: np.random.Generator, sizes: np.ndarray, patch: int) -> np.ndarray:
    """``int [B, 2]`` top-left corners of uniform random ``patch`` x ``patch`` crops of images of ``sizes``
    ``[B, 2]`` (h, w), each side >= patch."""
    u = rng.random((len(sizes), 2))
    return np.floor(u * (np.asarray(sizes) - patch + 1)).astype(np.int64)


class _BatchReader:
    """Batch index -> uint8 batch (picklable, stateless: grain threads call it in any order)."""

    def __init__(self, images: np.ndarray, batch_size: int, seed: int, shard: grain.sharding.ShardOptions,
                 view: "View"):
        self.images = images
        self.fixed = view.fixed
        self.ragged = isinstance(images, store.RaggedImages)
        self.n = images.shape[0]
        self.batch_size = batch_size
        self.steps_per_epoch = self.n // batch_size
        self.seed = seed
        self.flips, self.rot90, self.patch, self.channels = view.flips, view.rot90, view.patch, view.channels
        if batch_size % shard.shard_count:
            raise ValueError(f"batch_size {batch_size} is not divisible by {shard.shard_count} processes")
        self.local = batch_size // shard.shard_count
        self.lo = shard.shard_index * self.local
        self.perm = grain.MapDataset.range(self.n).shuffle(seed=seed).repeat()

    def __call__(self, k: int):
        epoch, j = divmod(int(k), self.steps_per_epoch)
        start = epoch * self.n + j * self.batch_size
        idx = np.fromiter((self.perm[start + self.lo + i] for i in range(self.local)), np.int64, count=self.local)
        part = slice(self.lo, self.lo + self.local)
        p = self.patch
        ys = xs = np.zeros(self.local, np.int64)
        if p:  # crop origins drawn for the whole global batch, then this shard's part: any process count
            if self.ragged:
                gidx = np.fromiter((self.perm[start + i] for i in range(self.batch_size)), np.int64,
                                   count=self.batch_size)
                sizes = self.images.sizes[gidx]
            else:
                sizes = np.tile(self.images.shape[1:3], (self.batch_size, 1))
            rng = np.random.default_rng([self.seed, _CROP_SALT, int(k)])
            ys, xs = crop_origins(rng, sizes, p)[part].T
        if self.fixed:
            return self._fixed(k, idx, part, ys, xs)
        if self.ragged:  # full-size store: read only each image's crop
            batch = np.stack([self.images.crop(i, y, x, p) for i, y, x in zip(idx, ys, xs)])
        else:
            batch = self._read_whole(idx)
            if p:
                batch = np.stack([img[y:y + p, x:x + p] for img, y, x in zip(batch, ys, xs)])
        if self.flips or self.rot90:
            hflip, vflip, rot = self._draws(k)
            batch = augment(batch, hflip[part], vflip[part], rot[part])
        if self.channels:
            batch = np.take_along_axis(batch, CHANNEL_ORDERS[self._channel_draws(k)[part]][:, None, None, :], axis=-1)
        return batch

    def _read_whole(self, idx: np.ndarray) -> np.ndarray:
        """``uint8 [len(idx), H, W, C]``: whole images of a fixed-size store."""
        order = np.argsort(idx)  # sorted reads are kinder to a memmap on disk
        batch = np.empty((len(idx),) + self.images.shape[1:], np.uint8)
        batch[order] = self.images[idx[order]]
        return batch

    def _draws(self, k: int):
        """(hflip, vflip, rot) for the whole global batch ``k``: the same for any process count."""
        rng = np.random.default_rng([self.seed, _AUG_SALT, int(k)])
        draws = rng.integers(0, 2, (2, self.batch_size)).astype(bool) & self.flips
        return draws[0], draws[1], rng.integers(0, 4, self.batch_size) * self.rot90

    def _channel_draws(self, k: int) -> np.ndarray:
        """int [B]: each image's channel order (a row of ``CHANNEL_ORDERS``) in the whole global batch ``k``, from a
        stream of its own, so that turning the augmentation on changes no other draw."""
        rng = np.random.default_rng([self.seed, _CHANNEL_SALT, int(k)])
        return rng.integers(0, len(CHANNEL_ORDERS), self.batch_size)

    def _fixed(self, k: int, idx: np.ndarray, part: slice, ys: np.ndarray, xs: np.ndarray) -> dict:
        """A fixed-noise batch: whole stored images, and their meta (``META_FIELDS``): crops and turns are left to
        the device, with the noise (``steps.fixed_noisy``)."""
        batch = self._read_whole(idx)
        zero = np.zeros(self.batch_size, np.int64)
        hflip, vflip, rot = self._draws(k) if (self.flips or self.rot90) else (zero, zero, zero)
        meta = np.stack([idx, ys, xs, hflip[part], vflip[part], rot[part]], axis=1).astype(np.int32)
        return {"image": batch, "meta": meta}


@dataclasses.dataclass(frozen=True)
class View:
    """What each example of a batch is. patch: a random ``patch`` x ``patch`` crop of each image (0 = whole
    images), so batches are ``[B, patch, patch, 3]``; flips, rot90: random flips and quarter turns; channels:
    each image's R, G, B in one of their 6 orders, drawn per image (a colour augmentation); fixed:
    fixed-noise batches instead (dicts of whole images and their meta: the module docstring)."""
    patch: int = 0
    flips: bool = False
    rot90: bool = False
    channels: bool = False
    fixed: bool = False


def make_loader(images: np.ndarray, batch_size: int, seed: int, num_batches: int, *,
                shard: Optional[grain.sharding.ShardOptions] = None, num_threads: int = 0, prefetch: int = 8,
                **view) -> grain.IterDataset:
    """An ``IterDataset`` of ``num_batches`` uint8 batches; iterate it, ``get_state`` / ``set_state`` its iterator.

    images: ``uint8 [N, H, W, 3]`` (a memmap from ``store.open_split``); ``view``: the fields of ``View``
    (an unknown one is a TypeError naming it). Raises ValueError (one line) when the split is empty or
    smaller than one batch, or the patch larger than the images. num_threads 0: min(8, cores).
    """
    v = View(**view)
    patch, fixed, rot90 = v.patch, v.fixed, v.rot90
    n = images.shape[0]
    if n == 0:
        raise ValueError("the training split is empty")
    if n < batch_size:
        raise ValueError(f"the training split has {n} images, fewer than one batch of {batch_size}")
    if isinstance(images, store.RaggedImages):
        if not patch:
            raise ValueError("config: a full-size store (data.resize_mode='full') trains on patches: set data.patch")
        if patch > int(images.sizes.min()):
            raise ValueError(f"config: data.patch={patch} is larger than the smallest stored image side "
                             f"({int(images.sizes.min())})")
    elif patch and patch > min(images.shape[1:3]):
        raise ValueError(f"config: data.patch={patch} is larger than the stored images ({images.shape[1]}x"
                         f"{images.shape[2]})")
    if fixed and isinstance(images, store.RaggedImages):
        raise ValueError("config: noise_fixed=True needs a fixed-size store (data.resize_mode='resize' or "
                         "'center_crop'), not a full-size one")
    if fixed and v.channels:
        raise ValueError("config: data.channels does not combine with noise_fixed=True (each image's noise is fixed "
                         "in its stored colours)")
    if rot90 and not patch and images.shape[1] != images.shape[2]:
        raise ValueError("rot90 augmentation needs square images")
    shard = shard or grain.sharding.ShardOptions(0, 1)
    reader = _BatchReader(images, batch_size, seed, shard, v)
    ds = grain.MapDataset.range(num_batches).map(reader)
    threads = num_threads or min(8, os.cpu_count() or 1)
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch))

