"""Processes, devices and shardings: joining a multi-process run, the global mesh, the jitted train step,
and the few points where processes must agree.

One process per host, each driving all of its local devices (``jax.distributed``). Without a coordinator
(no flags, no ``JAX_COORDINATOR_ADDRESS``, ``--distributed`` off) a run is one process, as it always was,
and every helper here is a no-op or the single-process answer.

What is where (docs/scaling.md):
- the mesh: every device of every process on axis ``data`` (data parallel), and a ``model`` axis of size 1
  that FSDP-style parameter sharding would use;
- parameters, optimiser state, EMA, rng and metrics: replicated (``P()``);
- a training batch: split over ``data``; each process reads only its rows (``process_shard``);
- validation: each process feeds its rows of every evaluation batch; the per-image metrics come back
  replicated, so every image is scored once and every process sees all scores.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from typing import Callable, Dict, Optional, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

T = TypeVar("T")

DATA, MODEL = "data", "model"
_joined = False


def initialize(distributed: str = "off", coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None, process_id: Optional[int] = None,
               heartbeat_timeout_seconds: int = 100, initialization_timeout: int = 300) -> bool:
    """Join a multi-process run through ``jax.distributed.initialize``; True when one was joined.

    Must run before anything touches a device. ``coordinator_address`` (or ``JAX_COORDINATOR_ADDRESS``),
    ``num_processes`` (or ``JAX_NUM_PROCESSES``) and ``process_id`` (or ``JAX_PROCESS_ID``) name the run
    explicitly; ``distributed="auto"`` lets JAX detect the cluster (SLURM, Kubernetes/GKE, TPU pods, MPI)
    and fill in what is not given. With neither, the run is single-process and nothing happens.

    heartbeat_timeout_seconds: a process that stops answering for this long (it died, its host went away)
    makes the coordination service stop every other process with an error, instead of a hang in the next
    collective.
    """
    global _joined
    if distributed not in ("off", "auto"):
        raise ValueError(f"--distributed must be 'off' or 'auto', got {distributed!r}")
    address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    n = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    pid = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if distributed == "off" and address is None:
        if n not in (None, 1) or pid not in (None, 0):
            raise ValueError("--num_processes/--process_id need --coordinator_address HOST:PORT (or "
                             "--distributed=auto under a cluster scheduler)")
        return False
    _check_join(distributed, address, n, pid, heartbeat_timeout_seconds, initialization_timeout)
    who = f"process {pid} of {n}" if pid is not None and n is not None else "a process"
    print(f"joining the run at {address or 'the address the cluster gives'} as {who}; waiting up to "
          f"{initialization_timeout} s for every process (--initialization_timeout)...", file=sys.stderr, flush=True)
    joined = _watchdog(initialization_timeout, address, n, pid)
    try:
        jax.distributed.initialize(coordinator_address=address, num_processes=n, process_id=pid,
                                   heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                                   initialization_timeout=initialization_timeout + 5,
                                   coordinator_bind_address=_bind_address(address, pid))
    finally:
        joined.set()
    _joined = True
    return True


def _check_join(distributed: str, address: Optional[str], n: Optional[int], pid: Optional[int],
                heartbeat_timeout_seconds: int, initialization_timeout: int) -> None:
    """One-line ValueErrors for a multi-process run that cannot be joined as given."""
    if address is not None:
        check_address(address)
    if distributed == "off" and (n is None or pid is None):
        raise ValueError(f"coordinator {address} given: --num_processes and --process_id are needed too "
                         f"(or --distributed=auto to detect them from the cluster)")
    if n is not None and n < 1:
        raise ValueError(f"--num_processes must be >= 1, got {n}")
    if n is not None and pid is not None and not 0 <= pid < n:
        raise ValueError(f"--process_id must be in [0, {n}), got {pid}")
    for flag, value in (("--heartbeat_timeout_seconds", heartbeat_timeout_seconds),
                        ("--initialization_timeout", initialization_timeout)):
        if not 1 <= value <= 86400:  # jax aborts natively on a non-positive timeout; above a day is a typo
            raise ValueError(f"{flag} must be in [1, 86400] seconds, got {value}")


def _watchdog(timeout: int, address: Optional[str], n: Optional[int], pid: Optional[int]) -> threading.Event:
    """An event to set once joined. jax ends the process natively (a C++ check failure) when the others do
    not all join in time: unless the event is set within ``timeout`` s, this ends it first, with one line, a
    moment before jax's own deadline."""
    joined = threading.Event()

    def watch():
        if not joined.wait(timeout):
            print(f"error: could not join the run within {timeout} s: " + (
                f"the coordinator {address} did not answer, or " if pid else "") +
                f"not all {n or 'the'} processes connected; check --coordinator_address, --num_processes and that "
                f"every process was started (--initialization_timeout sets the wait)", file=sys.stderr, flush=True)
            os._exit(1)
    threading.Thread(target=watch, daemon=True, name="join-watchdog").start()
    return joined


def check_address(address: str) -> None:
    """One-line ValueError unless ``address`` is ``HOST:PORT`` with a port in 1..65535 (``[v6]:PORT`` too)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--coordinator_address must be HOST:PORT with a port in 1..65535, got {address!r}")


def _bind_address(address: Optional[str], pid: Optional[int]) -> Optional[str]:
    """Where process 0's coordination service listens: the given address when it is a loopback one (a run on
    one machine stays off the network), else jax's default, every interface, as other hosts must reach it."""
    if not address or pid != 0:
        return None
    host, _, port = address.rpartition(":")
    return f"{host}:{port}" if host in ("127.0.0.1", "localhost", "[::1]") else None


def check_same_settings(settings: Dict[str, str]) -> None:
    """Stop every process with one line when the processes were started with different settings (flags and
    config fields: ``settings`` maps a name to its JSON text). Without this, a batch size that differs
    compiles different programs, and the first collective aborts in gloo/NCCL with a 'collective mismatch'.
    A collective: every process calls it, at the same point."""
    if not multi_process():
        return
    from jax.experimental import multihost_utils
    blob = json.dumps(settings, sort_keys=True).encode()
    n = int(multihost_utils.broadcast_one_to_all(np.int32(len(blob))))
    mine = np.zeros(n, np.uint8)
    mine[:min(n, len(blob))] = np.frombuffer(blob[:n], np.uint8)
    first = bytes(np.asarray(multihost_utils.broadcast_one_to_all(mine), np.uint8))
    differs = first != blob
    every = np.asarray(multihost_utils.process_allgather(np.int32(differs))).reshape(-1)
    if not every.any():
        return
    from jaxdenoise import errors
    if differs:
        theirs = json.loads(first.decode())
        diff = [f"{k} {theirs.get(k, '(unset)')} vs {settings.get(k, '(unset)')} here"
                for k in sorted(set(theirs) | set(settings)) if theirs.get(k) != settings.get(k)]
        raise errors.RunError(f"process {jax.process_index()} was started with other settings than process 0 "
                              f"({'; '.join(diff[:4])}{'; ...' if len(diff) > 4 else ''}): start every process with "
                              f"the same command")
    bad = ", ".join(str(i) for i in np.flatnonzero(every))
    raise errors.RunError(f"process(es) {bad} were started with other settings than process 0 (their logs name "
                          f"them): start every process with the same command")


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def multi_process() -> bool:
    return jax.process_count() > 1


def is_main() -> bool:
    """True on the process that writes logs, metrics, plots and config.json (process 0)."""
    return jax.process_index() == 0


def make_mesh() -> Mesh:
    """The global mesh: every device of every process on ``data``, with a ``model`` axis of size 1.

    Devices are ordered by (process, id), so a process's devices hold consecutive rows of a batch: its
    local rows (``process_shard``, ``jax.make_array_from_process_local_data``) are a contiguous block.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    # Auto axes: the shardings of jit's inputs and outputs are set here, XLA propagates the rest (Explicit
    # axes, make_mesh's default in this jax, would ask every reshape in the models for an output sharding)
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((len(devices), 1), (DATA, MODEL), axis_types=auto, devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def rows(mesh: Mesh, leading: int = 0) -> NamedSharding:
    """Batch rows split over ``data`` (after ``leading`` unsharded axes, e.g. 1 for stacked ``[k, B, ...]``)."""
    return NamedSharding(mesh, P(*([None] * leading), DATA))


def check_batch(what: str, size: int, mesh: Mesh) -> None:
    """One-line ValueError unless ``size`` splits evenly over every device of every process."""
    n = mesh.devices.size
    if size % n:
        where = f"{n} devices" + (f" ({jax.process_count()} processes)" if multi_process() else "")
        raise ValueError(f"config: {what}={size} is not divisible by the {where}: use a multiple of {n}")


def process_shard():
    """This process's share of every global batch (grain): rows ``[i B/P, (i+1) B/P)`` of process ``i``."""
    import grain
    return grain.sharding.ShardOptions(jax.process_index(), jax.process_count())


def local_rows(total: int) -> slice:
    """The rows of a global batch of ``total`` that this process feeds (the same split as ``process_shard``)."""
    per = total // jax.process_count()
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def barrier(name: str) -> None:
    """Every process waits here for the others (no-op in a single process)."""
    if multi_process():
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def main_first(fn: Callable[[], T], what: str) -> T:
    """Run ``fn`` on process 0 first (workdir lock, config checks, data preparation), then on the others.

    Process 0's outcome reaches every process: when it raises, it tells the others before it re-raises,
    and they stop with one line instead of waiting in the next collective. The others then run ``fn``
    themselves (with the shared files now in place) and return its result.
    """
    if not multi_process():
        return fn()
    from jax.experimental import multihost_utils
    failed, result = 0, None
    if is_main():
        try:
            result = fn()
        except BaseException:
            multihost_utils.broadcast_one_to_all(np.int32(1))
            raise
        multihost_utils.broadcast_one_to_all(np.int32(0))
        return result
    failed = int(multihost_utils.broadcast_one_to_all(np.int32(0)))
    if failed:
        from jaxdenoise import errors
        raise errors.RunError(f"process 0 stopped while {what} (its log says why)")
    return fn()


def preemption_point(step: int) -> bool:
    """True on every process at the same step once any of them got SIGTERM (JAX's preemption sync point:
    the coordination service picks a step all processes have not yet passed). Single process: False (the
    loop's own SIGTERM handler covers it)."""
    if not (multi_process() and _joined):
        return False
    from jax.experimental import multihost_utils
    return multihost_utils.reached_preemption_sync_point(step)


def jit_train_step(config, model, tx, noise, mesh: Mesh, image_side: int, total_steps: int = 0):
    """The jitted train step for this config: ``(state, batch, rng) -> (state, metrics)``, state donated, state
    and metrics replicated, the batch on the mesh's ``data`` axis; ``steps_per_call > 1`` takes stacked
    ``[k, B, H, W, 3]`` batches (``steps.multi_train_step``); with ``config.noise_fixed`` a batch is the fixed-noise
    loader's dict (whole images and their meta, every leaf split over ``data``). total_steps: the run's length (the ramp of
    neighbor2neighbor's regulariser). Returns (jitted, batch_sharding, chunks), chunks being the
    micro-batches per step (``steps.micro_batch_chunks``).
    """
    from jaxdenoise import steps
    from jaxdenoise.native import onednn
    k = config.steps_per_call
    platform = mesh.devices.flat[0].platform
    whole = platform == "cpu" and getattr(model, "conv_bound", False) and onednn.enabled(config.dtype)
    chunks = steps.micro_batch_chunks(config.micro_batch, config.batch_size // mesh.devices.size, image_side,
                                      platform, whole_batch=whole)
    repl = replicated(mesh)
    batch_sharding = rows(mesh, leading=0 if k == 1 else 1)
    kw = dict(model=model, tx=tx, noise=noise, chunks=chunks, ema_decay=float(config.ema_decay),
              loss=config.get("loss", "mse"), target=config.get("target", "clean"), total_steps=total_steps,
              gamma=float(config.get("target_gamma", steps.targets.N2N_GAMMA)), patch=config.data.patch,
              alpha=float(config.get("target_alpha", steps.targets.R2R_ALPHA)))
    if k > 1:
        fn = steps.bind(steps.multi_train_step, unroll=platform == "cpu", **kw)
    else:
        fn = steps.bind(steps.train_step, **kw)
    jitted = jax.jit(fn, in_shardings=(repl, batch_sharding, repl), out_shardings=(repl, repl), donate_argnums=0)
    return jitted, batch_sharding, chunks


def local_share(n: int) -> slice:
    """This process's contiguous share of ``n`` items (the first ``n % P`` processes take one more)."""
    p, i = jax.process_count(), jax.process_index()
    base, extra = divmod(n, p)
    start = i * base + min(i, extra)
    return slice(start, start + base + (1 if i < extra else 0))


def gather_shares(values: np.ndarray) -> np.ndarray:
    """Concatenate every process's ``values`` (its ``local_share``, ``[n_i, ...]``) in process order; every
    process gets the whole array (a collective). Single process: ``values`` itself."""
    values = np.asarray(values)
    if not multi_process():
        return values
    from jax.experimental import multihost_utils
    counts = np.asarray(multihost_utils.process_allgather(np.int32(values.shape[0]))).reshape(-1)
    width = int(counts.max())
    padded = np.zeros((width,) + values.shape[1:], values.dtype)
    padded[:values.shape[0]] = values
    every = np.asarray(multihost_utils.process_allgather(padded))
    return np.concatenate([every[i, :c] for i, c in enumerate(counts)])
