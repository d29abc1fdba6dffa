"""orbax checkpoints of a run: ``WORKDIR/checkpoints/<step>/{state,data}``, each sealed with checksums.

Each checkpoint holds the train state (params, optimiser state, step), the run's rng and the grain
iterator state, so a rerun continues bit for bit. Retention keeps both the latest checkpoint (resume) and
the best by validation PSNR (use): a ``best_fn`` with ``max_to_keep`` alone would keep the two best and
delete the latest, so we use a preservation policy ``LatestN(1) | BestN(1)`` and keep ``best_fn`` for
``best_step()``. Saves are asynchronous; ``wait`` blocks until the last one is on disk.

Integrity: once orbax has finished a step, we write ``<step>/INTEGRITY`` (size and SHA-256 of every file
in the step). ``restore_intact`` checks it before restoring, checks that the restored arrays are finite,
and falls back to the newest intact step, naming each damaged one in one line. A step without the file
(a crash between orbax's commit and our seal, or a checkpoint from before this file existed) is
"unverified": it is used when it restores and is finite. Damaged steps are moved to
``WORKDIR/checkpoints.damaged/<step>`` by a training run (never deleted: they are evidence), so that the
run can save that step again; evaluation only skips them. Stale ``*.orbax-checkpoint-tmp*`` folders from
an interrupted save are removed when a training run opens the directory.

Several processes: every process calls ``save``/``restore`` (orbax coordinates them; replicated arrays are
written once); process 0 alone seals steps and moves damaged ones aside, the others wait for it there.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from jaxdenoise import config as config_lib, fsutil, layout, models, parallel, run_io, steps

BEST_METRIC = "psnr"
INTEGRITY_FILE = "INTEGRITY"


class CheckpointError(ValueError):
    """A missing, damaged or incompatible checkpoint; the message is one line."""


class _QuietOrbax(logging.Filter):
    """Warnings orbax gives for what we do on purpose: 'Requested `tracked_metric`; did not provide metrics.'
    on every save without metrics (our periodic saves have none: ``BestN`` keeps the best evaluation save),
    and two lines on every read-only manager (evaluation, denoising)."""
    EXPECTED = ("did not provide metrics", "Given directory is read only", "read_only=True, setting")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.EXPECTED)


logging.getLogger("absl").addFilter(_QuietOrbax())


def _best(metrics) -> float:
    return float(metrics[BEST_METRIC])


def step_dirs(directory: str) -> List[int]:
    """Steps with a finished checkpoint folder on disk (orbax renames a step into place when done)."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def _file_digests(folder: str) -> Dict[str, List]:
    """relpath -> [size, sha256] of every file of a step except the integrity file itself."""
    return {rel: list(d) for rel, d in fsutil.tree_digests(folder).items() if rel != INTEGRITY_FILE}


def seal(step_dir: str) -> None:
    """Write ``INTEGRITY`` (sizes and checksums of the finished step's files) atomically."""
    record = {"version": 1, "files": _file_digests(step_dir)}
    fsutil.atomic_write(os.path.join(step_dir, INTEGRITY_FILE), json.dumps(record, indent=0) + "\n")


def verify(step_dir: str) -> Tuple[Optional[str], bool]:
    """(reason the step is damaged or None, whether it could be verified at all)."""
    path = os.path.join(step_dir, INTEGRITY_FILE)
    if not os.path.isfile(path):
        return None, False
    try:
        with open(path) as f:
            want = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable {INTEGRITY_FILE} ({fsutil.first_line(e)})", True
    try:
        have = _file_digests(step_dir)
    except OSError as e:
        return f"unreadable file ({fsutil.describe(e)})", True
    for rel, (size, digest) in sorted(want.items()):
        if rel not in have:
            return f"missing file {rel}", True
        if have[rel][0] != size:
            return f"{rel} has {have[rel][0]} bytes, {size} were written", True
        if have[rel][1] != digest:
            return f"{rel} changed since it was written (checksum mismatch)", True
    return None, True


def all_finite(tree: Any) -> bool:
    """True when every floating-point leaf of ``tree`` is finite (one device fetch per leaf)."""
    for leaf in jax.tree.leaves(tree):
        if np.issubdtype(np.dtype(leaf.dtype), np.floating) and not bool(jax.numpy.isfinite(leaf).all()):
            return False
    return True


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` with our retention, item layout and integrity seals."""

    def __init__(self, directory: str, *, read_only: bool = False, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.read_only = read_only
        policy = pp.AnyPreservationPolicy([
            pp.LatestN(n=1),
            pp.BestN(get_metric_fn=_best, reverse=False, n=1, keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            best_fn=_best, best_mode="max", preservation_policy=policy, create=not read_only,
            read_only=read_only, enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))
        self._unsealed: List[int] = []

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def best_step(self) -> Optional[int]:
        return self.manager.best_step()

    def all_steps(self):
        return list(self.manager.all_steps())

    def finished_steps(self) -> List[int]:
        """Steps whose folders are on disk now (unlike orbax's list, which includes a save in flight)."""
        return step_dirs(self.directory)

    def disk_bytes(self, step: int) -> int:
        """Disk space a finished step takes (allocated blocks: small files cost a whole block each)."""
        total = 0
        for root, _, files in os.walk(os.path.join(self.directory, str(step))):
            for name in files:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
        return total

    def save(self, step: int, state: Any, data_state: Optional[dict] = None,
             metrics: Optional[dict] = None) -> bool:
        """Save asynchronously (returns once device arrays are copied). ``metrics`` marks an eval checkpoint.

        data_state: the grain iterator's state (``iterator.get_state()``) matching ``state``'s step. The
        previous save is finished and sealed first (orbax would wait for it here anyway).
        """
        self.wait()
        items = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(data_state)
        saved = self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
        if saved:
            self._unsealed.append(step)
        return saved

    def wait(self) -> None:
        """Block until the last save is on disk, then seal it. Raises the save's error, if it had one."""
        self.manager.wait_until_finished()
        self.manager.check_for_errors()
        pending, self._unsealed = self._unsealed, []
        if jax.process_index() != 0:  # one writer of the seals
            return
        for step in pending:
            step_dir = os.path.join(self.directory, str(step))
            if os.path.isdir(step_dir):  # retention may already have removed it
                seal(step_dir)

    def restore(self, step: int, abstract_state: Any, with_data: bool = False) -> Tuple[Any, Optional[dict]]:
        """(state restored onto ``abstract_state`` (ShapeDtypeStructs with shardings), data state or None)."""
        run_io.quiet_echoes()  # a failed read is also reported from TensorStore's threads, as it happens
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if with_data:
            items["data"] = ocp.args.JsonRestore()
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except FileNotFoundError as e:
            raise CheckpointError(f"checkpoint {self.directory}/{step} is incomplete ({fsutil.first_line(e)})") from e
        except Exception as e:  # orbax/TensorStore raise many types for unreadable or mismatched data
            why = fsutil.first_line(e).split(". ")[0]  # orbax appends advice about its own API options
            raise CheckpointError(f"checkpoint {self.directory}/{step} cannot be restored onto this model/config "
                                  f"({why})") from e
        return restored["state"], (restored["data"] if with_data else None)

    def restore_intact(self, abstract_state: Any, which: str | int = "latest", with_data: bool = False,
                       log: Callable[[str], None] = print) -> Tuple[int, Any, Optional[dict]]:
        """(step, state, data) of ``which`` ('latest' | 'best' | a step), or of the newest intact step when that
        one is damaged. Each damaged step is reported in one line through ``log``; a training (not read-only)
        Checkpointer moves damaged steps aside once an intact one is found. CheckpointError when none is.
        """
        steps = self.finished_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory} (was the run started? is the path right?)")
        first = resolve_step(self, which)
        # explicit step: that one only; latest/best: then every older step, newest first
        order = [first] if which not in ("latest", "best") else [first] + [s for s in reversed(steps) if s != first]
        damaged: List[Tuple[int, str]] = []
        for step in order:
            step_dir = os.path.join(self.directory, str(step))
            reason, verified = verify(step_dir)
            if reason is None:
                try:
                    state, data = self.restore(step, abstract_state, with_data)
                except CheckpointError as e:
                    if verified:  # the bytes are as written: the config, not the disk, is the problem
                        raise
                    reason = fsutil.first_line(e.__cause__ or e)
                else:
                    if all_finite(state):
                        if damaged:
                            self._set_aside([s for s, _ in damaged])
                        return step, state, data
                    reason = "non-finite values in the restored arrays"
            damaged.append((step, reason))
            nxt = "; trying an earlier one" if step != order[-1] else ""
            log(f"checkpoint {step_dir} is damaged: {reason}{nxt}")
        listed = "; ".join(f"step {s}: {r}" for s, r in damaged)
        raise CheckpointError(f"no intact checkpoint in {self.directory} ({listed})")

    def _set_aside(self, steps: List[int]) -> None:
        """Move damaged steps to ``<directory>.damaged/`` (training only), so these steps can be saved again."""
        if self.read_only:
            return
        parallel.barrier("checkpoint-set-aside-start")  # every process has finished reading the steps
        if jax.process_index() == 0:
            aside = self.directory + ".damaged"
            os.makedirs(aside, exist_ok=True)
            for step in steps:
                dst = os.path.join(aside, f"{step}-{time.strftime('%Y%m%dT%H%M%S')}")
                shutil.move(os.path.join(self.directory, str(step)), dst)
                print(f"moved damaged checkpoint {step} to {dst}", file=sys.stderr, flush=True)
        parallel.barrier("checkpoint-set-aside-done")
        self.manager.reload()

    def close(self) -> None:
        self.manager.close()


def resolve_step(ckpt: Checkpointer, which: str | int) -> int:
    """'best' | 'latest' | a step number -> a step that exists; CheckpointError otherwise."""
    steps = ckpt.all_steps()
    if not steps:
        raise CheckpointError(f"no checkpoint in {ckpt.directory} (was the run started? is the path right?)")
    if which == "latest":
        return ckpt.latest_step()
    if which == "best":
        return ckpt.best_step() if ckpt.best_step() is not None else ckpt.latest_step()
    try:
        step = int(which)
    except (TypeError, ValueError):
        raise CheckpointError(f"--checkpoint must be best, latest or a step number, got {which!r}") from None
    if step not in steps:
        raise CheckpointError(f"no checkpoint at step {step} in {ckpt.directory}; saved steps: {sorted(steps)}")
    return step


def abstract_like(tree: Any, sharding: Optional[jax.sharding.Sharding] = None) -> Any:
    """ShapeDtypeStructs of a pytree (of arrays or ShapeDtypeStructs), with ``sharding`` on every leaf."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


def make_init(model, tx, seed: int, ema: bool = False) -> Tuple[Callable[[], Any], Any]:
    """(init, init_rng): ``init(init_rng)`` builds the tree every checkpoint holds, ``{"train_state", "rng"}``
    (fresh parameters, optimiser state and, with ``ema``, the parameters' EMA; the run's rng for noise).
    Pure: ``jax.eval_shape(init, init_rng)`` gives the abstract tree a restore needs. The parameters do not
    depend on the image size (every model is convolutional): they are built on a small multiple of the
    model's stride."""
    init_rng, run_rng = jax.random.split(jax.random.PRNGKey(seed))
    side = max(16, 2 * model.stride)

    def init(rng):
        return {"train_state": steps.init_state(model, tx, rng, (side, side, 3), ema=ema), "rng": run_rng}
    return init, init_rng


def read_run_config(workdir: str):
    """The config a run saved in ``WORKDIR/config.json`` as a ConfigDict (fields it lacks at their defaults);
    CheckpointError (one line) when it is absent, unreadable or not a run's config."""
    if not os.path.isdir(workdir):
        raise CheckpointError(f"{workdir} " + ("is a file, not a training workdir" if os.path.exists(workdir)
                                               else "does not exist"))
    if not os.path.isfile(os.path.join(workdir, layout.CONFIG_FILE)):
        raise CheckpointError(f"{workdir} is not a training workdir (no {layout.CONFIG_FILE})")
    try:
        return config_lib.with_defaults(run_io.read_saved_config(workdir))
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def parse_source(spec: str) -> Tuple[str, str]:
    """'WORKDIR' or 'WORKDIR:STEP|best|latest' -> (workdir, which); which defaults to 'latest'."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and (tail.isdigit() or tail in ("best", "latest")):
        return head, tail
    return spec, "latest"


def load_state(workdir: str, which: str | int = "best", log: Callable[[str], None] = None,
               sharding: Optional[jax.sharding.Sharding] = None) -> Tuple[Any, Dict, int, Optional[dict]]:
    """(config, {"train_state", "rng"}, step, data state) of a run's checkpoint, restored onto abstract
    shapes built from its saved config; the newest intact step when ``which`` is latest/best and that one
    is damaged. Needs nothing but the workdir; CheckpointError (one line) when the workdir, the checkpoint or
    its compatibility with the saved config is missing.
    """

    config = read_run_config(workdir)
    ckpt_dir = os.path.join(workdir, layout.CHECKPOINTS_DIR)
    try:
        model = models.create(config.model, config.dtype)
    except ValueError as e:
        raise CheckpointError(f"{workdir}/config.json: {e}") from None
    if not step_dirs(ckpt_dir):
        raise CheckpointError(f"no checkpoint in {ckpt_dir} (no checkpoint was saved yet)")
    ckpt = Checkpointer(ckpt_dir, read_only=True)
    try:
        tx = steps.make_optimizer(config, total_steps=1)
        init, init_rng = make_init(model, tx, config.seed, ema=config.get("ema_decay", 0.0) > 0)
        sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = abstract_like(jax.eval_shape(init, init_rng), sharding)
        note = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        step, state, data = ckpt.restore_intact(abstract, which, with_data=True, log=note)
    finally:
        ckpt.close()
    return config, state, step, data


def load_params(workdir: str, which: str | int = "best", with_kind: bool = False):
    """(config, params, step) of a run's checkpoint (see ``load_state``): the EMA of the parameters when the
    run kept one (``ema_decay > 0``), else the raw parameters; ``with_kind`` appends "ema" or "raw"."""
    config, state, step, _ = load_state(workdir, which)
    ts = state["train_state"]
    params, kind = steps.eval_params(ts), ("raw" if ts.ema is None else "ema")
    return (config, params, step, kind) if with_kind else (config, params, step)
