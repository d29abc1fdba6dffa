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
"""
from __future__ import annotations

import collections
import errno
import hashlib
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
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdenoise import checkpointing, config as config_lib, errors, fsutil, metrics as metrics_lib, models
from jaxdenoise import noise as noise_lib, plots, run_io, steps
from jaxdenoise.data import builtin, loader, prepare, store


# the errors a run stops with (one-line messages), importable from here as before
TrainingDiverged, TrainingStalled, Interrupted = errors.TrainingDiverged, errors.TrainingStalled, errors.Interrupted
DiskFull, WorkdirBusy = errors.DiskFull, errors.WorkdirBusy
STALL_STEPS = 10  # this many steps in a row with a gradient of exactly zero: the model cannot learn any more


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
def resolve_store(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Path of the prepared store the config asks for, preparing it on first use."""
    d = config.data
    if d.source == "builtin":
        return builtin.builtin_store(d.size, d.builtin_train_crops, d.builtin_val_crops, seed=d.split_seed,
                                     cache_dir=d.cache_dir or None)
    if not os.path.isdir(d.dir):
        raise ValueError(f"data.dir={d.dir!r} does not exist")
    if d.cache_dir:  # a shared cache holds many stores (built-in ones too): one subfolder per preparation
        key = f"{os.path.realpath(d.dir)}|{d.size}|{d.val_fraction}|{d.split_seed}|{d.resize_mode}"
        key += f"|{d.max_side}" if d.resize_mode == "full" else ""
        cache = os.path.join(d.cache_dir, "prepared-" + hashlib.sha256(key.encode()).hexdigest()[:12])
    else:
        cache = os.path.join(workdir, "data")
    return prepare.ensure_prepared(d.dir, cache, d.size, d.val_fraction, d.split_seed, d.resize_mode,
                                   d.max_side if d.resize_mode == "full" else 0)


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
        host = [next(self.it) for _ in range(self.k)]
        host = host[0] if self.k == 1 else np.stack(host)
        dev = jax.make_array_from_process_local_data(self.sharding, host)
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
        mesh = sharding.mesh
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


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------
class Evaluator:
    """Whole validation split, fixed noise (``fold_in(eval_seed, image index)``), padded last batch.

    One compilation: every batch has ``eval_batch_size`` rows; padded rows repeat the last image and are
    dropped on the host. ``__call__(params)`` returns mean psnr, ssim, mse, noisy_psnr, noisy_ssim.
    """

    def __init__(self, images: np.ndarray, model, noise: noise_lib.NoiseModel, batch_size: int, seed: int,
                 mesh: jax.sharding.Mesh, num_grid: int):
        self.images = images
        n_dev = mesh.devices.size
        self.batch_size = -(-batch_size // n_dev) * n_dev  # a multiple of the device count
        self.rng = jax.random.PRNGKey(seed)
        repl, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
        self.rows = rows
        self.step = jax.jit(steps.bind(steps.eval_step, model=model, noise=noise),
                            in_shardings=(repl, rows, rows, repl), out_shardings=repl)
        g = min(num_grid, images.shape[0])
        self.grid_clean = np.asarray(images[:g])

        def grid_fn(params, clean_u8):
            clean = steps.to_float(clean_u8)
            noisy, level = steps.eval_noisy(noise, self.rng, clean, jnp.arange(clean.shape[0]))
            return noisy, model.apply({"params": params}, steps.model_input(model, noisy, level))
        self.grid_fn = jax.jit(grid_fn)

    def __call__(self, params) -> Dict[str, float]:
        n, bs = self.images.shape[0], self.batch_size
        sums: Dict[str, float] = collections.defaultdict(float)
        for start in range(0, n, bs):
            idx = np.arange(start, start + bs)
            valid = int(min(bs, n - start))
            src = np.minimum(idx, n - 1)
            batch = jax.make_array_from_process_local_data(self.rows, np.asarray(self.images[src]))
            index = jax.make_array_from_process_local_data(self.rows, idx.astype(np.int32))
            out = jax.device_get(self.step(params, batch, index, self.rng))
            for k, v in out.items():
                sums[k] += float(np.sum(v[:valid], dtype=np.float64))
        return {k: v / n for k, v in sums.items()}

    def grid(self, params) -> np.ndarray:
        """``uint8`` grid: rows of clean | noisy | denoised validation images."""
        noisy, out = jax.device_get(self.grid_fn(params, self.grid_clean))
        return plots.image_grid([self.grid_clean, noisy, out])


# ----------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------
def make_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device, axis 'data' (one device is a mesh of one)."""
    return jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))


def jit_train_step(config: ml_collections.ConfigDict, model, tx, noise, mesh: jax.sharding.Mesh, image_side: int):
    """The jitted train step for this config: ``(state, batch, rng) -> (state, metrics)``, state donated, state
    and metrics replicated, the batch on the mesh's 'data' axis; ``steps_per_call > 1`` takes stacked
    ``[k, B, H, W, 3]`` batches (``steps.multi_train_step``). Returns (jitted, batch_sharding, chunks), chunks
    being the micro-batches per step (``steps.micro_batch_chunks``).
    """
    k = config.steps_per_call
    platform = mesh.devices.flat[0].platform
    chunks = steps.micro_batch_chunks(config.micro_batch, config.batch_size // mesh.devices.size, image_side,
                                      platform)
    repl = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data") if k == 1 else P(None, "data"))
    kw = dict(model=model, tx=tx, noise=noise, chunks=chunks, ema_decay=float(config.ema_decay))
    if k > 1:
        fn = steps.bind(steps.multi_train_step, unroll=platform == "cpu", **kw)
    else:
        fn = steps.bind(steps.train_step, **kw)
    jitted = jax.jit(fn, in_shardings=(repl, batch_sharding, repl), out_shardings=(repl, repl), donate_argnums=0)
    return jitted, batch_sharding, chunks


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
    """Train (or resume) the configured model in ``workdir``; returns the final validation metrics.

    Nothing is written before the config is validated, the workdir locked (``errors.WorkdirBusy``) and the
    rerun checked against the saved config.json; config.json is written once the data checks pass. A full
    disk anywhere ends the run with ``errors.DiskFull`` (one line, naming the last good checkpoint).
    """
    config_lib.validate(config)
    with run_io.Workdir(workdir) as wd, run_io.DiskWatch() as disk:
        try:
            return _run(config, wd, disk)
        except Exception as e:
            if not (disk.full or fsutil.is_disk_full(e)):
                raise
            disk.full = True  # keeps the hooks quiet for the echoes still to come (TensorBoard's exit flush)
            done = checkpointing.step_dirs(wd.file("checkpoints"))
            last = f"last good checkpoint step {done[-1]}" if done else "no checkpoint was saved yet"
            raise errors.DiskFull(f"no space left on {wd.path}; {last} (free some space, then rerun the same "
                                  f"command to resume)") from None


def _run(config: ml_collections.ConfigDict, wd: run_io.Workdir, disk: run_io.DiskWatch) -> Dict[str, float]:
    ckpt_dir = wd.file("checkpoints")
    changes = wd.check_config(config, bool(checkpointing.step_dirs(ckpt_dir)))

    # ---- data
    store_path = resolve_store(config, wd.path)
    train_images = store.open_split(store_path, "train")
    val_images = store.open_split(store_path, "val")
    if isinstance(val_images, store.RaggedImages):  # full-size store: validate on central size x size crops
        val_images = val_images.center_crops(config.data.size)
    size = config.data.patch or train_images.shape[1]  # side of the training batches
    spe = config.steps_per_epoch or train_images.shape[0] // config.batch_size
    k = config.steps_per_call
    if spe == 0:
        raise ValueError(f"config: the training split ({train_images.shape[0]} images) is smaller than one batch "
                         f"of {config.batch_size}")
    if spe % k:
        raise ValueError(f"config: steps_per_call={k} must divide the steps per epoch ({spe})")
    total_steps = config.num_epochs * spe

    # ---- devices
    mesh = make_mesh()
    n_dev = mesh.devices.size
    if config.batch_size % n_dev:
        raise ValueError(f"config: batch_size={config.batch_size} is not divisible by the {n_dev} devices")
    repl = NamedSharding(mesh, P())
    wd.accept_config(config)

    # ---- model, optimiser, state
    model = models.create(config.model, config.dtype)
    tx = steps.make_optimizer(config, total_steps)
    train_noise = noise_lib.parse(config.noise)
    train_step, batch_sharding, chunks = jit_train_step(config, model, tx, train_noise, mesh, size)
    eval_noise = noise_lib.parse(config.eval_noise or config.noise)
    init, init_rng = checkpointing.make_init(model, tx, config.seed, ema=config.ema_decay > 0)
    abstract = checkpointing.abstract_like(jax.eval_shape(init, init_rng), repl)
    if config.data.device_resident:
        data_iter = DeviceResidentBatches(train_images, config.batch_size, config.seed, batch_sharding, k)
    else:
        data_iter = iter(loader.make_loader(
            train_images, config.batch_size, config.seed, total_steps,
            shard=_process_shard(), flips=config.data.flips, rot90=config.data.rot90, patch=config.data.patch,
            num_threads=config.data.num_threads, prefetch=config.data.prefetch))
    ckpt = checkpointing.Checkpointer(ckpt_dir)
    writer = None
    try:
        state, rng, data_state, origin = _initial_state(config, ckpt, init, init_rng, abstract, repl)
        if data_state is not None:
            data_iter.set_state(data_state)
        step = int(state.step)
        if origin:
            log(f"{origin} (step {step} of {total_steps})")
        n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
        log(_summary(config, n_params, mesh, train_images.shape[0], val_images.shape[0], spe, total_steps,
                     store_path, chunks))
        writer = run_io.MetricWriter(wd.path, start_step=step)
        if changes:
            log("changed since the last run: " + ", ".join(f"{f} {a} -> {b}" for f, a, b in changes))
            writer.write({"kind": "config", "step": step, "changed": {f: [a, b] for f, a, b in changes}}, "config")
        evaluator = Evaluator(val_images, model, eval_noise, config.eval_batch_size, config.eval_seed, mesh,
                              config.num_grid_images)
        ckpt_bytes = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(abstract))
        if step >= total_steps:
            log(f"nothing to train: the run is complete at step {step} (raise num_epochs to continue)")
            result = _final_eval(evaluator, state, step, spe)
        else:
            result = _loop(config, wd.path, state, rng, data_iter, ckpt, evaluator, writer, train_step,
                           batch_sharding, spe, total_steps, k, disk, ckpt_bytes)
    except BaseException:
        for close in (ckpt.close, writer.close if writer else None):
            try:  # the error in flight is the one to report; cleaning up may fail the same way
                close and close()
            except Exception:
                pass
        raise
    ckpt.wait()
    ckpt.close()
    writer.close()
    if disk.full:  # a background writer (TensorBoard) failed after the loop's last check
        raise OSError(errno.ENOSPC, "No space left on device", wd.path)
    return result


def _initial_state(config, ckpt, init, init_rng, abstract, repl):
    """(train state, rng, data state or None, where it came from or None): the newest intact checkpoint of
    this run, else the checkpoint named by ``config.init_from``, else fresh parameters."""
    if ckpt.finished_steps():
        step, tree, data = ckpt.restore_intact(abstract, "latest", with_data=True, log=log)
        origin = f"resumed from {ckpt.directory}/{step}"
    elif config.init_from:
        src, which = checkpointing.parse_source(config.init_from)
        fixed, _ = config_lib.resume_changes(checkpointing.read_run_config(src), config)
        models_differ = [f for f, _, _ in fixed if f.startswith("model.")]
        if models_differ:
            raise ValueError(f"init_from={config.init_from!r}: that run's model differs ({', '.join(models_differ)})")
        source = checkpointing.Checkpointer(os.path.join(src, "checkpoints"), read_only=True)
        try:
            step, tree, data = source.restore_intact(abstract, which, with_data=True, log=log)
        finally:
            source.close()
        origin = f"started from {source.directory}/{step} (init_from)"
    else:
        tree, data, origin = jax.jit(init, out_shardings=repl)(init_rng), None, None
    return tree["train_state"], tree["rng"], data, origin


def _process_shard():
    import grain
    return grain.sharding.ShardOptions(jax.process_index(), jax.process_count())


def _summary(config, n_params, mesh, n_train, n_val, spe, total, store_path, chunks) -> str:
    dev = mesh.devices.flat[0]
    return "\n".join([
        f"jaxdenoise: model={config.model.name} ({n_params:,} params, {config.dtype}), noise={config.noise}, "
        f"{config.optimizer} lr={config.learning_rate:g} ({config.schedule}), batch={config.batch_size}"
        + (f" (gradient in {chunks} micro-batches)" if chunks > 1 else ""),
        f"  devices: {mesh.devices.size} x {dev.platform} ({dev.device_kind}); data: {n_train} train / {n_val} val "
        f"images from {store_path}",
        f"  {config.num_epochs} epochs x {spe} steps = {total} steps; eval every {config.eval_every_epochs} "
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


def due(step: int, every: int, k: int = 1) -> bool:
    """True when a cadence of ``every`` steps fell within the last ``k`` steps ending at ``step``."""
    return every > 0 and step % every < k


class TrainLog:
    """Train metrics between log points: kept on device, fetched at ``flush`` (the loop's only blocking
    point), checked (NaN/inf: ``TrainingDiverged``; an exactly zero gradient for ``STALL_STEPS`` steps in a
    row: ``TrainingStalled``), averaged into one row of metrics.jsonl, with images/s over the window."""

    def __init__(self, writer: run_io.MetricWriter, spe: int, hint: Callable[[], str]):
        self.writer, self.spe, self.hint = writer, spe, hint
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
               **{key: float(np.mean([r[key] for r in rows])) for key in rows[0]}, "img_per_s": round(ips, 2)}
        self.writer.write(row, "train")
        return row


def _ensure_space(path: str, need: int) -> None:
    """OSError(ENOSPC) before a checkpoint is started that cannot fit: a failed save half-way costs more
    (background-thread errors, a partial step to clean) than stopping cleanly now."""
    free = shutil.disk_usage(path).free
    if free < need:
        raise OSError(errno.ENOSPC, f"No space left on device ({free // 1024} KiB free, a checkpoint needs "
                                    f"~{need // 1024} KiB)", path)


def _loop(config, workdir, state, rng, data_iter, ckpt, evaluator, writer, jitted, batch_sharding, spe,
          total_steps, k, disk, ckpt_bytes) -> Dict[str, float]:
    from tqdm import tqdm

    step = int(state.step)
    prefetch = data_iter if isinstance(data_iter, DeviceResidentBatches) else DevicePrefetcher(
        data_iter, batch_sharding, k)
    first_batch, first_data_state = next(prefetch)
    log("compiling the train step...")
    t0 = time.perf_counter()
    compiled = jitted.lower(state, first_batch, rng).compile()
    log(f"compiled in {time.perf_counter() - t0:.1f} s")

    bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True, file=sys.stdout,
               mininterval=1.0, disable=None)
    train_log = TrainLog(writer, spe, lambda: _retry_hint(ckpt, workdir))
    last_saved, last_eval = step, {}

    def flush() -> None:
        row = train_log.flush()
        if row:
            bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['psnr']:.2f}", img_s=f"{row['img_per_s']:.1f}",
                            refresh=False)

    def save(step: int, metrics=None) -> None:
        nonlocal last_saved
        flush()  # never save parameters whose metrics were not checked
        done = ckpt.finished_steps()
        size = max(ckpt_bytes, ckpt.disk_bytes(done[-1]) if done else 0)  # on disk: metadata, whole blocks
        _ensure_space(ckpt.directory, size * 5 // 4 + (64 << 10))
        ckpt.save(step, {"train_state": state, "rng": rng}, data_state, metrics=metrics)
        last_saved = step

    with run_io.StopFlag() as stop:
        batch, data_state = first_batch, first_data_state
        while True:
            state, m = compiled(state, batch, rng)
            step += k
            train_log.add(step, m, k * config.batch_size)
            bar.update(k)
            if disk.full:  # a background write (orbax, TensorBoard) found the disk full
                raise OSError(errno.ENOSPC, "No space left on device", workdir)
            epoch_done, epoch = step % spe == 0, step // spe
            if due(step, config.log_every_steps, k) or epoch_done or stop.signum or step >= total_steps:
                flush()
            if epoch_done and (epoch % config.eval_every_epochs == 0 or step >= total_steps):
                last_eval = _evaluate(evaluator, state, step, epoch, writer, workdir, bar)
                save(step, {"psnr": last_eval["psnr"]})
            elif (config.checkpoint_every_steps and step - last_saved >= config.checkpoint_every_steps) \
                    or stop.signum or (step >= total_steps and last_saved != step):
                save(step)
            if stop.signum:
                bar.close()
                ckpt.wait()
                raise Interrupted(f"stopped by {signal.Signals(stop.signum).name} after step {step}; checkpoint "
                                  f"saved in {ckpt.directory}/{step}; rerun the same command to resume")
            if step >= total_steps:
                break
            batch, data_state = next(prefetch)
    bar.close()
    ckpt.wait()
    paths = plots.plot_curves([workdir], workdir)
    log(f"done: {step} steps. best checkpoint: {ckpt.directory}/{ckpt.best_step()}; latest: {ckpt.directory}/{step}")
    log(f"plots: {', '.join(paths)}; grid: {os.path.join(workdir, 'grid.png')}; metrics: {writer.path}")
    if last_eval and last_eval["psnr"] < last_eval["noisy_psnr"]:
        log(f"warning: the final model ({last_eval['psnr']:.2f} dB) is worse than its noisy input "
            f"({last_eval['noisy_psnr']:.2f} dB): it has not learned to denoise this noise")
    return last_eval


def _evaluate(evaluator: Evaluator, state, step: int, epoch: int, writer: run_io.MetricWriter, workdir: str,
              bar=None) -> Dict[str, float]:
    t0 = time.perf_counter()
    res = _scores(evaluator, state)
    row = {"kind": "eval", "step": step, "epoch": epoch, **{k: float(v) for k, v in res.items()},
           "eval_s": round(time.perf_counter() - t0, 2)}
    writer.write(row, "val")
    grid = evaluator.grid(eval_params(state))
    plots.save_png(grid, os.path.join(workdir, "grid.png"))
    writer.image("val/clean_noisy_denoised", grid, step)
    ema = f" (EMA; raw weights {res['raw_psnr']:.2f})" if "raw_psnr" in res else ""
    msg = (f"epoch {epoch} (step {step}): val PSNR {res['psnr']:.2f} dB{ema} (noisy {res['noisy_psnr']:.2f}), "
           f"SSIM {res['ssim']:.4f} (noisy {res['noisy_ssim']:.4f}), MSE {res['mse']:.6f} "
           f"[{evaluator.images.shape[0]} images, {metrics_lib.CONVENTION}]")
    if res["psnr"] < res["noisy_psnr"]:
        msg += f"\nwarning: at epoch {epoch} the model is worse than its noisy input ({res['psnr']:.2f} < " \
               f"{res['noisy_psnr']:.2f} dB)"
    (bar.write if bar is not None else log)(msg)
    return row


def eval_params(state: steps.TrainState):
    """The weights a run is judged by: the EMA when the run keeps one, else the parameters."""
    return state.params if state.ema is None else state.ema


def _scores(evaluator: Evaluator, state: steps.TrainState) -> Dict[str, float]:
    """Validation metrics of ``eval_params(state)``; with an EMA also ``raw_psnr`` of the raw parameters."""
    res = evaluator(eval_params(state))
    if state.ema is not None:
        res["raw_psnr"] = evaluator(state.params)["psnr"]
    return res


def _final_eval(evaluator, state, step, spe) -> Dict[str, float]:
    res = _scores(evaluator, state)
    log(f"validation at step {step}: PSNR {res['psnr']:.2f} dB (noisy {res['noisy_psnr']:.2f}), "
        f"SSIM {res['ssim']:.4f}, MSE {res['mse']:.6f} [{metrics_lib.CONVENTION}]")
    return {"step": step, "epoch": step // spe, **res}
