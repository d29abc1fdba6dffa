"""Built-in data: real colour photos that ship inside installed packages, so a fresh machine can train.

The photos come with scikit-image (``skimage/data``) and matplotlib (``grace_hopper.jpg``); nothing is
downloaded. They go through the same Wand reader as any user folder, then become a store:
- train: random square crops at several scales (log-uniform side between ``size`` and the photo's short
  side), resized to ``size`` x ``size``, half of them mirrored;
- val: whole held-out photos (never crops of training photos), each resized whole plus crops of its own.

Without ImageMagick (the GPU image has none) the photos are read and resized with Pillow's Lanczos instead,
so the test suite and the GPU check still find built-in data there; the store's name records which.
"""
from __future__ import annotations

import hashlib
import os
from typing import List, Tuple

import numpy as np

from jaxdenoise.data import imageio, store

# (package, file) -> split. The two motorcycle views are a stereo pair: they stay together.
TRAIN_PHOTOS: Tuple[Tuple[str, str], ...] = (
    ("skimage", "astronaut.png"), ("matplotlib", "grace_hopper.jpg"), ("skimage", "rocket.jpg"),
    ("skimage", "hubble_deep_field.jpg"), ("skimage", "retina.jpg"), ("skimage", "ihc.png"),
    ("skimage", "motorcycle_left.png"), ("skimage", "motorcycle_right.png"),
)
VAL_PHOTOS: Tuple[Tuple[str, str], ...] = (("skimage", "chelsea.png"), ("skimage", "coffee.png"))
VERSION = 1  # bump when the recipe below changes, so caches are rebuilt


def photo_path(package: str, name: str) -> str:
    if package == "skimage":
        import skimage.data
        base = os.path.dirname(skimage.data.__file__)
    elif package == "matplotlib":
        import matplotlib
        base = os.path.join(matplotlib.get_data_path(), "sample_data")
    else:
        raise ValueError(f"unknown package {package!r}")
    path = os.path.join(base, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"built-in photo {name} is missing from the installed {package} ({path})")
    return path


def random_crops(photo: np.ndarray, n: int, size: int, rng: np.random.Generator,
                 flips: bool = True) -> List[np.ndarray]:
    """``n`` crops of ``uint8 [H, W, 3]``, each a square of log-uniform side in [size, min(H, W)], resized."""
    h, w = photo.shape[:2]
    short = min(h, w)
    out = []
    for _ in range(n):
        side = int(round(np.exp(rng.uniform(np.log(size), np.log(short))))) if short > size else short
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        crop = photo[y:y + side, x:x + side]
        crop = _resize(crop, size) if side != size else crop.copy()
        if flips and rng.random() < 0.5:
            crop = crop[:, ::-1]
        out.append(np.ascontiguousarray(crop))
    return out


def load_photo(path: str) -> np.ndarray:
    """``uint8 [H, W, 3]`` of a built-in photo (Wand; Pillow where ImageMagick is missing)."""
    if imageio.has_imagemagick():
        return imageio.load_rgb(path)
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    if imageio.has_imagemagick():
        return imageio.resize_array(arr, size, size)
    from PIL import Image
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.LANCZOS))


def default_cache_dir() -> str:
    base = os.environ.get("JAXDENOISE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jaxdenoise")
    return base


def builtin_store(size: int = 128, train_crops_per_photo: int = 256, val_crops_per_photo: int = 16,
                  seed: int = 0, cache_dir: str | None = None) -> str:
    """Path of the built-in store for these settings, built on first use (a few seconds)."""
    key = f"v{VERSION}-s{size}-t{train_crops_per_photo}-v{val_crops_per_photo}-seed{seed}"
    key += "" if imageio.has_imagemagick() else "-pil"  # another resampler: another store
    out = os.path.join(cache_dir or default_cache_dir(), f"builtin-{key}")
    if store.is_store(out):
        return out
    # built aside and published only if no store is there yet: concurrent first uses (tests in parallel)
    # each build their own, the first to finish wins
    capacity = {"train": len(TRAIN_PHOTOS) * train_crops_per_photo,
                "val": len(VAL_PHOTOS) * (val_crops_per_photo + 1)}
    with store.StoreWriter(out, size, capacity, replace=False) as writer:
        for split, photos, n in (("train", TRAIN_PHOTOS, train_crops_per_photo),
                                 ("val", VAL_PHOTOS, val_crops_per_photo)):
            for package, name in photos:
                photo = load_photo(photo_path(package, name))
                # one stream per photo, so the crops of one photo do not depend on the others
                rng = np.random.default_rng([seed, int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)])
                if split == "val":
                    writer.add(split, _resize(photo, size), f"{package}:{name}#whole")
                for i, crop in enumerate(random_crops(photo, n, size, rng, flips=(split == "train"))):
                    writer.add(split, crop, f"{package}:{name}#crop{i}")
        writer.close(seed=seed, val_fraction=None, mode="builtin-crops", source="builtin", skipped=[],
                     photos={"train": [n for _, n in TRAIN_PHOTOS], "val": [n for _, n in VAL_PHOTOS]})
    return out
