"""Helpers the test files share: one subprocess runner for the scripts, and the interrupt-resume-compare
sequence every bitwise-resume test runs (``resumes_bitwise``)."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from typing import Callable, Dict, Optional, Tuple

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


def assert_same_state(a, b) -> None:
    """The latest checkpoints of two workdirs are the same, bit for bit: step, parameters, optimiser state,
    EMA, rng and data position."""
    _, ta, sa, da = checkpointing.load_state(str(a), "latest")
    _, tb, sb, db = checkpointing.load_state(str(b), "latest")
    assert sa == sb and da == db, (sa, sb, da, db)
    la, lb = jax.tree.leaves(ta), jax.tree.leaves(tb)
    assert jax.tree.structure(ta) == jax.tree.structure(tb) and len(la) > 4
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_same_run(a, b) -> None:
    """Two workdirs hold the same run, bit for bit: the same state (``assert_same_state``) and every metrics
    row (timings and config-change rows aside)."""
    assert_same_state(a, b)
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


def tensorboard_scalars(tb_dir) -> Dict[str, Dict[int, float]]:
    """``{tag: {step: value}}`` of the scalars in a TensorBoard folder as TensorBoard shows them: the event
    files read in name (time) order, and a ``SessionLog.START`` event at step S (a resumed writer's
    ``purge_step``) dropping every event already read at steps >= S. Raises on a step logged twice for a tag
    after purging: that is a run logging the same step twice."""
    from tensorboardX.proto import event_pb2
    scalars: Dict[str, Dict[int, float]] = {}
    for name in sorted(n for n in os.listdir(tb_dir) if n.startswith("events.out.tfevents.")):
        with open(os.path.join(tb_dir, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):  # TFRecord: u64 length, u32 crc, payload, u32 crc
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                for steps in scalars.values():
                    for s in [s for s in steps if s >= event.step]:
                        del steps[s]
            for v in (v for v in event.summary.value if v.WhichOneof("value") == "simple_value"):
                steps = scalars.setdefault(v.tag, {})
                assert event.step not in steps, f"{v.tag}: step {event.step} logged twice"
                steps[event.step] = v.simple_value
    return scalars
