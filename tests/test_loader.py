"""The grain input pipeline: determinism, epochs, restorable state, augmentation and sharding."""
from __future__ import annotations

import grain
import numpy as np
import pytest

from jaxdenoise.data import loader

N, S, B = 37, 8, 5
STEPS = N // B  # batches per epoch; the last N % B images of each epoch's permutation are dropped
PATTERN = np.arange(S * S, dtype=np.uint8).reshape(S, S)  # no symmetry: every flip / rotation shows


def _images(n=N, h=S, w=S):
    """``uint8 [n, h, w, 3]``: channel 0 holds the image's index, channel 1 an asymmetric pattern."""
    imgs = np.zeros((n, h, w, 3), np.uint8)
    imgs[..., 0] = np.arange(n, dtype=np.uint8)[:, None, None]
    imgs[..., 1] = np.arange(h * w, dtype=np.uint8).reshape(h, w)
    return imgs


def _batches(images=None, batch_size=B, seed=0, num_batches=3 * STEPS, threads=1, **kw):
    images = _images() if images is None else images
    ds = loader.make_loader(images, batch_size, seed, num_batches, num_threads=threads, **kw)
    return list(ds)


def _indices(batch):
    idx = batch[..., 0]
    assert np.all(idx == idx[:, :1, :1]), "channel 0 must stay constant within an image"
    return idx[:, 0, 0].astype(np.int64)


def test_batches_shape_and_dtype():
    batches = _batches(num_batches=10)
    assert len(batches) == 10
    for b in batches:
        assert isinstance(b, np.ndarray) and b.dtype == np.uint8 and b.shape == (B, S, S, 3)
        np.testing.assert_array_equal(b[..., 1], np.broadcast_to(PATTERN, (B, S, S)))  # no augmentation
        assert not b[..., 2].any()


def test_same_seed_same_sequence_different_seed_different():
    a, b, c = _batches(seed=7), _batches(seed=7, threads=2), _batches(seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_epochs_visit_each_image_at_most_once_in_a_new_order():
    seed = 11
    batches = _batches(seed=seed, num_batches=3 * STEPS)
    orders = []
    for e in range(3):
        idx = np.concatenate([_indices(b) for b in batches[e * STEPS:(e + 1) * STEPS]])
        assert len(idx) == STEPS * B and len(set(idx.tolist())) == len(idx), f"epoch {e} repeats an image"
        assert idx.min() >= 0 and idx.max() < N
        # the order is grain's per-epoch permutation, without the remainder
        np.testing.assert_array_equal(idx, loader.epoch_permutation(N, seed, e)[:STEPS * B])
        orders.append(idx)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])


def test_epoch_permutation_is_a_permutation_and_matches_the_loader_when_b_divides_n():
    n, b, seed = 36, 6, 4
    for e in range(3):
        perm = loader.epoch_permutation(n, seed, e)
        assert perm.dtype == np.int64 and sorted(perm.tolist()) == list(range(n))
    batches = _batches(_images(n), batch_size=b, seed=seed, num_batches=2 * n // b)
    visited = np.concatenate([_indices(x) for x in batches])
    np.testing.assert_array_equal(visited, np.concatenate([loader.epoch_permutation(n, seed, e) for e in (0, 1)]))
    assert not np.array_equal(loader.epoch_permutation(n, seed, 0), loader.epoch_permutation(n, seed + 100, 0))


@pytest.mark.parametrize("k", [0, 4, STEPS, STEPS + 3])
@pytest.mark.parametrize("aug", [False, True])
def test_iterator_state_restores_the_position(k, aug):
    images = _images()
    make = lambda: loader.make_loader(images, B, 3, 3 * STEPS, flips=aug, rot90=aug, num_threads=2)  # noqa: E731
    it = iter(make())
    for _ in range(k):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    fresh = iter(make())
    fresh.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(fresh), want)


def _dihedral(pattern):
    out = []
    for img in (pattern, pattern[:, ::-1]):
        out += [np.rot90(img, r) for r in range(4)]
    return out


def test_augmentation_is_deterministic_and_only_flips_or_rotates():
    a = _batches(seed=5, flips=True, rot90=True)
    b = _batches(seed=5, flips=True, rot90=True, threads=2)
    plain = _batches(seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    variants = _dihedral(PATTERN)
    seen = set()
    for aug, raw in zip(a, plain, strict=True):
        np.testing.assert_array_equal(_indices(aug), _indices(raw))  # the same images, in the same order
        for img in aug:
            matches = [i for i, v in enumerate(variants) if np.array_equal(img[..., 1], v)]
            assert len(matches) == 1
            seen.add(matches[0])
    assert len(seen) >= 6, f"expected most of the 8 flips / rotations over {len(a) * B} images, saw {seen}"
    other = _batches(seed=6, flips=True, rot90=True)
    assert not all(np.array_equal(x[..., 1], y[..., 1]) for x, y in zip(a, other, strict=True))


def test_flips_only_and_rot90_only():
    flips = {PATTERN.tobytes(), PATTERN[:, ::-1].tobytes(), PATTERN[::-1].tobytes(), PATTERN[::-1, ::-1].tobytes()}
    rots = {np.rot90(PATTERN, r).tobytes() for r in range(4)}
    seen_f, seen_r = set(), set()
    for b in _batches(flips=True):
        for img in b:
            assert img[..., 1].tobytes() in flips
            seen_f.add(img[..., 1].tobytes())
    for b in _batches(rot90=True):
        for img in b:
            assert img[..., 1].tobytes() in rots
            seen_r.add(img[..., 1].tobytes())
    assert seen_f == flips and seen_r == rots


def test_channel_orders_permute_each_images_colours_and_change_no_other_draw():
    """data.channels: each image's R, G, B in one of their 6 orders, drawn per image and per batch index (the same
    with 2 threads, another with another seed); the images, crops, flips and turns are those without it."""
    imgs = _images()
    imgs[..., 2] = 200  # three distinguishable channels: index, pattern, constant
    kw = dict(seed=5, flips=True, rot90=True)
    plain, a = _batches(imgs, **kw), _batches(imgs, channels=True, **kw)
    assert all(np.array_equal(x, y) for x, y in zip(a, _batches(imgs, channels=True, threads=2, **kw), strict=True))
    seen = set()
    for aug, raw in zip(a, plain, strict=True):
        for img, ref in zip(aug, raw, strict=True):
            order = [next(c for c in range(3) if np.array_equal(img[..., j], ref[..., c])) for j in range(3)]
            assert sorted(order) == [0, 1, 2]
            seen.add(tuple(order))
    assert seen == {tuple(o) for o in loader.CHANNEL_ORDERS.tolist()}, seen
    other = _batches(imgs, channels=True, seed=6, flips=True, rot90=True)
    assert not all(np.array_equal(x, y) for x, y in zip(a, other, strict=True))
    with pytest.raises(ValueError, match="data.channels does not combine with noise_fixed"):
        loader.make_loader(imgs, B, 0, 1, channels=True, fixed=True)


@pytest.mark.parametrize("aug", [False, True])
def test_shards_concatenate_to_the_global_batch(aug):
    images, b, seed, steps = _images(), 6, 9, 12
    glob = _batches(images, batch_size=b, seed=seed, num_batches=steps, flips=aug, rot90=aug, channels=aug)
    shards = [_batches(images, batch_size=b, seed=seed, num_batches=steps, flips=aug, rot90=aug, channels=aug,
                       shard=grain.sharding.ShardOptions(i, 2)) for i in range(2)]
    for step in range(steps):
        assert shards[0][step].shape == (b // 2, S, S, 3)
        np.testing.assert_array_equal(np.concatenate([shards[0][step], shards[1][step]]), glob[step])
    three = [_batches(images, batch_size=b, seed=seed, num_batches=steps, flips=aug, rot90=aug, channels=aug,
                      shard=grain.sharding.ShardOptions(i, 3)) for i in range(3)]
    for step in range(steps):
        np.testing.assert_array_equal(np.concatenate([s[step] for s in three]), glob[step])


def test_reads_from_a_memmap(tmp_path):
    np.save(tmp_path / "train.npy", _images())
    mm = np.load(tmp_path / "train.npy", mmap_mode="r")
    a, b = _batches(mm, seed=2, flips=True), _batches(seed=2, flips=True)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        loader.make_loader(np.zeros((0, S, S, 3), np.uint8), 4, 0, 1)
    with pytest.raises(ValueError, match="fewer than one batch"):
        loader.make_loader(_images(3), 4, 0, 1)
    with pytest.raises(ValueError, match="divisible"):
        loader.make_loader(_images(), 5, 0, 1, shard=grain.sharding.ShardOptions(0, 2))
    with pytest.raises(ValueError, match="square"):
        loader.make_loader(_images(N, 8, 6), 4, 0, 1, rot90=True)
    # a batch the size of the whole split is fine
    (only,) = _batches(_images(4), batch_size=4, num_batches=1)
    assert sorted(_indices(only).tolist()) == [0, 1, 2, 3]
