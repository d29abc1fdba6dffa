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

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdenoise import config as config_lib, errors, hostmem, models, noise as noise_lib, parallel, steps
from jaxdenoise.data import feed
from jaxdenoise.data import loader, store
from jaxdenoise.native import onednn

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


class _Step:
    """``config``'s train step, compiled ahead of time as train.py compiles it, called on 4 device-resident
    random batches in turn (``_host_batches``) with its state carried from call to call."""

    def __init__(self, config):
        self.config, self.mesh = config, parallel.make_mesh()
        self.size = config.data.patch or config.data.size
        self.model = models.create(config.model, config.dtype)
        self.tx = steps.make_optimizer(config, total_steps=10**6)
        self.noise = noise_lib.parse(config.noise)
        jitted, self.batch_sharding, self.chunks = parallel.jit_train_step(config, self.model, self.tx, self.noise,
                                                                           self.mesh, self.size)
        size = self.size
        self.state = jax.jit(lambda r: steps.init_state(self.model, self.tx, r, (size, size, 3),
                                                        ema=config.ema_decay > 0),
                             out_shardings=NamedSharding(self.mesh, P()))(jax.random.PRNGKey(0))
        self.rng, self.i = jax.random.PRNGKey(1), 0
        self.host = _host_batches(config, 4)
        self.pool = [jax.device_put(h, self.batch_sharding) for h in self.host]
        t0 = time.perf_counter()
        self.compiled = jitted.lower(self.state, self.pool[0], self.rng).compile()
        self.compile_s = time.perf_counter() - t0

    def __call__(self, batch=None):
        """One call (``steps_per_call`` steps) on the next random batch, or on ``batch``; its metrics."""
        if batch is None:
            batch, self.i = self.pool[self.i % 4], self.i + 1
        self.state, m = self.compiled(self.state, batch, self.rng)
        return m

    def seconds(self, n: int) -> float:
        """Seconds per step over ``n`` steps (``_time``: the median of 3 windows)."""
        k = self.config.steps_per_call
        return _time(self, max(1, n // k)) / k

    def cost_per_image(self) -> tuple:
        """(FLOPs, bytes) XLA counts for one step, per image: the timed executable itself unless it runs k
        steps per call or calls oneDNN, whose convolutions XLA cannot count (then the FLOPs of the same step
        with XLA's convolutions, not compiled, and the bytes of the compiled step: XLA's part only)."""
        config, b = self.config, self.config.batch_size
        if config.steps_per_call == 1 and not onednn.enabled(config.dtype):
            cost = self.compiled.cost_analysis()
        elif config.steps_per_call == 1:
            with onednn.xla_only():
                xla_step, _, _ = parallel.jit_train_step(config, self.model, self.tx, self.noise, self.mesh, self.size)
                cost = dict(xla_step.lower(self.state, self.pool[0], self.rng).cost_analysis())
            measured = self.compiled.cost_analysis()
            cost["bytes accessed"] = (measured[0] if isinstance(measured, (list, tuple)) else measured)["bytes accessed"]
        else:
            single = jax.jit(steps.bind(steps.train_step, model=self.model, tx=self.tx, noise=self.noise,
                                        chunks=self.chunks, ema_decay=float(config.ema_decay),
                                        loss=config.get("loss", "mse")))
            one_batch = jax.tree.map(lambda a: a[0], self.host[0])
            cost = single.lower(self.state, one_batch, self.rng).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", 0.0)) / b, float(cost.get("bytes accessed", 0.0)) / b


def _noise_seconds(step: _Step, steps_n: int) -> float:
    """The noise model alone on a batch of the step's shape, jitted: seconds per call."""
    b, size = step.config.batch_size, step.size
    crops = np.random.default_rng(0).integers(0, 256, (b, size, size, 3), dtype=np.uint8)
    x = jax.device_put(jnp.asarray(crops, jnp.float32) / 255.0, NamedSharding(step.mesh, P("data")))
    noise_fn = jax.jit(lambda key, x: step.noise(key, x))
    return _time(lambda: noise_fn(step.rng, x), max(60, 3 * steps_n))  # ~3-20 ms a call: many, or hiccups dominate


def _input_path(step: _Step, paths: List[str], loader_batches: int, calls: int) -> tuple:
    """(the grain loader's images per second alone, loader -> device prefetch -> step images per second)."""
    config, b, k = step.config, step.config.batch_size, step.config.steps_per_call
    images = store.open_splits(paths, "train")
    aug = dict(patch=config.data.patch, flips=config.data.flips, rot90=config.data.rot90, channels=config.data.channels,
               num_threads=config.data.num_threads, prefetch=config.data.prefetch,
               fixed=bool(config.get("noise_fixed", False)))
    it = iter(loader.make_loader(images, b, 0, loader_batches + 10, shard=parallel.process_shard(), **aug))
    for _ in range(5):
        next(it)
    t0 = time.perf_counter()
    for _ in range(loader_batches):
        next(it)
    loader_ips = loader_batches * b / (time.perf_counter() - t0)
    it = iter(loader.make_loader(images, b, 0, (calls + 8) * k, shard=parallel.process_shard(), **aug))
    prefetch = feed.DevicePrefetcher(it, step.batch_sharding, k)
    return loader_ips, k * b / _time(lambda: step(next(prefetch)[0]), calls)


def run(config, steps_n: int = 20, store_path: Optional[str] = None, workdir: str = "/tmp/jaxdenoise-bench",
        loader_batches: int = 200) -> Dict:
    """Measure everything above for ``config``; returns a flat dict (JSON-ready)."""
    if steps_n < 1:
        raise ValueError(f"--steps must be >= 1 (timed train steps), got {steps_n}")
    config_lib.validate(config)
    step = _Step(config)
    k, b = config.steps_per_call, config.batch_size
    calls = max(1, steps_n // k)
    step_s = _time(step, calls) / k
    train_ips = b / step_s
    noise_s = _noise_seconds(step, steps_n)
    flops, nbytes = step.cost_per_image()
    device = jax.devices()[0]
    peak_flops, peak_bw, peak_src = device_peaks(device, config.dtype)
    flop_frac, byte_frac = flops * train_ips / peak_flops, nbytes * train_ips / peak_bw
    paths = [store_path] if store_path else feed.resolve_stores(config, workdir)
    loader_ips, e2e_ips = _input_path(step, paths, loader_batches, calls)
    stats = device.memory_stats() or {}
    peak_mem = stats.get("peak_bytes_in_use") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "device": f"{device.platform}:{device.device_kind}", "num_devices": step.mesh.devices.size,
        "jax": jax.__version__, "model": config.model.name, "noise": config.noise, "dtype": config.dtype,
        "noise_setting": config_lib.noise_setting(config),
        "batch_size": b, "steps_per_call": k, "micro_batches": step.chunks, "image_size": step.size,
        "compile_s": round(step.compile_s, 3), "step_ms": round(1e3 * step_s, 3),
        "train_img_per_s": round(train_ips, 2), "noise_ms": round(1e3 * noise_s, 3),
        "noise_fraction": round(noise_s / step_s, 4), "loader_img_per_s": round(loader_ips, 1),
        "end_to_end_img_per_s": round(e2e_ips, 2), "end_to_end_over_step": round(e2e_ips / train_ips, 3),
        "flops_per_img": flops, "bytes_per_img": nbytes, "peak_flops": peak_flops, "peak_bytes_per_s": peak_bw,
        "peak_source": peak_src, "roofline_fraction": round(max(flop_frac, byte_frac), 4),
        "flop_fraction": round(flop_frac, 4), "bytes_fraction": round(byte_frac, 4),
        "peak_mem_bytes": int(peak_mem), "peak_mem_source": "device" if stats else "process RSS",
        "convolutions": "oneDNN" if onednn.enabled(config.dtype) else "XLA",
    }


# The PyTorch peers (shared/peers): the same layer table as our model of that name, trained as the peer's
# docstring says: its loss, and shot noise torch.poisson(peak * x) / peak with peak 30, unclipped.
PEERS = {"paper": ("torch_paper_ae.py", "mse"), "unet": ("torch_unet.py", "l1")}
PEER_NOISE = "poisson:30:noclip"


def peer_path(model_name: str, peers_dir: str) -> str:
    """The PyTorch peer of ``model_name`` in ``peers_dir``; ValueError when there is none."""
    if model_name not in PEERS:
        raise ValueError(f"--compare-torch: no PyTorch peer for model {model_name!r} (peers: {', '.join(PEERS)})")
    return os.path.join(peers_dir, PEERS[model_name][0])


def like_for_like(config):
    """``config`` as the peer trains: its loss and noise, no EMA, clean targets, re-noised batches (the row
    beside the as-shipped one: a config's own noise mixture and EMA cost time the peer does not spend)."""
    c = config.copy_and_resolve_references()
    with c.unlocked():
        c.noise, c.ema_decay, c.loss = PEER_NOISE, 0.0, PEERS[config.model.name][1]
        if "target" in c:
            c.target = "clean"
        if "noise_fixed" in c:
            c.noise_fixed = False
    return c


def step_timer(config) -> Callable[[int], float]:
    """A function ``n -> seconds per step`` timing ``config``'s compiled train step on device-resident random
    batches (``_time``: the median of 3 windows), compiled once here; for alternating with other programs."""
    return _Step(config).seconds


# The peer's configuration the comparison is against: the fastest on CPU (channels_last with the same malloc
# settings as ours); the other layouts run once for the record.
TORCH_BEST = "channels_last+malloc"


def _torch_run(peer: str, args: List[str], device: str, layout: str) -> Dict:
    """One run of the peer: ``layout`` is nchw or channels_last, ``+malloc`` adding (on CPU) the glibc malloc
    settings our scripts use (``hostmem.GLIBC_ENV``), so that neither side has an allocator edge."""
    env = {**os.environ, **hostmem.GLIBC_ENV} if layout.endswith("+malloc") and device == "cpu" else None
    flags = ["--channels-last"] if layout.startswith("channels_last") else []
    out = subprocess.run([sys.executable, peer, "--device", device] + args + flags, capture_output=True, text=True,
                         env=env)
    if out.returncode != 0:
        raise errors.RunError(f"torch reference failed: {out.stderr.strip().splitlines()[-1] if out.stderr else ''}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _torch_layouts(device: str) -> List[str]:
    return [TORCH_BEST, "channels_last", "nchw+malloc", "nchw"] if device == "cpu" else ["channels_last", "nchw"]


def compare_torch(config, peer: str, steps_n: int, passes: int = 3, device: str = "cpu") -> Dict:
    """Our train step beside the PyTorch peer's, alternated: ``passes`` rounds of (our step as configured,
    our step like-for-like, one run of the peer's best configuration, ``TORCH_BEST`` on CPU), each side's
    figure the median over the rounds; then one run of each other layout of the peer, for the record. A
    bfloat16 config is compared with the peer's bf16 autocast (``--amp``)."""
    ours = {"shipped": step_timer(config), "like_for_like": step_timer(like_for_like(config))}
    b, size = config.batch_size, config.data.patch or config.data.size
    args = ["--batch", str(b), "--size", str(size), "--steps", str(max(steps_n, 10))]
    args += ["--amp"] if config.dtype == "bfloat16" else []  # bfloat16 against the peer's bf16 autocast
    layouts = _torch_layouts(device)
    rounds = []
    for _ in range(passes):
        r = {name: round(b / timer(steps_n), 2) for name, timer in ours.items()}
        run = _torch_run(peer, args, device, layouts[0])
        r["torch"], version = run["img_per_s"], run["torch"]
        rounds.append(r)
    once = {layout: _torch_run(peer, args, device, layout)["img_per_s"] for layout in layouts[1:]}
    med = {k: float(np.median([r[k] for r in rounds])) for k in ("shipped", "like_for_like", "torch")}
    return {"torch_peer": os.path.basename(peer), "torch_passes": passes, "torch_rounds": rounds,
            "torch_layout": layouts[0], "torch_img_per_s": med["torch"], "torch_other_layouts": once,
            "torch_version": version, "alternated_img_per_s": med["shipped"],
            "like_for_like_img_per_s": med["like_for_like"], "like_for_like_noise": PEER_NOISE,
            "ratio_vs_torch": round(med["shipped"] / med["torch"], 3),
            "ratio_like_for_like_vs_torch": round(med["like_for_like"] / med["torch"], 3)}


def compare_torch_inference(config, peer: str, passes: int = 2, repeats: int = 3,
                            shape: Optional[Tuple[int, int]] = None) -> List[Dict]:
    """Whole-image inference of ``config``'s model (fresh weights, a ``shape`` image: ``INFERENCE_SHAPE`` by
    default, best of ``repeats`` after a warm-up) beside the peer's (``--inference HxW``, ``TORCH_BEST``),
    alternated over ``passes`` rounds: one row per side and round, then the medians' ratio."""
    from jaxdenoise.inference import denoiser
    h, w = shape or INFERENCE_SHAPE
    img = np.random.default_rng(0).random((h, w, 3)).astype(np.float32)
    model = models.create(config.model, config.dtype)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, model.in_channels)))["params"]
    den = denoiser.Denoiser(denoiser.make_apply(model, params), denoiser.Geometry.of(model))
    den.run(img)  # compile
    mp, name, rows = h * w / 1e6, config.model.name, []
    for i in range(passes):
        ours = min(_wall(lambda: den.run(img)) for _ in range(repeats)) / mp
        # (the peer's --inference runs float32 whatever --amp says)
        theirs = _torch_run(peer, ["--inference", f"{h}x{w}", "--steps", "30"], "cpu", TORCH_BEST)["s_per_mp"]
        for case, spm in ((f"ours, round {i + 1}", ours), (f"torch {TORCH_BEST}, round {i + 1}", theirs)):
            rows.append({"model": name, "case": case, "s_per_mp": spm, "mp_per_s": 1.0 / spm, "image": f"{w}x{h}",
                         "device": jax.devices()[0].device_kind})
    ours = float(np.median([r["s_per_mp"] for r in rows if r["case"].startswith("ours")]))
    theirs = float(np.median([r["s_per_mp"] for r in rows if r["case"].startswith("torch")]))
    rows.append({"model": name, "case": "ours / torch", "s_per_mp": ours, "mp_per_s": 1.0 / ours, "image": f"{w}x{h}",
                 "device": jax.devices()[0].device_kind, "speed_vs_torch": round(theirs / ours, 3)})
    return rows


# XLA's "bytes accessed" counts every operand read and write; above the memory bandwidth they are cache hits.
_CACHE_NOTE = ": above 100 % XLA's byte count is mostly served from cache"


def format_table(r: Dict) -> str:
    rows = [
        ("device", r["device"]), ("batch / steps_per_call / micro-batches / dtype / convolutions",
         f"{r['batch_size']} / {r['steps_per_call']} / {r['micro_batches']} / {r['dtype']} / {r['convolutions']}"),
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
        for i, t in enumerate(r["torch_rounds"]):
            rows.append((f"round {i + 1}: ours / like-for-like / PyTorch",
                         f"{t['shipped']:.1f} / {t['like_for_like']:.1f} / {t['torch']:.1f} img/s"))
        others = ", ".join(f"{n} {v:.1f}" for n, v in r["torch_other_layouts"].items())
        rows.append((f"PyTorch peer ({r['torch_peer']}, median of {r['torch_passes']})",
                     f"{r['torch_img_per_s']:.1f} img/s ({r['torch_layout']}, torch {r['torch_version']}; once each: "
                     f"{others})"))
        rows.append(("jaxdenoise / PyTorch, alternated", f"{r['ratio_vs_torch']:.2f}x as configured "
                     f"({r['alternated_img_per_s']:.1f} img/s), {r['ratio_like_for_like_vs_torch']:.2f}x like-for-like "
                     f"({r['like_for_like_img_per_s']:.1f} img/s: {r['like_for_like_noise']}, no EMA, the peer's loss)"))
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


def run_inference(config, names: List[str], repeats: int = 3, shape: Optional[Tuple[int, int]] = None) -> List[Dict]:
    """Seconds per megapixel (and MP/s) of each model's ``Denoiser`` on a ``shape`` image (height, width:
    ``INFERENCE_SHAPE`` by default; the GPU check's dry run takes a small one): whole,
    in tiles of 256 and 512 px (overlap 32, or half the receptive field), and the ``.jaxdn`` export of the same
    weights run whole; best of ``repeats`` after a warm-up call. Fresh weights: speed does not depend on them.
    ``names``: registered models; the config's own model keeps its fields, the others get their defaults."""
    from jaxdenoise.inference import denoiser, export, exported
    h, w = shape or INFERENCE_SHAPE
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
        den = denoiser.Denoiser(denoiser.make_apply(model, params), denoiser.Geometry.of(model))
        info = export.model_info(cfg, params, model)
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.jaxdn")
            with open(path, "wb") as f:
                f.write(export.export_bytes(cfg, params, model, info, platforms=(jax.default_backend(),)))
            exp = exported.load_exported(path)
            cases = [("whole", den, 0), ("tiles 256", den, 256), ("tiles 512", den, 512), ("exported, whole", exp, 0)]
            for label, d, tile in cases:
                d.run(img, tile=tile)  # compile
                best = min(_wall(lambda: d.run(img, tile=tile)) for _ in range(repeats))
                out.append({"model": name, "case": label, "s_per_mp": best / mp, "mp_per_s": mp / best,
                            "image": f"{w}x{h}", "device": jax.devices()[0].device_kind})
    return relative_to_whole(out)


def relative_to_whole(rows: List[Dict]) -> List[Dict]:
    """Set each row's ``vs_whole``: its s/MP over its model's ``whole`` row (in place; returns ``rows``)."""
    base = {r["model"]: r["s_per_mp"] for r in rows if r["case"] == "whole"}
    for r in rows:
        r["vs_whole"] = r["s_per_mp"] / base[r["model"]]
    return rows


def _wall(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def format_inference_table(rows: List[Dict]) -> str:
    lines = [f"{'model':<8} {'case':<30} {'s/MP':>8} {'MP/s':>8} {'vs whole':>9}"]
    for r in rows:
        rel = (f"{r['vs_whole']:>8.2f}x" if "vs_whole" in r else
               f"  {r['speed_vs_torch']:.2f}x the peer's speed (medians)" if "speed_vs_torch" in r else "")
        lines.append(f"{r['model']:<8} {r['case']:<30} {r['s_per_mp']:>8.3f} {r['mp_per_s']:>8.3f} {rel}")
    return "\n".join(lines) + f"\n({rows[0]['device']}, one {rows[0]['image']} image, best of 3 after a warm-up)"


def unet_conv_layers(widths=(32, 64, 128), side: int = 64) -> List[tuple]:
    """The U-Net's convolutions (``models.unet``): (name, kind, input side, Cin, Cout), kind ``conv`` (3x3,
    stride 1) or ``up`` (the 3x3 stride-2 transposed conv, input side given)."""
    out, s = [], side
    for i, w in enumerate(widths):
        cin = 3 if i == 0 else widths[i - 1]
        out += [(f"enc{i}_a", "conv", s, cin, w), (f"enc{i}_b", "conv", s, w, w)]
        s //= 2 if i < len(widths) - 1 else 1
    for i in reversed(range(len(widths) - 1)):
        w = widths[i]
        out += [(f"up{i}", "up", side >> (i + 1), widths[i + 1], w), (f"dec{i}_a", "conv", side >> i, 2 * w, w),
                (f"dec{i}_b", "conv", side >> i, w, w)]
    return out + [("out", "conv", side, widths[0], 3)]


# The peer side of ``layer_times``: PyTorch's Conv2d / ConvTranspose2d (channels_last, as the peer's fastest
# configuration) timed alone per product; run in a subprocess (torch is not a dependency of the package).
_TORCH_LAYERS = r"""
import json, sys, time, torch
batch, reps, kind, s, cin, cout = json.loads(sys.argv[1])
cl = torch.channels_last
if kind == "conv":
    m = torch.nn.Conv2d(cin, cout, 3, padding=1)
else:
    m = torch.nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
m = m.to(memory_format=cl)
x = torch.randn(batch, cin, s, s).to(memory_format=cl).requires_grad_(True)
y = m(x)
g = torch.randn_like(y)
def best(f):
    f(); f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return 1e3 * sorted(ts)[len(ts) // 2]
with torch.no_grad():
    fwd = best(lambda: m(x))
dx = best(lambda: torch.autograd.grad(y, x, g, retain_graph=True))
dk = best(lambda: torch.autograd.grad(y, m.weight, g, retain_graph=True))
print(json.dumps({"fwd": fwd, "dx": dx, "dk": dk}))
"""


def layer_times(batch: int = 8, side: int = 64, reps: int = 20, torch_too: bool = True) -> List[Dict]:
    """Each U-Net convolution's forward, input gradient and kernel gradient timed alone (ms, the median of
    ``reps`` calls), with XLA's convolutions, with oneDNN's (when loaded) and in PyTorch (channels_last, with
    our malloc settings), one layer after another so that the three share the machine's state."""
    rows = []
    for name, kind, s, cin, cout in unet_conv_layers(side=side):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((batch, s, s, cin)), jnp.float32)
        k = jnp.asarray(0.1 * rng.standard_normal((3, 3, cin, cout)), jnp.float32)
        from jaxdenoise.models import layers
        op = layers.conv3x3 if kind == "conv" else layers.conv_transpose_2x
        row = {"layer": name, "kind": kind, "side": s, "cin": cin, "cout": cout,
               "gflop": 2 * batch * s * s * 9 * cin * cout / 1e9}
        impls = [("xla", onednn.xla_only)] + ([("onednn", contextlib.nullcontext)] if onednn.enabled(jnp.float32) else [])
        for impl, ctx in impls:
            with ctx():
                y = jax.eval_shape(op, x, k)
                g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
                fwd = jax.jit(lambda x, k: op(x, k))  # a new function: jit's cache holds the other path's trace
                dx = jax.jit(lambda x, k, g: jax.vjp(lambda x: op(x, k), x)[1](g)[0])
                dk = jax.jit(lambda x, k, g: jax.vjp(lambda k: op(x, k), k)[1](g)[0])
                for prod, fn, args in (("fwd", fwd, (x, k)), ("dx", dx, (x, k, g)), ("dk", dk, (x, k, g))):
                    row[f"{impl}_{prod}"] = _median_ms(lambda: fn(*args), reps)
        if torch_too:
            out = subprocess.run([sys.executable, "-c", _TORCH_LAYERS, json.dumps([batch, reps, kind, s, cin, cout])],
                                 capture_output=True, text=True, env={**os.environ, **hostmem.GLIBC_ENV})
            if out.returncode != 0:
                raise errors.RunError(f"torch layer timing failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
            row.update({f"torch_{p}": v for p, v in json.loads(out.stdout.strip().splitlines()[-1]).items()})
        rows.append(row)
    return rows


def _median_ms(fn, reps: int) -> float:
    jax.block_until_ready(fn())
    jax.block_until_ready(fn())
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


def format_layer_table(rows: List[Dict]) -> str:
    """One line per layer: ms per product (fwd / dx / dk) for each implementation measured, and totals."""
    impls = [i for i in ("xla", "onednn", "torch") if f"{i}_fwd" in rows[0]]
    head = f"{'layer':<8} {'shape':<16} " + " ".join(f"{i + ' fwd/dx/dk ms':>26}" for i in impls)
    lines = [head]
    for r in rows:
        shape = f"{r['side']}px {r['cin']}->{r['cout']}"
        lines.append(f"{r['layer']:<8} {shape:<16} " + " ".join(
            f"{r[i + '_fwd']:8.2f} {r[i + '_dx']:8.2f} {r[i + '_dk']:8.2f}" for i in impls))
    tot = {i: [sum(r[f"{i}_{p}"] for r in rows) for p in ("fwd", "dx", "dk")] for i in impls}
    lines.append(f"{'total':<8} {'':<16} " + " ".join(f"{t[0]:8.2f} {t[1]:8.2f} {t[2]:8.2f}" for t in tot.values()))
    return "\n".join(lines)
