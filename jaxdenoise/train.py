"""The training loop: the one place that decides when to log, evaluate and checkpoint.

``train_and_evaluate(config, workdir)``: data -> mesh and shardings -> state (fresh or restored from the
latest checkpoint) -> compile -> loop. A run lives in one workdir::

    config.json          the config used (JSON)
    metrics.jsonl        one object per train log point ("kind": "train") and per evaluation ("kind": "eval")
    tb/                  TensorBoard events (scalars, and a clean | noisy | denoised grid per evaluation)
    grid.png             the latest grid
    psnr_per_epoch.png, mse_per_epoch.png   validation curves (the paper's Figs. 7 and 8), at the end
    checkpoints/         orbax: latest and best (by validation PSNR)

Rerunning the same command resumes from the latest checkpoint (state, rng, data-iterator position).
SIGTERM / Ctrl-C finish the current step, save a checkpoint and raise ``Interrupted``.

Several processes (``parallel.initialize``): every process runs this loop on its rows of each global
batch; process 0 alone holds the workdir lock and writes config.json, metrics.jsonl, TensorBoard, plots and
the grid (the others' writers are off); all take part in checkpoint saves and restores. SIGTERM to any
process stops all of them at the same step (JAX's preemption sync point), with one checkpoint.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdenoise import checkpointing, config as config_lib, errors, fsutil, layout, metrics as metrics_lib
from jaxdenoise import model_card, models, noise as noise_lib, parallel, plots, run_io, steps, validation, zoo
from jaxdenoise.data import data_dirs, feed, loader, store
from jaxdenoise.inference import exported


# the errors a run stops with (one-line messages), importable from here as before
TrainingDiverged, TrainingStalled, Interrupted = errors.TrainingDiverged, errors.TrainingStalled, errors.Interrupted
DiskFull, WorkdirBusy = errors.DiskFull, errors.WorkdirBusy
STALL_STEPS = 10  # this many steps in a row with a gradient of exactly zero: the model cannot learn any more


def log(msg: str) -> None:
    """Progress for the user, from process 0 only (the others would repeat it)."""
    if parallel.is_main():
        print(msg, flush=True)


# ----------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
    """Train (or resume) the configured model in ``workdir``; returns the final validation metrics.

    Nothing is written before the config is validated, the workdir locked (``errors.WorkdirBusy``) and the
    rerun checked against the saved config.json; config.json is written once the data checks pass. A full
    disk anywhere ends the run with ``errors.DiskFull`` (one line, naming the last good checkpoint).
    """
    config_lib.validate(config)
    wd = run_io.Workdir(workdir, primary=parallel.is_main())
    parallel.main_first(wd.__enter__, f"opening workdir {workdir}")  # process 0 creates and locks it
    try:
        with run_io.DiskWatch() as disk:
            try:
                return _run(config, wd, disk)
            except Exception as e:
                if not (disk.full or fsutil.is_disk_full(e)):
                    raise
                disk.full = True  # keeps the hooks quiet for the echoes still to come (TensorBoard's exit flush)
                done = checkpointing.step_dirs(wd.file(layout.CHECKPOINTS_DIR))
                last = f"last good checkpoint step {done[-1]}" if done else "no checkpoint was saved yet"
                raise errors.DiskFull(f"no space left on {wd.path}; {last} (free some space, then rerun the "
                                      f"same command to resume)") from None
    finally:
        wd.__exit__(None, None, None)


def _run(config: ml_collections.ConfigDict, wd: run_io.Workdir, disk: run_io.DiskWatch) -> Dict[str, float]:
    """Every check first (config against the saved one, init_from, data, devices, micro-batches): a refused
    run writes nothing. Then config.json, the checkpoint manager and the loop."""
    ckpt_dir = wd.file(layout.CHECKPOINTS_DIR)
    resuming = bool(checkpointing.step_dirs(ckpt_dir))
    if config.init_from and not resuming:
        _check_init_from(config)

    def check_and_prepare():  # process 0 first: it prepares a missing store, the others then open it
        changes = wd.check_config(config, resuming)
        _check_data_paths(config, wd.path)
        return changes, feed.resolve_stores(config, wd.path), feed.resolve_val_store(config, wd.path)
    changes, store_paths, val_path = parallel.main_first(check_and_prepare,
                                                         "checking the config and preparing the data")
    data, mesh = _open_data(config, store_paths, val_path), _make_mesh(config)
    repl = parallel.replicated(mesh)
    # ---- model, optimiser, state, data iterator (each may still refuse the config)
    model = models.create(config.model, config.dtype)
    tx = steps.make_optimizer(config, data.total_steps)
    train_step, batch_sharding, chunks = parallel.jit_train_step(config, model, tx, noise_lib.parse(config.noise),
                                                                  mesh, data.size, data.total_steps)
    init, init_rng = checkpointing.make_init(model, tx, config.seed, ema=config.ema_decay > 0)
    abstract = checkpointing.abstract_like(jax.eval_shape(init, init_rng), repl)
    data_iter = _data_iterator(config, data, batch_sharding)
    start = _start(config, ckpt_dir, resuming, abstract)  # restored before config.json is rewritten

    wd.accept_config(config)  # process 0 writes it: from here on the workdir is a run
    ckpt = start.ckpt or checkpointing.Checkpointer(ckpt_dir)
    writer = None
    try:
        state, rng, step = _initial_state(start, init, init_rng, repl, data_iter)
        if start.origin:
            log(f"{start.origin} (step {step} of {data.total_steps})")
        n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
        log(_summary(config, n_params, mesh, data, ", ".join(store_paths), chunks))
        writer = run_io.MetricWriter(wd.path, start_step=step, enabled=parallel.is_main())
        if changes:  # said, and kept as a "config" row of metrics.jsonl
            log("changed since the last run: " + ", ".join(f"{f} {a} -> {b}" for f, a, b in changes))
            writer.write({"kind": "config", "step": step, "changed": {f: [a, b] for f, a, b in changes}}, "config")
        evaluator = validation.Evaluator(data.val, model, noise_lib.parse(config.eval_noise or config.noise),
                                         config.eval_batch_size, config.eval_seed, mesh, config.num_grid_images)
        if step >= data.total_steps:
            log(f"nothing to train: the run is complete at step {step} (raise num_epochs to continue)")
            result = _final_eval(evaluator, state, step, data.steps_per_epoch)
        else:
            ckpt_bytes = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(abstract))
            run = Loop(config, wd.path, ckpt, evaluator, writer, disk, data.steps_per_epoch, data.total_steps,
                       config.steps_per_call, ckpt_bytes)
            result = _loop(run, state, rng, data_iter, train_step, batch_sharding)
    except BaseException:
        _close_quietly(ckpt, writer)
        raise
    ckpt.wait()
    ckpt.close()
    writer.close()
    if parallel.is_main():  # what the model is and how good it is, for a person (and as JSON)
        _write_card(wd.path, config, model, n_params, data, store_paths, start.parent_card)
    if disk.full:  # a background writer (TensorBoard) failed after the loop's last check
        raise OSError(errno.ENOSPC, "No space left on device", wd.path)
    return result


def _close_quietly(*closables) -> None:
    """Close what a failed run opened: the error in flight is the one to report, and cleaning up may fail the
    same way (a full disk), so failures here are dropped."""
    for c in closables:
        try:
            c is not None and c.close()
        except Exception:
            pass


def _write_card(workdir: str, config, model, n_params: int, data: "_Data", store_paths: List[str],
                parent: Optional[dict]) -> None:
    """The run's model card (``model_card``); a card that cannot be written is a warning, not a lost run."""
    try:
        model_card.write_after_training(workdir, model_card.facts(
            workdir, config, n_params, model, (data.train.shape[0], data.val.shape[0]), store_paths, parent=parent))
    except OSError as e:
        log(f"warning: model card not written: {fsutil.describe(e)}")


@dataclasses.dataclass(frozen=True)
class _Data:
    """A run's images and the step counts they give."""
    train: object           # store.Images or RaggedImages: the training images
    val: object             # the validation images (``[N, size, size, C]`` crops of full-size photos)
    size: int               # side of the training batches
    steps_per_epoch: int
    total_steps: int


def _open_data(config, store_paths: List[str], val_path: Optional[str]) -> _Data:
    """The training and validation images of the prepared stores; ValueError when they cannot make a run.
    With a ``data.val_dir`` the training folders are trained on whole and that folder validates."""
    train_images = store.open_splits(store_paths, "all" if val_path else "train")
    val_images = store.open_splits(val_path, "all") if val_path else store.open_splits(store_paths, "val")
    _check_validation(config, val_images)
    if isinstance(val_images, store.RaggedImages):  # full-size store: validate on central size x size crops
        val_images = val_images.center_crops(config.data.size)
    spe = config.steps_per_epoch or train_images.shape[0] // config.batch_size
    if spe == 0:
        raise ValueError(f"config: the training split ({train_images.shape[0]} images) is smaller than one batch "
                         f"of {config.batch_size}")
    if spe % config.steps_per_call:
        raise ValueError(f"config: steps_per_call={config.steps_per_call} must divide the steps per epoch ({spe})")
    return _Data(train_images, val_images, config.data.patch or train_images.shape[1], spe, config.num_epochs * spe)


def _make_mesh(config):
    """The device mesh, once the batch is known to split over it."""
    mesh = parallel.make_mesh()
    parallel.check_batch("batch_size", config.batch_size, mesh)
    if config.data.device_resident and mesh.devices.size > 1:
        raise ValueError(f"config: data.device_resident copies the whole training split to the device and needs "
                         f"exactly one; this run has {mesh.devices.size} devices: turn it off (the grain loader "
                         f"feeds each device only its rows)")
    return mesh


def _data_iterator(config, data: _Data, batch_sharding):
    """The training batches: the grain loader (this process's rows), or the split kept on the one device."""
    d = config.data
    if d.device_resident:
        return feed.DeviceResidentBatches(data.train, config.batch_size, config.seed, batch_sharding,
                                          config.steps_per_call)
    return iter(loader.make_loader(
        data.train, config.batch_size, config.seed, data.total_steps, shard=parallel.process_shard(), flips=d.flips,
        rot90=d.rot90, channels=d.channels, patch=d.patch, num_threads=d.num_threads, prefetch=d.prefetch,
        fixed=config.get("noise_fixed", False)))


@dataclasses.dataclass(frozen=True)
class _Start:
    """Where a run starts: its own latest checkpoint (resuming), another run's (``init_from`` a workdir), an
    exported model's weights (``init_from`` a zoo name or ``.jaxdn``), or nothing (a fresh state)."""
    ckpt: Optional[checkpointing.Checkpointer] = None   # this run's, opened to resume
    tree: Optional[dict] = None                         # the restored state tree
    data_state: Optional[dict] = None                   # the restored data position
    origin: Optional[str] = None                        # said in the log
    init_weights: Optional[dict] = None                 # an exported model's parameters
    parent_card: Optional[dict] = None                  # that model's card: the lineage the new card continues


def _start(config, ckpt_dir: str, resuming: bool, abstract) -> _Start:
    """Restore what the run starts from; a run that cannot resume fails here and changes nothing."""
    weights_path = _weights_file(config) if config.init_from else None
    parent_card = exported.read_card(weights_path) if weights_path else None
    if resuming:
        ckpt = checkpointing.Checkpointer(ckpt_dir)
        try:
            step, tree, data_state = ckpt.restore_intact(abstract, "latest", with_data=True, log=log)
        except BaseException:
            ckpt.close()
            raise
        return _Start(ckpt, tree, data_state, f"resumed from {ckpt.directory}/{step}", parent_card=parent_card)
    if weights_path:  # weights only: optimiser, EMA, step and data start fresh
        return _Start(origin=f"started from the weights of {config.init_from} ({weights_path}; optimiser, EMA and "
                             f"step fresh)", init_weights=exported.read_params(weights_path), parent_card=parent_card)
    if config.init_from:
        tree, data_state, origin = _restore_init_from(config, abstract)
        return _Start(tree=tree, data_state=data_state, origin=origin)
    return _Start()


def _initial_state(start: _Start, init, init_rng, sharding, data_iter):
    """(train state, rng, step) the loop starts from; the data iterator set to the restored position."""
    tree = start.tree
    if tree is None:
        tree = jax.jit(init, out_shardings=sharding)(init_rng)
        if start.init_weights is not None:
            tree = dict(tree, train_state=_with_weights(tree["train_state"], start.init_weights, sharding))
    state, rng = tree["train_state"], tree["rng"]
    step = int(state.step)
    if start.data_state is not None:
        data_iter.set_state(_data_position(start.data_state, step))
    return state, rng, step


def _check_data_paths(config, workdir: str) -> None:
    """Where the run writes data: a workdir (or data cache) inside the raw image folder would put the run's
    files among its images; a data cache inside another run or a checkpoint would write among its files."""
    from jaxdenoise import outputs
    d = config.data
    if d.cache_dir:
        inside = outputs.protected(d.cache_dir)
        if inside:
            raise ValueError(f"config: data.cache_dir={d.cache_dir!r} {inside}: choose a folder outside it")
    if d.source != "dir":
        return
    folders = [("data.dir", f) for f in data_dirs(d.dir)] + ([("data.val_dir", d.val_dir)]
                                                                       if d.get("val_dir") else [])
    for name, folder in folders:
        if not os.path.isdir(folder):
            continue
        for field, path in (("--workdir", workdir), ("data.cache_dir", d.cache_dir)):
            if path and fsutil.is_within(path, folder):
                raise ValueError(f"config: {field} {path} lies inside {name}={folder!r}, the images this run "
                                 f"reads: choose a folder outside it")


def _check_validation(config, val_images) -> None:
    """What the validation images can score: real pairs (6 channels) carry their own noise (eval noise
    'none'); clean images need synthetic eval noise; a run trained on noisy photos alone (noise 'none'
    without pairs) has no clean image of its own and needs a data.val_dir of real pairs."""
    spec = config.eval_noise or config.noise
    if val_images.shape[-1] == 6 and spec != "none":
        raise ValueError(f"config: data.val_dir={config.data.val_dir!r} holds real noisy/clean pairs: their noise is "
                         f"the shots' own, set eval_noise='none' (got {spec!r})")
    if val_images.shape[-1] == 3 and spec == "none":
        raise ValueError("config: eval_noise='none' scores the validation images as they are, but they are clean "
                         "images: " + ("give data.val_dir a folder of real pairs (clean/ and noisy/)"
                                       if config.data.get("val_dir") else "set a synthetic eval_noise"))


# Fields whose values decide the shape of the optimiser state (and the EMA) that init_from carries over
OPTIMISER_FIELDS = ("optimizer", "momentum", "schedule", "warmup_steps", "grad_clip", "ema_decay")


def _weights_file(config) -> Optional[str]:
    """The exported file whose weights ``config.init_from`` starts from (``zoo:NAME``, or a ``.jaxdn`` path),
    or None when it names a training workdir (whose whole state, optimiser and data position too, carries over)."""
    spec = config.init_from
    if spec.startswith("zoo:"):
        try:
            return zoo.path(spec[len("zoo:"):])
        except ValueError as e:
            raise ValueError(f"init_from={spec!r}: {e}") from None
    return spec if spec.endswith(".jaxdn") else None


def _check_init_weights(config, path: str, head: str) -> None:
    """Refuse an exported file that cannot start this run: missing, not one, without weights, another model."""
    if not os.path.isfile(path):
        raise ValueError(f"{head}: {path} " + ("is a folder" if os.path.isdir(path) else "does not exist"))
    header, _ = exported.read(path)
    exported.read_params(path)
    norm = lambda d: json.loads(json.dumps(dict(d), default=list))
    theirs, mine = norm(header.get("model_config", {})), norm(config.model.to_dict())
    diff = [f"model.{k} {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in sorted(set(theirs) | set(mine))
            if theirs.get(k) != mine.get(k)]
    if diff:
        raise ValueError(f"{head}: that model differs from this config's ({'; '.join(diff)}): set the same model "
                         f"fields to start from its weights")


def _check_init_from(config) -> None:
    """Refuse an init_from that cannot start this run, in one line naming the field, before anything is written:
    a missing or non-run folder, no checkpoint, a step that is not there, another model, another optimiser;
    for an exported file (``zoo:NAME``, ``.jaxdn``), one without weights or of another model."""
    src, which = checkpointing.parse_source(config.init_from)
    head = f"init_from={config.init_from!r}"
    weights = _weights_file(config)
    if weights is not None:
        return _check_init_weights(config, weights, head)
    if not os.path.isdir(src):
        raise ValueError(f"{head}: {src} " + ("is a file" if os.path.exists(src) else "does not exist") +
                         " (give a training workdir, optionally with :STEP, :best or :latest)")
    try:
        saved = checkpointing.read_run_config(src)
    except checkpointing.CheckpointError as e:
        raise ValueError(f"{head}: {e}") from None
    done = checkpointing.step_dirs(os.path.join(src, layout.CHECKPOINTS_DIR))
    if not done:
        raise ValueError(f"{head}: {src} has no checkpoint yet")
    if which not in ("best", "latest") and int(which) not in done:
        raise ValueError(f"{head}: no checkpoint at step {which} in {src}; saved steps: {done}")
    fixed, _ = config_lib.resume_changes(saved, config)
    models_differ = [f for f, _, _ in fixed if f.startswith("model.")]
    if models_differ:
        raise ValueError(f"{head}: that run's model differs ({', '.join(models_differ)})")
    saved = config_lib.with_defaults(saved)  # a config.json from before a field existed has its default
    src_tx = steps.make_optimizer(saved, 1)
    mine = jax.eval_shape(checkpointing.make_init(models.create(config.model), steps.make_optimizer(config, 1),
                                                  0, ema=config.ema_decay > 0)[0], jax.random.PRNGKey(0))
    theirs = jax.eval_shape(checkpointing.make_init(models.create(config.model), src_tx, 0,
                                                    ema=saved.get("ema_decay", 0.0) > 0)[0], jax.random.PRNGKey(0))
    if jax.tree.structure(mine) != jax.tree.structure(theirs):
        old = config_lib.flatten(saved)
        diff = [f"{f} {run_io.short(old[f])} -> {run_io.short(config[f])}" for f in OPTIMISER_FIELDS if old[f] != config[f]]
        raise ValueError(f"{head}: that run's optimiser state does not fit this config "
                         f"({', '.join(diff) or 'optimiser settings'}); init_from carries the optimiser state over: "
                         f"use that run's values for these fields")


def _with_weights(state, weights, sharding):
    """``state`` with its parameters (and its EMA, when kept) set to ``weights`` (a nested dict of arrays of the
    same tree and shapes, ``exported.read_params``), placed as ``sharding``."""
    from flax import serialization
    params = serialization.from_state_dict(state.params, weights)
    params = jax.tree.map(lambda w, p: jax.device_put(jnp.asarray(w, p.dtype), sharding), params, state.params)
    ema = None if state.ema is None else jax.tree.map(jnp.copy, params)
    return state.replace(params=params, ema=ema)


def _restore_init_from(config, abstract):
    """(tree, data state, origin) of the checkpoint init_from names (``_check_init_from`` passed)."""
    src, which = checkpointing.parse_source(config.init_from)
    source = checkpointing.Checkpointer(os.path.join(src, layout.CHECKPOINTS_DIR), read_only=True)
    try:
        step, tree, data = source.restore_intact(abstract, which, with_data=True, log=log)
    except checkpointing.CheckpointError as e:
        raise checkpointing.CheckpointError(f"init_from={config.init_from!r}: {e}") from None
    finally:
        source.close()
    return tree, data, f"started from {source.directory}/{step} (init_from)"


PROCESS_COUNT_KEY = "process_count"  # saved beside the grain iterator's state: which topology wrote it


def _data_position(data_state: dict, step: int) -> dict:
    """The iterator state to resume from, without our ``process_count`` note.

    The saved position is the index of the next *global* batch, the same on every process (each reads its
    rows of that batch), so it holds for any process count: a checkpoint written by 2 processes resumes in 1
    (or 1 in 2) at exactly the next batch, with a one-line note.
    """
    data_state = dict(data_state)
    saved = data_state.pop(PROCESS_COUNT_KEY, None)
    if saved is not None and int(saved) != jax.process_count():
        log(f"note: the checkpoint at step {step} was written by {saved} process(es), this run has "
            f"{jax.process_count()}: the data position is the global batch index, so the run continues at "
            f"exactly the next batch")
    return data_state


def _summary(config, n_params: int, mesh, data: _Data, store_path: str, chunks: int) -> str:
    dev = mesh.devices.flat[0]
    procs = f" in {jax.process_count()} processes" if parallel.multi_process() else ""
    return "\n".join([
        f"jaxdenoise: model={config.model.name} ({n_params:,} params, {config.dtype}), noise={config.noise} "
        f"({config_lib.noise_setting(config)}), target={config.get('target', 'clean')}, "
        f"{config.optimizer} lr={config.learning_rate:g} ({config.schedule})"
        + (f" weight_decay={config.weight_decay:g}" if config.weight_decay else "")
        + f", loss={config.loss}, batch={config.batch_size}"
        + (f" (gradient in {chunks} micro-batches)" if chunks > 1 else ""),
        f"  devices: {mesh.devices.size} x {dev.platform} ({dev.device_kind}){procs}; data: {data.train.shape[0]} train / {data.val.shape[0]} val "
        f"images from {store_path}",
        f"  {config.num_epochs} epochs x {data.steps_per_epoch} steps = {data.total_steps} steps; eval every {config.eval_every_epochs} "
        f"epoch(s); PSNR/SSIM: {metrics_lib.CONVENTION}",
    ])


def _retry_hint(ckpt: checkpointing.Checkpointer, workdir: str) -> str:
    """How to go on from the last good checkpoint with other settings (this workdir's settings are fixed)."""
    done = ckpt.finished_steps()
    if not done:
        return "no checkpoint was saved: start again with a lower learning_rate (or set grad_clip)"
    return (f"the last good checkpoint is step {done[-1]} in {ckpt.directory}; to retry from it with other "
            f"settings, start a new --workdir with --config.init_from={workdir}:{done[-1]} and a lower "
            f"--config.learning_rate (or --config.grad_clip)")


class TrainLog:
    """Train metrics between log points: kept on device, fetched at ``flush`` (the loop's only blocking
    point), checked (NaN/inf: ``TrainingDiverged``; an exactly zero gradient for ``STALL_STEPS`` steps in a
    row: ``TrainingStalled``), averaged into one row of metrics.jsonl, with images/s over the window."""

    def __init__(self, writer: run_io.MetricWriter, spe: int, hint: Callable[[], str], setting: str = ""):
        self.writer, self.spe, self.hint, self.setting = writer, spe, hint, setting
        self.pending: List[Tuple[int, Dict[str, jax.Array]]] = []
        self.t, self.images, self.zero_steps = time.perf_counter(), 0, 0

    def add(self, step: int, metrics: Dict[str, jax.Array], images: int) -> None:
        self.pending.append((step, metrics))
        self.images += images

    def flush(self) -> Optional[Dict[str, float]]:
        if not self.pending:
            return None
        host = jax.device_get([m for _, m in self.pending])
        rows = []
        for (end, _), m in zip(self.pending, host):
            m = {key: np.atleast_1d(np.asarray(v, np.float64)) for key, v in m.items()}
            for i in range(len(m["loss"])):
                s = end - len(m["loss"]) + i + 1
                loss, gnorm = m["loss"][i], m["grad_norm"][i]
                if not (np.isfinite(loss) and np.isfinite(gnorm)):
                    raise TrainingDiverged(f"training diverged at step {s}: loss={loss}, grad_norm={gnorm}; "
                                           f"{self.hint()}")
                self.zero_steps = self.zero_steps + 1 if gnorm == 0.0 else 0
                if self.zero_steps >= STALL_STEPS:
                    raise TrainingStalled(
                        f"training stalled at step {s}: the gradient was exactly zero for {self.zero_steps} steps in "
                        f"a row (saturated or dead units, typically from a too-large learning rate), so the model "
                        f"can no longer learn; {self.hint()}")
                rows.append({key: float(v[i]) for key, v in m.items()})
        end = self.pending[-1][0]
        self.pending.clear()
        now = time.perf_counter()
        ips = self.images / max(now - self.t, 1e-9)
        self.t, self.images = now, 0
        row = {"kind": "train", "step": end, "epoch": round(end / self.spe, 4),
               **{key: float(np.mean([r[key] for r in rows])) for key in rows[0]}, "img_per_s": round(ips, 2),
               **({"noise_setting": self.setting} if self.setting else {})}
        self.writer.write(row, "train")
        return row


def _ensure_space(path: str, need: int) -> None:
    """OSError(ENOSPC) before a checkpoint is started that cannot fit: a failed save half-way costs more
    (background-thread errors, a partial step to clean) than stopping cleanly now."""
    free = shutil.disk_usage(path).free
    if free < need:
        raise OSError(errno.ENOSPC, f"No space left on device ({free // 1024} KiB free, a checkpoint needs "
                                    f"~{need // 1024} KiB)", path)


def due(step: int, every: int, k: int = 1) -> bool:
    """True when a cadence of ``every`` steps fell within the last ``k`` steps ending at ``step``."""
    return every > 0 and step % every < k


@dataclasses.dataclass
class Loop:
    """What the training loop works with (set up once by ``_run``) and what it carries from step to step:
    the last step saved and the last validation. The loop reads top to bottom; each periodic action asks
    ``Loop.due`` one question."""
    config: ml_collections.ConfigDict
    workdir: str
    ckpt: checkpointing.Checkpointer
    evaluator: validation.Evaluator
    writer: run_io.MetricWriter
    disk: run_io.DiskWatch
    steps_per_epoch: int
    total_steps: int
    steps_per_call: int
    ckpt_bytes: int         # the state's size: the free space a save needs
    last_saved: int = 0
    last_eval: Dict[str, float] = dataclasses.field(default_factory=dict)

    def due(self, step: int, stopping: bool) -> Dict[str, bool]:
        """The periodic actions due after ``step`` (``stopping``: a signal or a preemption notice came):
        log a row every ``log_every_steps``, at each epoch's end and at the end; validate every
        ``eval_every_epochs`` epochs and at the end; save with each validation, ``checkpoint_every_steps``
        after the last save, when stopping and at the end."""
        c, spe, end = self.config, self.steps_per_epoch, step >= self.total_steps
        epoch_end = step % spe == 0
        evaluate = epoch_end and (due(step // spe, c.eval_every_epochs) or end)
        every = c.checkpoint_every_steps
        save = evaluate or stopping or (end and self.last_saved != step) or bool(every and step - self.last_saved >= every)
        return {"log": due(step, c.log_every_steps, self.steps_per_call) or epoch_end or stopping or end,
                "evaluate": evaluate, "save": save, "end": end}


# Over 60 lines: the loop reads top to bottom (big_vision's train loop is the model); its parts are named helpers.
def _loop(run: Loop, state, rng, data_iter, jitted, batch_sharding) -> Dict[str, float]:
    """Train from ``state`` to ``run.total_steps``: steps, then the actions due (``Loop.due``); returns the last
    validation. A signal saves and raises ``Interrupted``; the run's end plots the curves."""
    from tqdm import tqdm

    config, k = run.config, run.steps_per_call
    step = run.last_saved = int(state.step)
    prefetch = data_iter if isinstance(data_iter, feed.DeviceResidentBatches) else feed.DevicePrefetcher(
        data_iter, batch_sharding, k)
    batch, data_state = next(prefetch)
    log("compiling the train step...")
    t0 = time.perf_counter()
    compiled = jitted.lower(state, batch, rng).compile()
    log(f"compiled in {time.perf_counter() - t0:.1f} s")
    # a bar on a terminal; in a batch job's log (not a terminal) one line per log point instead
    bar = tqdm(total=run.total_steps, initial=step, unit="step", dynamic_ncols=True, file=sys.stdout,
               mininterval=1.0, disable=None if parallel.is_main() else True)
    setting = config_lib.noise_setting(config)
    train_log = TrainLog(run.writer, run.steps_per_epoch, lambda: _retry_hint(run.ckpt, run.workdir), setting)
    # several processes: SIGTERM is JAX's preemption notice (every process stops at the same step), so the
    # flag takes only Ctrl-C there
    signals = (signal.SIGINT,) if parallel.multi_process() else (signal.SIGTERM, signal.SIGINT)
    with run_io.StopFlag(signals) as stop:
        while True:
            state, m = compiled(state, batch, rng)
            step += k
            train_log.add(step, m, k * config.batch_size)
            bar.update(k)
            if parallel.preemption_point(step) and not stop.signum:
                stop.signum, stop.preempted = signal.SIGTERM, True
            if run.disk.full:  # a background write (orbax, TensorBoard) found the disk full
                raise OSError(errno.ENOSPC, "No space left on device", run.workdir)
            stopping = bool(stop.signum)  # read once: a signal arriving from here on is the next step's
            now = run.due(step, stopping)
            if now["log"] or now["save"]:  # never save parameters whose metrics were not checked
                _log_row(train_log, bar, config, run.total_steps)
            if now["evaluate"]:
                run.last_eval = _evaluate(run.evaluator, state, step, step // run.steps_per_epoch, run.writer,
                                          run.workdir, bar, setting)
            if now["save"]:
                _save(run, step, state, rng, data_state,
                      {"psnr": run.last_eval["psnr"]} if now["evaluate"] else None)
            if stopping:  # saved above
                bar.close()
                run.ckpt.wait()
                why = (f"a preemption notice (SIGTERM to one of the {jax.process_count()} processes)"
                       if stop.preempted else signal.Signals(stop.signum).name)
                raise Interrupted(f"stopped by {why} after step {step}; checkpoint saved in {run.ckpt.directory}/"
                                  f"{step}; rerun the same command to resume")
            if now["end"]:
                break
            batch, data_state = next(prefetch)
    bar.close()
    run.ckpt.wait()
    paths = plots.plot_curves([run.workdir], run.workdir) if parallel.is_main() else []
    log(f"done: {step} steps. best checkpoint: {run.ckpt.directory}/{run.ckpt.best_step()}; latest: "
        f"{run.ckpt.directory}/{step}")
    log(f"plots: {', '.join(paths)}; grid: {os.path.join(run.workdir, layout.GRID_FILE)}; metrics: {run.writer.path}")
    last = run.last_eval
    if last and last["psnr"] < last["noisy_psnr"]:
        log(f"warning: the final model ({last['psnr']:.2f} dB) is worse than its noisy input "
            f"({last['noisy_psnr']:.2f} dB): it has not learned to denoise this noise")
    return last


def _log_row(train_log: "TrainLog", bar, config, total_steps: int) -> None:
    """Fetch, check and write the metrics since the last row; show them on the bar (or as a log line)."""
    row = train_log.flush()
    if row:
        bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['psnr']:.2f}", img_s=f"{row['img_per_s']:.1f}",
                        refresh=False)
        if parallel.is_main() and bar.disable:
            log(progress_line(row, total_steps, config.batch_size, jax.device_count(),
                              against_input=config.noise == "none" and not config.data.pairs))


def _save(run: Loop, step: int, state, rng, data_state, metrics=None) -> None:
    """Checkpoint ``step`` (the state, the run's rng and the data position) once the disk has room for it."""
    done = run.ckpt.finished_steps()
    size = max(run.ckpt_bytes, run.ckpt.disk_bytes(done[-1]) if done else 0)  # on disk: metadata, whole blocks
    _ensure_space(run.ckpt.directory, size * 5 // 4 + (64 << 10))
    run.ckpt.save(step, {"train_state": state, "rng": rng},
                  dict(data_state, **{PROCESS_COUNT_KEY: jax.process_count()}), metrics=metrics)
    run.last_saved = step


def progress_line(row: Dict[str, float], total_steps: int, batch_size: int, n_dev: int,
                  against_input: bool = False) -> str:
    """One log line for a batch job: step, epoch, loss, PSNR, images/s in all and per device, ETA.
    against_input: training on noisy photos alone, the training PSNR compares the output with its input
    (there is no clean image); the validation lines score against clean references."""
    ips = row["img_per_s"]
    left = (total_steps - row["step"]) * batch_size / ips if ips > 0 else float("inf")
    eta = time.strftime("%H:%M:%S", time.gmtime(left)) if left < 86400 else (
        f"{left / 86400:.1f} d" if np.isfinite(left) else "?")
    return (f"step {row['step']}/{total_steps} (epoch {row['epoch']:.2f}): loss {row['loss']:.5f}, "
            f"PSNR {row['psnr']:.2f} dB{' against the input' if against_input else ''}, {ips:.1f} img/s ({ips / n_dev:.1f} per device), ETA {eta}")


def _evaluate(evaluator: validation.Evaluator, state, step: int, epoch: int, writer: run_io.MetricWriter, workdir: str,
              bar=None, setting: str = "") -> Dict[str, float]:
    t0 = time.perf_counter()
    res = validation.scores(evaluator, state)
    row = {"kind": "eval", "step": step, "epoch": epoch, **{k: float(v) for k, v in res.items()},
           "eval_s": round(time.perf_counter() - t0, 2), **({"noise_setting": setting} if setting else {})}
    writer.write(row, "val")
    grid = evaluator.grid(steps.eval_params(state))  # all processes: the grid is computed on the mesh
    if parallel.is_main():
        plots.save_png(grid, os.path.join(workdir, layout.GRID_FILE))
    writer.image("val/clean_noisy_denoised", grid, step)
    ema = f" (EMA; raw weights {res['raw_psnr']:.2f})" if "raw_psnr" in res else ""
    msg = (f"epoch {epoch} (step {step}): val PSNR {res['psnr']:.2f} dB{ema} (noisy {res['noisy_psnr']:.2f}), "
           f"SSIM {res['ssim']:.4f} (noisy {res['noisy_ssim']:.4f}), MSE {res['mse']:.6f} "
           f"[{evaluator.images.shape[0]} images, {metrics_lib.CONVENTION}]")
    if res["psnr"] < res["noisy_psnr"]:
        msg += f"\nwarning: at epoch {epoch} the model is worse than its noisy input ({res['psnr']:.2f} < " \
               f"{res['noisy_psnr']:.2f} dB)"
    if parallel.is_main():
        (bar.write if bar is not None else log)(msg)
    return row


def _final_eval(evaluator, state, step, spe) -> Dict[str, float]:
    res = validation.scores(evaluator, state)
    log(f"validation at step {step}: PSNR {res['psnr']:.2f} dB (noisy {res['noisy_psnr']:.2f}), "
        f"SSIM {res['ssim']:.4f}, MSE {res['mse']:.6f} [{metrics_lib.CONVENTION}]")
    return {"step": step, "epoch": step // spe, **res}
