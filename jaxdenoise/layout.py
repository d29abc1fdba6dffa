"""The layout of a training workdir: one home for every name a run writes, and how to recognise a workdir.

No imports beyond ``os``: the data rooms and ``outputs`` read it without pulling in JAX.
"""
from __future__ import annotations

import os

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
CHECKPOINTS_DIR = "checkpoints"   # orbax; damaged steps go to checkpoints.damaged/
TB_DIR = "tb"
GRID_FILE = "grid.png"            # training's latest clean | noisy | denoised grid
DATA_DIR = "data"                 # a raw data.dir prepared here when no data.cache_dir is set
PLOT_FILES = ("psnr_per_epoch.png", "mse_per_epoch.png")  # the paper's Figs. 7 and 8 (train.py, plot.py)
TIME_PLOT_FILES = ("psnr_vs_minutes.png", "mse_vs_minutes.png")  # the same against wall-clock (plot.py --x)
EVAL_GRID_FILE = "eval_grid.png"  # evaluate.py's default comparison grid
MODEL_CARD_FILE = "MODEL_CARD.md"  # what the model is and how good it is (model_card.py), and its JSON twin
MODEL_CARD_JSON = "model_card.json"
RUN_FILES = frozenset({METRICS_FILE, CONFIG_FILE, LOCK_FILE, CHECKPOINTS_DIR, CHECKPOINTS_DIR + ".damaged", TB_DIR,
                       GRID_FILE, DATA_DIR, EVAL_GRID_FILE, MODEL_CARD_FILE, MODEL_CARD_JSON, *PLOT_FILES,
                       *TIME_PLOT_FILES})


STORE_MANIFEST = "manifest.json"  # a prepared store's manifest (data/store.py)
STORE_MARK = "jaxdenoise"         # manifest["store"]


def is_store(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a store manifest jaxdenoise wrote (marked, or a store from before the mark)."""
    import json
    try:
        with open(os.path.join(path, STORE_MANIFEST)) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and (m.get("store") == STORE_MARK or ("format_version" in m and "train_files" in m))


def is_workdir(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like a training workdir: a config.json beside a lock, a metric log or
    checkpoints (what outputs.py protects; deliberately loose)."""
    path = os.fspath(path)
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) and any(
        os.path.lexists(os.path.join(path, n)) for n in (LOCK_FILE, METRICS_FILE, CHECKPOINTS_DIR))
