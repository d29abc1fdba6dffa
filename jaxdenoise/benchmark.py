"""Throughput benchmark of the train step and the input path; numbers only (no assertions).

Every rate is timed over a window after warm-up, blocking once at the end of the window, never per step.
Reports (``run`` returns them as a dict, ``format_table`` prints them):

- compile_s: lowering + compiling the train step (as train.py does, ahead of time);
- train_img_per_s: the step alone on device-resident uint8 batches;
- noise_fraction: the noise model alone (same batch shape, jitted) over the step time;
- loader_img_per_s: the grain loader reading a prepared store (the real read path, no device);
- end_to_end_img_per_s: loader -> device prefetch -> step, as the training loop runs it;
- flops_per_img, bytes_per_img: XLA's cost analysis of one step, per image; flop_fraction, bytes_fraction:
  those rates over the peaks (bytes above 1: XLA counts cache hits too); roofline_fraction: the larger of
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
from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdenoise import config as config_lib, errors, hostmem, models, noise as noise_lib, parallel, steps
from jaxdenoise.data import feed
from jaxdenoise.data import loader, store

# (peak dense FLOP/s for float32, for bfloat16, memory bandwidth B/s); datasheet values, SXM parts
PEAKS = {
    "H100": (67e12, 989e12, 3.35e12),
    "H200": (67e12, 989e12, 4.8e12),
    "A100": (19.5e12, 312e12, 2.0e12),
}


def _time(fn, n: int, windows: int = 3, warmup: int = 2) -> float:
    """Seconds per call of ``fn``: the median of ``windows`` windows of ``n / windows`` calls each, blocking
    once at the end of each window (never per call), after ``warmup`` calls (the first calls of a fresh
    executable also fault in its buffers)."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    per = max(1, n // windows)
    times = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(per):
            out = fn()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / per)
    return float(np.median(times))


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


def _host_batches(config, n: int) -> list:
    """``n`` random host batches shaped as the loader gives them to the train step: ``uint8 [B, p, p, 3]``
    crops (stacked ``[k, ...]`` with ``steps_per_call`` k > 1), or with ``noise_fixed`` the fixed-noise dicts
    (whole ``[B, S, S, 3]`` images and their ``int32 [B, 6]`` meta: ``loader.META_FIELDS``), so that the
    timed step is the one training runs."""
    k, b, size = config.steps_per_call, config.batch_size, config.data.patch or config.data.size
    lead = (k,) if k > 1 else ()
    rng = np.random.default_rng(0)
    if not config.get("noise_fixed", False):
        return list(rng.integers(0, 256, (n,) + lead + (b, size, size, 3), dtype=np.uint8))
    side = config.data.size
    out = []
    for _ in range(n):
        corner = rng.integers(0, side - size + 1, lead + (b, 2))
        turns = np.concatenate([rng.integers(0, 2, lead + (b, 2)), rng.integers(0, 4, lead + (b, 1))], -1)
        meta = np.concatenate([rng.integers(0, 1000, lead + (b, 1)), corner, turns], -1).astype(np.int32)
        out.append({"image": rng.integers(0, 256, lead + (b, side, side, 3), dtype=np.uint8), "meta": meta})
    return out


def run(config, steps_n: int = 20, store_path: Optional[str] = None, workdir: str = "/tmp/jaxdenoise-bench",
        loader_batches: int = 200) -> Dict:
    """Measure everything above for ``config``; returns a flat dict (JSON-ready)."""
    if steps_n < 1:
        raise ValueError(f"--steps must be >= 1 (timed train steps), got {steps_n}")
    config_lib.validate(config)
    mesh = parallel.make_mesh()
    repl = NamedSharding(mesh, P())
    k, b, size = config.steps_per_call, config.batch_size, config.data.patch or config.data.size
    model = models.create(config.model, config.dtype)
    tx = steps.make_optimizer(config, total_steps=10**6)
    noise = noise_lib.parse(config.noise)
    jitted, batch_sharding, chunks = parallel.jit_train_step(config, model, tx, noise, mesh, size)
    state = jax.jit(lambda r: steps.init_state(model, tx, r, (size, size, 3), ema=config.ema_decay > 0),
                    out_shardings=repl)(jax.random.PRNGKey(0))
    rng = jax.random.PRNGKey(1)
    fixed = bool(config.get("noise_fixed", False))
    host = _host_batches(config, 4)
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
    crops = np.random.default_rng(0).integers(0, 256, (b, size, size, 3), dtype=np.uint8)
    x = jax.device_put(jnp.asarray(crops, jnp.float32) / 255.0, NamedSharding(mesh, P("data")))
    noise_fn = jax.jit(lambda key, x: noise(key, x))
    noise_s = _time(lambda: noise_fn(rng, x), max(60, 3 * steps_n))  # ~3-20 ms a call: many, or VM hiccups dominate

    # cost analysis of a single step (the timed executable itself unless it runs k steps per call)
    if k == 1:
        cost = compiled.cost_analysis()
    else:
        single = jax.jit(steps.bind(steps.train_step, model=model, tx=tx, noise=noise, chunks=chunks,
                                    ema_decay=float(config.ema_decay), loss=config.get("loss", "mse")))
        one_batch = jax.tree.map(lambda a: a[0], host[0])
        cost = single.lower(holder["state"], one_batch, rng).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) / b
    nbytes = float(cost.get("bytes accessed", 0.0)) / b
    device = jax.devices()[0]
    peak_flops, peak_bw, peak_src = device_peaks(device, config.dtype)
    flop_frac, byte_frac = flops * train_ips / peak_flops, nbytes * train_ips / peak_bw
    roofline = max(flop_frac, byte_frac)

    # the input path
    paths = [store_path] if store_path else feed.resolve_stores(config, workdir)
    images = store.open_splits(paths, "train")
    aug = dict(patch=config.data.patch, flips=config.data.flips, rot90=config.data.rot90,
               num_threads=config.data.num_threads, prefetch=config.data.prefetch, fixed=fixed)
    it = iter(loader.make_loader(images, b, 0, loader_batches + 10, shard=parallel.process_shard(), **aug))
    for _ in range(5):
        next(it)
    t0 = time.perf_counter()
    for _ in range(loader_batches):
        next(it)
    loader_ips = loader_batches * b / (time.perf_counter() - t0)

    it = iter(loader.make_loader(images, b, 0, (calls + 8) * k, shard=parallel.process_shard(), **aug))
    prefetch = feed.DevicePrefetcher(it, batch_sharding, k)

    def one_from_loader():
        batch, _ = next(prefetch)
        holder["state"], m = compiled(holder["state"], batch, rng)
        return m
    e2e_ips = k * b / _time(one_from_loader, calls)

    stats = device.memory_stats() or {}
    peak_mem = stats.get("peak_bytes_in_use") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "device": f"{device.platform}:{device.device_kind}", "num_devices": mesh.devices.size,
        "jax": jax.__version__, "model": config.model.name, "noise": config.noise, "dtype": config.dtype,
        "noise_setting": config_lib.noise_setting(config),
        "batch_size": b, "steps_per_call": k, "micro_batches": chunks, "image_size": size,
        "compile_s": round(compile_s, 3), "step_ms": round(1e3 * step_s, 3),
        "train_img_per_s": round(train_ips, 2), "noise_ms": round(1e3 * noise_s, 3),
        "noise_fraction": round(noise_s / step_s, 4), "loader_img_per_s": round(loader_ips, 1),
        "end_to_end_img_per_s": round(e2e_ips, 2), "end_to_end_over_step": round(e2e_ips / train_ips, 3),
        "flops_per_img": flops, "bytes_per_img": nbytes, "peak_flops": peak_flops, "peak_bytes_per_s": peak_bw,
        "peak_source": peak_src, "roofline_fraction": round(roofline, 4),
        "flop_fraction": round(flop_frac, 4), "bytes_fraction": round(byte_frac, 4),
        "peak_mem_bytes": int(peak_mem), "peak_mem_source": "device" if stats else "process RSS",
    }


def compare_torch(peer: str, batch: int, size: int, steps_n: int, device: str = "cpu",
                  extra=()) -> Dict:
    """Run the PyTorch reference in subprocesses, NCHW and channels_last (on CPU each also with the glibc
    malloc settings our scripts use, ``hostmem.GLIBC_ENV``, so that neither side has an allocator edge);
    returns the best run, the best per layout and every run (``torch_runs``)."""
    if not os.path.isfile(peer):
        raise FileNotFoundError(f"PyTorch reference not found at {peer} (use --torch-peer)")
    envs = {"": None}
    if device == "cpu":
        envs["+malloc"] = {**os.environ, **hostmem.GLIBC_ENV}
    runs = {}
    for layout, flags in (("nchw", []), ("channels_last", ["--channels-last"])):
        for suffix, env in envs.items():
            cmd = [sys.executable, peer, "--device", device, "--batch", str(batch), "--size", str(size),
                   "--steps", str(steps_n)] + flags + list(extra)
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise errors.RunError(f"torch reference failed: "
                                   f"{out.stderr.strip().splitlines()[-1] if out.stderr else ''}")
            runs[layout + suffix] = json.loads(out.stdout.strip().splitlines()[-1])
    best = max(runs, key=lambda n: runs[n]["img_per_s"])
    per_layout = {layout: max(v["img_per_s"] for n, v in runs.items() if n.split("+")[0] == layout)
                  for layout in ("nchw", "channels_last")}
    return {"torch_best_layout": best, "torch_img_per_s": runs[best]["img_per_s"],
            "torch_nchw_img_per_s": per_layout["nchw"],
            "torch_channels_last_img_per_s": per_layout["channels_last"],
            "torch_runs": {n: v["img_per_s"] for n, v in runs.items()},
            "torch_version": runs[best]["torch"]}


# XLA's "bytes accessed" counts every operand read and write; above the memory bandwidth they are cache hits.
_CACHE_NOTE = ": above 100 % XLA's byte count is mostly served from cache"


def format_table(r: Dict) -> str:
    rows = [
        ("device", r["device"]), ("batch / steps_per_call / micro-batches / dtype",
         f"{r['batch_size']} / {r['steps_per_call']} / {r['micro_batches']} / {r['dtype']}"),
        ("compile", f"{r['compile_s']:.2f} s"),
        ("train step (device-resident data)", f"{r['train_img_per_s']:.1f} img/s ({r['step_ms']:.1f} ms/step)"),
        ("noise model share of the step", f"{100 * r['noise_fraction']:.1f} % ({r['noise_ms']:.2f} ms, {r['noise']}, "
                                          f"{r['noise_setting']})"),
        ("grain loader (prepared store)", f"{r['loader_img_per_s']:.0f} img/s"),
        ("end to end (loader + step)", f"{r['end_to_end_img_per_s']:.1f} img/s ({r['end_to_end_over_step']:.2f}x the step)"),
        ("XLA cost per image", f"{r['flops_per_img'] / 1e9:.2f} GFLOP, {r['bytes_per_img'] / 1e6:.1f} MB"),
        ("roofline fraction", f"{100 * r['roofline_fraction']:.1f} % (FLOP {100 * r['flop_fraction']:.0f} %, "
                              f"bytes {100 * r['bytes_fraction']:.0f} %{_CACHE_NOTE if r['bytes_fraction'] > 1 else ''}; "
                              f"peaks {r['peak_flops'] / 1e12:.2f} TFLOP/s, "
                              f"{r['peak_bytes_per_s'] / 1e9:.0f} GB/s, {r['peak_source']})"),
        ("peak memory", f"{r['peak_mem_bytes'] / 2**20:.0f} MiB ({r['peak_mem_source']})"),
    ]
    if "torch_img_per_s" in r:
        runs = ", ".join(f"{n} {v:.1f}" for n, v in r.get("torch_runs", {}).items())
        rows.append(("PyTorch reference (best run)", f"{r['torch_img_per_s']:.1f} img/s ({r['torch_best_layout']}; "
                     f"{runs})"))
        rows.append(("jaxdenoise / PyTorch", f"{r['train_img_per_s'] / r['torch_img_per_s']:.2f}x step, "
                     f"{r['end_to_end_img_per_s'] / r['torch_img_per_s']:.2f}x end to end"))
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a.ljust(w)}  {b}" for a, b in rows)


def run_models(config, names, steps_n: int = 20, store_path: Optional[str] = None) -> List[Dict]:
    """``run`` for each registered model ``names`` at its default fields, the rest of ``config`` unchanged
    (batch, image or patch side, dtype, noise); each result gains ``params``."""
    out = []
    for name in names:
        c = config.copy_and_resolve_references()
        with c.unlocked():
            c.model = models.default_config(name)
        r = run(c, steps_n, store_path)
        r["params"] = models.param_count(models.create(c.model))
        out.append(r)
    return out


def format_models_table(results: List[Dict]) -> str:
    """One row per model: parameters, train img/s and ms/step, GFLOP per image, roofline fraction."""
    head = ("model", "params", "img/s", "ms/step", "GFLOP/img", "roofline", "end-to-end img/s")
    rows = [(r["model"], f"{r['params']:,}", f"{r['train_img_per_s']:.1f}", f"{r['step_ms']:.0f}",
             f"{r['flops_per_img'] / 1e9:.2f}", f"{100 * r['roofline_fraction']:.1f} %",
             f"{r['end_to_end_img_per_s']:.1f}") for r in results]
    w = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(wi) for c, wi in zip(x, w)) for x in [head] + rows]
    lines.insert(1, "  ".join("-" * wi for wi in w))
    r0 = results[0]
    return "\n".join(lines) + (f"\n({r0['device']}, batch {r0['batch_size']}, {r0['image_size']}x{r0['image_size']}, "
                               f"{r0['dtype']}, noise {r0['noise']})")


# the inference rows: one photo of Kodak's size, whole and in tiles, and the exported model on it
INFERENCE_SHAPE = (512, 768)


def run_inference(config, names: List[str], repeats: int = 3) -> List[Dict]:
    """Seconds per megapixel (and MP/s) of each model's ``Denoiser`` on a ``INFERENCE_SHAPE`` image: whole,
    in tiles of 256 and 512 px (overlap 32, or half the receptive field), and the ``.jaxdn`` export of the same
    weights run whole; best of ``repeats`` after a warm-up call. Fresh weights: speed does not depend on them.
    ``names``: registered models; the config's own model keeps its fields, the others get their defaults."""
    from jaxdenoise import denoise as engine, denoiser, export
    h, w = INFERENCE_SHAPE
    img = np.random.default_rng(0).random((h, w, 3)).astype(np.float32)
    mp = h * w / 1e6
    out = []
    for name in names:
        cfg = config.copy_and_resolve_references()
        if name != cfg.model.name:  # the config's own model keeps its fields; others get their defaults
            with cfg.unlocked():
                cfg.model = models.default_config(name)
        model = models.create(cfg.model, cfg.dtype)
        params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, model.in_channels)))["params"]
        kw = dict(stride=model.stride, in_channels=model.in_channels, receptive_field=model.receptive_field)
        den = denoiser.Denoiser(engine.make_apply(model, params), **kw)
        info = denoiser.model_info(cfg, params, model)
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.jaxdn")
            with open(path, "wb") as f:
                f.write(export.export_bytes(cfg, params, model, info, platforms=(jax.default_backend(),)))
            exp = export.load_exported(path)
            cases = [("whole", den, 0), ("tiles 256", den, 256), ("tiles 512", den, 512), ("exported, whole", exp, 0)]
            for label, d, tile in cases:
                d.run(img, tile=tile)  # compile
                best = min(_wall(lambda: d.run(img, tile=tile)) for _ in range(repeats))
                out.append({"model": name, "case": label, "s_per_mp": best / mp, "mp_per_s": mp / best,
                            "image": f"{w}x{h}", "device": jax.devices()[0].device_kind})
    base = {r["model"]: r["s_per_mp"] for r in out if r["case"] == "whole"}
    for r in out:
        r["vs_whole"] = r["s_per_mp"] / base[r["model"]]
    return out


def _wall(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def format_inference_table(rows: List[Dict]) -> str:
    lines = [f"{'model':<8} {'case':<16} {'s/MP':>8} {'MP/s':>8} {'vs whole':>9}"]
    lines += [f"{r['model']:<8} {r['case']:<16} {r['s_per_mp']:>8.3f} {r['mp_per_s']:>8.3f} {r['vs_whole']:>8.2f}x"
              for r in rows]
    return "\n".join(lines) + f"\n({rows[0]['device']}, one {rows[0]['image']} image, best of 3 after a warm-up)"
