"""Helpers the test files share: one subprocess runner for the scripts, and the interrupt-resume-compare
sequence every bitwise-resume test runs (``resumes_bitwise``)."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, Optional, Tuple

import jax
import numpy as np
import pytest

from jaxdenoise import checkpointing, run_io, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("img_per_s", "eval_s", "wall_s")  # metrics that measure the machine, not the run


def script(name: str, *args: str, timeout: float = 300, env: Optional[dict] = None,
           **kw) -> subprocess.CompletedProcess:
    """``python scripts/NAME *args`` as a user runs it (the checkout on PYTHONPATH), output captured as text."""
    env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", name), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, **kw)


def stop_at(monkeypatch, step: int) -> None:
    """The next run stops after ``step`` as on a preemption notice: checkpoint, then ``Interrupted``."""
    monkeypatch.setattr(train.parallel, "preemption_point", lambda s: s == step)


def assert_same_run(a, b) -> None:
    """Two workdirs hold the same run, bit for bit: the latest checkpoint's step, parameters, optimiser state,
    EMA, rng and data position, and every metrics row (timings and config-change rows aside)."""
    _, ta, sa, da = checkpointing.load_state(str(a), "latest")
    _, tb, sb, db = checkpointing.load_state(str(b), "latest")
    assert sa == sb and da == db, (sa, sb, da, db)
    la, lb = jax.tree.leaves(ta), jax.tree.leaves(tb)
    assert jax.tree.structure(ta) == jax.tree.structure(tb) and len(la) > 4
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    rows = lambda w: [{k: v for k, v in r.items() if k not in TIMING} for r in run_io.read_rows(str(w))
                      if r["kind"] != "config"]
    assert rows(a) == rows(b) and len(rows(a)) >= 4


def resumes_bitwise(monkeypatch, config: Callable, tmp_path, stop: int, straight=None) -> Tuple[str, str]:
    """The interrupt-resume-compare sequence: an unbroken run of ``config()`` (unless ``straight`` names one
    already trained), the same run stopped after step ``stop`` (as on a preemption notice: it saves, then
    raises ``Interrupted``) and rerun to its end; the two must be the same run bit for bit
    (``assert_same_run``). Returns the (straight, resumed) workdirs."""
    if straight is None:
        straight = tmp_path / "straight"
        train.train_and_evaluate(config(), str(straight))
    resumed = tmp_path / "resumed"
    stop_at(monkeypatch, stop)
    with pytest.raises(train.Interrupted, match=f"after step {stop}"):
        train.train_and_evaluate(config(), str(resumed))
    monkeypatch.undo()
    train.train_and_evaluate(config(), str(resumed))
    assert_same_run(straight, resumed)
    return straight, resumed
