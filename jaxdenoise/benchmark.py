"""Throughput benchmark of the train step and the input path; numbers only (no assertions).

Every rate is timed over a window after warm-up, blocking once at the end of the window, never per step.
Reports (``run`` returns them as a dict, ``format_table`` prints them):

- compile_s: lowering + compiling the train step (as train.py does, ahead of time);
- train_img_per_s: the step alone on device-resident uint8 batches;
- noise_fraction: the noise model alone (same batch shape, jitted) over the step time;
- loader_img_per_s: the grain loader reading a prepared store (the real read path, no device);
- end_to_end_img_per_s: loader -> device prefetch -> step, as the training loop runs it;
- flops_per_img, bytes_per_img: XLA's cost analysis of one step, per image; roofline_fraction: the larger of
  (FLOP/s over peak FLOP/s) and (bytes/s over peak bandwidth), with peaks from ``PEAKS`` for known
  accelerators or measured on the spot (a large matmul, a large copy) for CPUs;
- peak_mem_bytes: device peak memory where the backend reports it, else the process's peak RSS.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdenoise import config as config_lib, models, noise as noise_lib, steps, train
from jaxdenoise.data import loader, store

# (peak dense FLOP/s for float32, for bfloat16, memory bandwidth B/s); datasheet values, SXM parts
PEAKS = {
    "H100": (67e12, 989e12, 3.35e12),
    "H200": (67e12, 989e12, 4.8e12),
    "A100": (19.5e12, 312e12, 2.0e12),
}


def _time(fn, n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls, blocking once at the end."""
    out = fn()
    jax.block_until_ready(out)
    t0 = time.perf_counter()
    for _ in range(n):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n


def device_peaks(device, dtype: str) -> tuple:
    """(peak FLOP/s, peak B/s, source) for ``device``: datasheet table, else measured here."""
    for name, (f32, bf16, bw) in PEAKS.items():
        if name in device.device_kind:
            return (bf16 if dtype == "bfloat16" else f32), bw, "datasheet"
    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    flops = 2 * n**3 / _time(lambda: mm(a), 5)
    big = jnp.ones((64 * 2**20,), jnp.float32)  # 256 MB
    cp = jax.jit(lambda x: x * 1.0001)
    bw = 2 * big.nbytes / _time(lambda: cp(big), 5)
    return flops, bw, "measured (f32 matmul, copy)"


def run(config, steps_n: int = 20, store_path: Optional[str] = None, workdir: str = "/tmp/jaxdenoise-bench",
        loader_batches: int = 200) -> Dict:
    """Measure everything above for ``config``; returns a flat dict (JSON-ready)."""
    config_lib.validate(config)
    mesh = train.make_mesh()
    repl = NamedSharding(mesh, P())
    k, b, size = config.steps_per_call, config.batch_size, config.data.size
    batch_sharding = NamedSharding(mesh, P("data") if k == 1 else P(None, "data"))
    model = models.create(config.model, config.dtype)
    tx = steps.make_optimizer(config, total_steps=10**6)
    noise = noise_lib.parse(config.noise)
    state = jax.jit(lambda r: steps.init_state(model, tx, r, (size, size, 3)), out_shardings=repl)(
        jax.random.PRNGKey(0))
    rng = jax.random.PRNGKey(1)
    fn = steps.multi_train_step if k > 1 else steps.train_step
    jitted = jax.jit(steps.bind(fn, model=model, tx=tx, noise=noise), in_shardings=(repl, batch_sharding, repl),
                     out_shardings=(repl, repl), donate_argnums=0)
    shape = ((k,) if k > 1 else ()) + (b, size, size, 3)
    host = np.random.default_rng(0).integers(0, 256, (4,) + shape, dtype=np.uint8)
    pool = [jax.device_put(h, batch_sharding) for h in host]

    t0 = time.perf_counter()
    compiled = jitted.lower(state, pool[0], rng).compile()
    compile_s = time.perf_counter() - t0

    holder = {"state": state, "i": 0}

    def one():
        holder["state"], m = compiled(holder["state"], pool[holder["i"] % 4], rng)
        holder["i"] += 1
        return m
    calls = max(1, steps_n // k)
    step_s = _time(one, calls) / k
    train_ips = b / step_s

    # noise alone: same shape, same jit boundary
    x = jax.device_put(jnp.asarray(host[0].reshape((-1, size, size, 3))[:b], jnp.float32) / 255.0,
                       NamedSharding(mesh, P("data")))
    noise_fn = jax.jit(lambda key, x: noise(key, x))
    noise_s = _time(lambda: noise_fn(rng, x), max(5, steps_n // 2))

    # cost analysis of a single step
    single = jax.jit(steps.bind(steps.train_step, model=model, tx=tx, noise=noise))
    cost = single.lower(holder["state"], jnp.zeros((b, size, size, 3), jnp.uint8), rng).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) / b
    nbytes = float(cost.get("bytes accessed", 0.0)) / b
    device = jax.devices()[0]
    peak_flops, peak_bw, peak_src = device_peaks(device, config.dtype)
    roofline = max(flops * train_ips / peak_flops, nbytes * train_ips / peak_bw)

    # the input path
    path = store_path or train.resolve_store(config, workdir)
    images = store.open_split(path, "train")
    it = iter(loader.make_loader(images, b, 0, loader_batches + 10, num_threads=config.data.num_threads,
                                 prefetch=config.data.prefetch))
    for _ in range(5):
        next(it)
    t0 = time.perf_counter()
    for _ in range(loader_batches):
        next(it)
    loader_ips = loader_batches * b / (time.perf_counter() - t0)

    it = iter(loader.make_loader(images, b, 0, (calls + 3) * k, num_threads=config.data.num_threads,
                                 prefetch=config.data.prefetch))
    prefetch = train.DevicePrefetcher(it, batch_sharding, k)
    batch, _ = next(prefetch)
    holder["state"], m = compiled(holder["state"], batch, rng)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(calls):
        batch, _ = next(prefetch)
        holder["state"], m = compiled(holder["state"], batch, rng)
    jax.block_until_ready(m)
    e2e_ips = calls * k * b / (time.perf_counter() - t0)

    stats = device.memory_stats() or {}
    peak_mem = stats.get("peak_bytes_in_use") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "device": f"{device.platform}:{device.device_kind}", "num_devices": mesh.devices.size,
        "jax": jax.__version__, "model": config.model.name, "noise": config.noise, "dtype": config.dtype,
        "batch_size": b, "steps_per_call": k, "image_size": size,
        "compile_s": round(compile_s, 3), "step_ms": round(1e3 * step_s, 3),
        "train_img_per_s": round(train_ips, 2), "noise_ms": round(1e3 * noise_s, 3),
        "noise_fraction": round(noise_s / step_s, 4), "loader_img_per_s": round(loader_ips, 1),
        "end_to_end_img_per_s": round(e2e_ips, 2), "end_to_end_over_step": round(e2e_ips / train_ips, 3),
        "flops_per_img": flops, "bytes_per_img": nbytes, "peak_flops": peak_flops, "peak_bytes_per_s": peak_bw,
        "peak_source": peak_src, "roofline_fraction": round(roofline, 4),
        "peak_mem_bytes": int(peak_mem), "peak_mem_source": "device" if stats else "process RSS",
    }


def compare_torch(peer: str, batch: int, size: int, steps_n: int, device: str = "cpu",
                  extra=()) -> Dict:
    """Run the PyTorch reference in a subprocess, NCHW and channels_last; the best and both results."""
    if not os.path.isfile(peer):
        raise FileNotFoundError(f"PyTorch reference not found at {peer} (use --torch-peer)")
    results = {}
    for name, flags in (("nchw", []), ("channels_last", ["--channels-last"])):
        cmd = [sys.executable, peer, "--device", device, "--batch", str(batch), "--size", str(size),
               "--steps", str(steps_n)] + flags + list(extra)
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"torch reference failed: {out.stderr.strip().splitlines()[-1] if out.stderr else ''}")
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    best = max(results, key=lambda n: results[n]["img_per_s"])
    return {"torch_best_layout": best, "torch_img_per_s": results[best]["img_per_s"],
            "torch_nchw_img_per_s": results["nchw"]["img_per_s"],
            "torch_channels_last_img_per_s": results["channels_last"]["img_per_s"],
            "torch_version": results[best]["torch"]}


def format_table(r: Dict) -> str:
    rows = [
        ("device", r["device"]), ("batch / steps_per_call / dtype", f"{r['batch_size']} / {r['steps_per_call']} / {r['dtype']}"),
        ("compile", f"{r['compile_s']:.2f} s"),
        ("train step (device-resident data)", f"{r['train_img_per_s']:.1f} img/s ({r['step_ms']:.1f} ms/step)"),
        ("noise model share of the step", f"{100 * r['noise_fraction']:.1f} % ({r['noise_ms']:.2f} ms, {r['noise']})"),
        ("grain loader (prepared store)", f"{r['loader_img_per_s']:.0f} img/s"),
        ("end to end (loader + step)", f"{r['end_to_end_img_per_s']:.1f} img/s ({r['end_to_end_over_step']:.2f}x the step)"),
        ("XLA cost per image", f"{r['flops_per_img'] / 1e9:.2f} GFLOP, {r['bytes_per_img'] / 1e6:.1f} MB"),
        ("roofline fraction", f"{100 * r['roofline_fraction']:.1f} % (peaks {r['peak_flops'] / 1e12:.2f} TFLOP/s, "
                              f"{r['peak_bytes_per_s'] / 1e9:.0f} GB/s, {r['peak_source']})"),
        ("peak memory", f"{r['peak_mem_bytes'] / 2**20:.0f} MiB ({r['peak_mem_source']})"),
    ]
    if "torch_img_per_s" in r:
        rows.append(("PyTorch reference (best layout)", f"{r['torch_img_per_s']:.1f} img/s ({r['torch_best_layout']}; "
                     f"nchw {r['torch_nchw_img_per_s']:.1f}, channels_last {r['torch_channels_last_img_per_s']:.1f})"))
        rows.append(("jaxdenoise / PyTorch", f"{r['train_img_per_s'] / r['torch_img_per_s']:.2f}x step, "
                     f"{r['end_to_end_img_per_s'] / r['torch_img_per_s']:.2f}x end to end"))
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a.ljust(w)}  {b}" for a, b in rows)
