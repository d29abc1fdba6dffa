"""The GPU check behind ``scripts/gpu_check.sh``: every measurement a rare, short GPU window needs, in one
command that keeps going past a failed step and writes everything under one folder.

Steps (each a subprocess with its own time limit; a failure is recorded and the next step runs):

1. ``env``: GPU name and driver (nvidia-smi), jax / jaxlib / flax / optax / orbax versions, ``jax.devices()``.
2. ``tests``: the test suite minus the tests that need ImageMagick (marker ``imagemagick``), under a time
   limit; then the exact-resume test (stopped mid-epoch, all state compared) with XLA's deterministic GPU
   ops, which must give a bitwise-equal run. The dry run runs one quick test in their place (make test runs them all).
3. ``store``: a store of FFHQ's size (56,000 images at 128x128, random crops and flips of the built-in
   photos, written with numpy: the GPU image has no ImageMagick).
4. ``benchmark``: ``scripts/benchmark.py --json`` for the paper model at batch 16 (steps_per_call 1 and 8)
   and 256, float32 and bfloat16, on device-resident batches, with the roofline fraction from the GPU's
   datasheet peaks; every registered model at batch 16 and 256.
5. ``torch``: the PyTorch reference (the paper's model) on the same GPU: eager and ``torch.compile``,
   channels_last, float32 and AMP (bf16 autocast), batch 16 and 256; ratios against step 4.
6. ``unet``: the U-Net (the model the zoo ships) beside its PyTorch peer ``torch_unet.py``, float32 and
   bfloat16 (the peer's AMP): training at batch 16 of 128x128 images and whole-image inference of one
   768x512 photo (s/MP).
7. ``epoch``: one real training epoch of ``configs/paper.py`` on the step-3 store, device-resident: wall
   time, the projection to the paper's 25 epochs, the validation PSNR row.

Then ``summary.json`` (every field present; ``null`` where a step failed or was skipped, with the reason in
``steps``) and ``summary.md`` (a table). ``--dry-run`` runs every step on the CPU at tiny sizes (a few
minutes), so that the script cannot rot: ``tests/test_gpu_check.py`` runs it in ``make test``.

What the GPU machine lacks travels in ``.gpu_check/`` (git-ignored), filled here by
``scripts/gpu_check.sh --prepare``: the wheels of ``../shared/wheels/py312``, the PyTorch peers
``../shared/peers/torch_paper_ae.py`` and ``torch_unet.py``, and the built-in photos as ``seed_photos.npz``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# what travels to the GPU machine (git-ignored); tests point it elsewhere
CARRY = os.environ.get("JAXDENOISE_GPU_CHECK_CARRY") or os.path.join(REPO, ".gpu_check")
FFHQ_TRAIN_IMAGES = 56_000  # FFHQ's 70,000 at the paper's 80/20 split
PAPER_EPOCHS = 25

# every key of summary.json; a step fills its own (None when it failed or was skipped)
FIELDS = {
    "env": ["gpu", "driver", "python", "jax", "jaxlib", "flax", "optax", "orbax", "devices"],
    "tests": ["passed", "failed", "skipped", "seconds", "timed_out", "deterministic_resume_bitwise"],
    "store": ["images", "size", "seconds", "path"],
    "benchmark": ["runs", "models"],
    "torch": ["runs", "eager_b16_img_per_s", "ratio_jax_spc_vs_torch_eager_b16"],
    "unet": ["runs"],
    "epoch": ["images", "steps", "wall_s", "train_img_per_s", "projected_25_epochs_s", "val_psnr", "val_noisy_psnr"],
}


MARKER = ".jaxdenoise-gpu-check"  # in --out and in the carry folder: their files are this command's


class Check:
    """Runs the steps, records each one's status, writes the summary.

    ``out`` must be new, empty, or a folder an earlier check wrote (``outputs.own_folder``); the FFHQ-sized
    store and the epoch's workdir live in ``scratch``, a folder this check creates (under ``out`` in a dry
    run, else in the system's temporary folder) and removes at the end (``close``): nothing else is deleted.
    """

    def __init__(self, out: str, dry_run: bool, budget_s: float):
        from jaxdenoise import outputs
        self.out = outputs.own_folder(out, "--out", MARKER)
        self.dry, self.t0, self.budget = dry_run, time.time(), budget_s
        import tempfile
        self.scratch = tempfile.mkdtemp(prefix="gpu_check_scratch-", dir=self.out if dry_run else None)
        self.summary: Dict = {"dry_run": dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "steps": {}, **{k: {f: None for f in v} for k, v in FIELDS.items()}}
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]), PYTHONUNBUFFERED="1")
        if dry_run:
            self.env["JAX_PLATFORMS"] = "cpu"

    def left(self) -> float:
        return self.budget - (time.time() - self.t0)

    def sh(self, cmd: List[str], timeout: float, log: str, env: Optional[dict] = None):
        """Run ``cmd`` with a time limit; its output goes to ``OUT/<log>``. Returns (returncode or None when
        it timed out, stdout)."""
        timeout = max(1.0, min(timeout, self.left()))
        with open(os.path.join(self.out, log), "a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            try:
                p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, timeout=timeout,
                                   env=env or self.env, cwd=REPO)
            except subprocess.TimeoutExpired as e:
                out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
                f.write(out + f"\n[timed out after {timeout:.0f} s]\n")
                return None, out
            f.write(p.stdout)
        return p.returncode, p.stdout

    def step(self, name: str, fn: Callable[[], Optional[str]]) -> None:
        """Run one step; an exception marks it failed (one line), and the check goes on."""
        t0 = time.time()
        print(f"[gpu_check] {name}...", flush=True)
        try:
            note = fn()
            status = "skipped" if note and note.startswith("skipped") else "ok"
        except Exception as e:  # keep going: the next step may still bring back numbers
            note, status = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}", "failed"
        self.summary["steps"][name] = {"status": status, "seconds": round(time.time() - t0, 1), "note": note}
        print(f"[gpu_check] {name}: {status} ({time.time() - t0:.0f} s){': ' + note if note else ''}", flush=True)
        self.write()

    def write(self) -> None:
        from jaxdenoise import fsutil
        fsutil.atomic_write(os.path.join(self.out, "summary.json"), json.dumps(self.summary, indent=1) + "\n")
        fsutil.atomic_write(os.path.join(self.out, "summary.md"), markdown(self.summary))

    def close(self) -> None:
        """Remove the scratch folder (this check created it: it is this check's to delete)."""
        shutil.rmtree(self.scratch, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------------------
_ENV_PY = """
import json, platform, jax, jaxlib, flax, optax
from importlib.metadata import version
print(json.dumps({"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                  "flax": version("flax"), "optax": version("optax"), "orbax": version("orbax-checkpoint"),
                  "devices": [str(d) for d in jax.devices()], "kind": jax.devices()[0].device_kind}))
"""


def step_env(c: Check) -> Optional[str]:
    e = c.summary["env"]
    if shutil.which("nvidia-smi"):
        rc, out = c.sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                       30, "env.log")
        if rc == 0 and out.strip():
            name, driver, mem = [s.strip() for s in out.strip().splitlines()[0].split(",")]
            e["gpu"], e["driver"] = f"{name} ({mem})", driver
    rc, out = c.sh([sys.executable, "-c", _ENV_PY], 120, "env.log")
    if rc != 0:
        raise RuntimeError(f"jax does not start (rc={rc}); see env.log")
    info = json.loads(out.strip().splitlines()[-1])
    e.update({k: info[k] for k in ("python", "jax", "jaxlib", "flax", "optax", "orbax", "devices")})
    if e["gpu"] is None:
        e["gpu"] = info["kind"]
    return None


def _pytest_counts(text: str) -> Dict[str, int]:
    import re
    counts = {}
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", text):
        counts[what.rstrip("s") if what.startswith("error") else what] = int(n)
    return counts


def step_tests(c: Check) -> Optional[str]:
    t = c.summary["tests"]
    resume = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
              "tests/test_train.py::test_resume_mid_epoch_is_bitwise_identical"]  # the real resume test, always
    env = dict(c.env, XLA_FLAGS=(c.env.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip())
    t0 = time.time()
    if c.dry:  # make test is what runs this, and the resume test with it: one quick test stands for both
        quick = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/test_loader.py::test_errors"]
        rc, out = c.sh(quick, 180, "tests.log", env=env)
        rc2 = rc
        limit = 180
    else:
        suite = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests", "-m", "not imagemagick",
                 "--ignore=tests/test_faultcheck.py", "--ignore=tests/test_gpu_check.py",
                 "--ignore=tests/test_scaling.py"]  # these three run CPU processes only: no GPU news
        limit = 240
        rc, out = c.sh(suite, limit, "tests.log")
        rc2, _ = c.sh(resume, 180, "tests.log", env=env)
    counts = _pytest_counts(out.strip().splitlines()[-1] if out.strip() else "")
    t.update(passed=counts.get("passed", 0), failed=counts.get("failed", 0) + counts.get("error", 0),
             skipped=counts.get("skipped", 0), seconds=round(time.time() - t0, 1), timed_out=rc is None)
    t["deterministic_resume_bitwise"] = None if c.dry else rc2 == 0  # a dry run does not run it
    if rc is None:
        return f"the suite hit its {limit} s limit ({t['passed']} passed so far)"
    return None if rc == 0 and rc2 == 0 else f"failures: suite rc={rc}, deterministic resume rc={rc2}; see tests.log"


def _store_dir(c: Check) -> str:
    return os.path.join(c.scratch, "store")


def step_store(c: Check) -> Optional[str]:
    """FFHQ-sized store from the carried photos: random square crops (``_crop``), with numpy only. Validation
    holds 0.5 % as many crops."""
    import numpy as np

    from jaxdenoise.data import store
    n, size = (128, 32) if c.dry else (FFHQ_TRAIN_IMAGES, 128)
    seed = os.path.join(CARRY, "seed_photos.npz")
    if not os.path.isfile(seed):
        raise FileNotFoundError(f"{seed} is missing: run scripts/gpu_check.sh --prepare on the development machine")
    photos = list(np.load(seed).values())
    t0 = time.time()
    path = _store_dir(c)
    rng = np.random.default_rng(0)
    n_val = max(8, n // 200)
    with store.StoreWriter(path, size, {"train": n, "val": n_val}, pngs=False) as w:
        for split, count in (("train", n), ("val", n_val)):
            for i in range(count):
                w.add(split, _crop(photos[i % len(photos)], size, rng), f"crop{i}")
        w.close(seed=0, val_fraction=None, mode="gpu-check-crops", source="gpu_check", skipped=[])
    s = c.summary["store"]
    s.update(images=n, size=size, seconds=round(time.time() - t0, 1), path=path)
    return None


def _crop(photo, size: int, rng):
    """A random square crop of ``photo`` whose side is ``f * size`` (f drawn from 1 .. short side // size),
    averaged over f x f blocks down to ``size``, mirrored half of the time: ``uint8 [size, size, 3]``."""
    import numpy as np
    h, w = photo.shape[:2]
    f = int(rng.integers(1, min(h, w) // size + 1))
    side = f * size
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = photo[y:y + side, x:x + side].astype(np.float32).reshape(size, f, size, f, 3).mean(axis=(1, 3))
    crop = crop[:, ::-1] if rng.random() < 0.5 else crop
    return np.clip(crop + 0.5, 0, 255).astype(np.uint8)


def _bench(c: Check, tag: str, overrides: Dict[str, object], models: bool = False, config: str = "paper.py",
           extra: Optional[List[str]] = None) -> Optional[dict]:
    js = os.path.join(c.out, f"bench_{tag}.json")
    steps = "2" if c.dry else "30"
    cmd = [sys.executable, os.path.join(REPO, "scripts", "benchmark.py"), "--config",
           os.path.join(REPO, "configs", config), "--json", js, "--steps", steps, "--store", _store_dir(c)]
    cmd += [f"--config.{k}={v}" for k, v in overrides.items()] + list(extra or [])
    if models:
        cmd += ["--models", "paper" if c.dry else "all"]
    rc, _ = c.sh(cmd, 150, "benchmark.log")
    if rc != 0 or not os.path.isfile(js):
        return None
    with open(js) as f:
        doc = json.load(f)
    return doc["rows"] if "rows" in doc else doc  # a list of rows is written inside {"written_by", "rows"}


def step_benchmark(c: Check) -> Optional[str]:
    b = c.summary["benchmark"]
    size = c.summary["store"]["size"] or (32 if c.dry else 128)  # the store's side: the loader reads it
    small, big = (4, 8) if c.dry else (16, 256)
    runs, failed = [], []
    grid = [(d, batch, k) for d in ("float32", "bfloat16") for batch, k in ((small, 1), (small, 8), (big, 1))]
    if c.dry:  # every code path, not every size: one run (bfloat16, several steps per call: 2, cheap to compile)
        grid = [("bfloat16", small, 2)]
    for dtype, batch, k in grid:
        over = {"batch_size": batch, "steps_per_call": k, "dtype": dtype, "data.size": size,
                "data.num_threads": 4, "steps_per_epoch": 0}
        r = _bench(c, f"paper_{dtype}_b{batch}_k{k}", over)
        if r is None:
            failed.append(f"{dtype} b{batch} k{k}")
            continue
        runs.append({"model": "paper", "dtype": dtype, "batch": batch, "steps_per_call": k,
                     "img_per_s": r.get("train_img_per_s"), "step_ms": r.get("step_ms"),
                     "e2e_img_per_s": r.get("end_to_end_img_per_s"), "roofline": r.get("roofline_fraction"),
                     "peak_source": r.get("peak_source"), "compile_s": r.get("compile_s")})
    b["runs"] = runs
    models = []
    for batch in (small,) if c.dry else (small, big):
        r = _bench(c, f"models_b{batch}", {"batch_size": batch, "data.size": size}, models=True)
        if r is None:
            failed.append(f"models b{batch}")
            continue
        for row in r:
            models.append({"batch": batch, "model": row["model"], "params": row["params"],
                           "img_per_s": row["train_img_per_s"], "gflops_per_image": row["flops_per_img"] / 1e9,
                           "roofline": row["roofline_fraction"]})
    b["models"] = models
    return f"failed: {', '.join(failed)}; see benchmark.log" if failed else None


def step_torch(c: Check) -> Optional[str]:
    t = c.summary["torch"]
    peer = os.path.join(CARRY, "peers", "torch_paper_ae.py")
    if not os.path.isfile(peer):
        return "skipped: no PyTorch reference in .gpu_check/peers (scripts/gpu_check.sh --prepare copies it)"
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, env=c.env)
    if probe.returncode != 0:
        return "skipped: torch is not installed here"
    cuda = probe.stdout.strip() == "True"
    device = "cuda" if cuda and not c.dry else "cpu"
    size = 16 if c.dry else 128
    small, big = (4, 8) if c.dry else (16, 256)
    variants = [("eager", []), ("eager channels_last", ["--channels-last"]),
                ("eager channels_last amp", ["--channels-last", "--amp"]),
                ("compile channels_last", ["--channels-last", "--compile"]),
                ("compile channels_last amp", ["--channels-last", "--compile", "--amp"])]
    if c.dry:
        variants = variants[:2]
    runs = []
    for batch in (small, big):
        for name, flags in variants:
            cmd = [sys.executable, peer, "--device", device, "--batch", str(batch), "--size", str(size),
                   "--steps", "3" if c.dry else "30"] + flags
            rc, out = c.sh(cmd, 240, "torch.log")
            ips = json.loads(out.strip().splitlines()[-1])["img_per_s"] if rc == 0 and out.strip() else None
            runs.append({"variant": name, "batch": batch, "img_per_s": ips})
    t["runs"] = runs
    eager = next((r["img_per_s"] for r in runs if r["variant"] == "eager" and r["batch"] == small), None)
    t["eager_b16_img_per_s"] = eager
    spc = [r["img_per_s"] for r in c.summary["benchmark"]["runs"] or []
           if r["batch"] == small and r["steps_per_call"] > 1 and r["dtype"] == "float32" and r["img_per_s"]]
    if eager and spc:
        t["ratio_jax_spc_vs_torch_eager_b16"] = round(max(spc) / eager, 2)
    return None


def step_unet(c: Check) -> Optional[str]:
    """The U-Net pair: ours (benchmark.py, configs/unet_faces.py on whole store images) and the peer's, for
    float32 and bfloat16 (AMP), training at batch 16 and whole-image inference."""
    size = c.summary["store"]["size"] or (32 if c.dry else 128)
    batch = 4 if c.dry else 16
    peer = os.path.join(CARRY, "peers", "torch_unet.py")
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, env=c.env)
    has_torch = os.path.isfile(peer) and probe.returncode == 0
    device = "cuda" if has_torch and probe.stdout.strip() == "True" and not c.dry else "cpu"
    runs, failed = [], []
    for dtype in ("float32",) if c.dry else ("float32", "bfloat16"):
        over = {"batch_size": batch, "data.size": size, "data.patch": 0, "dtype": dtype, "steps_per_epoch": 0}
        r = _bench(c, f"unet_{dtype}", over, config="unet_faces.py")
        inf = _bench(c, f"unet_{dtype}_inference", {"dtype": dtype}, config="unet_faces.py",
                     extra=["--inference", "config"] + (["--inference-size", "64x96"] if c.dry else []))
        whole = next((row["s_per_mp"] for row in inf or [] if row["case"] == "whole"), None)
        row = {"dtype": dtype, "batch": batch, "size": size, "jax_img_per_s": r and r.get("train_img_per_s"),
               "jax_s_per_mp": whole, "torch_img_per_s": None, "torch_s_per_mp": None}
        if r is None or inf is None:
            failed.append(f"ours {dtype}")
        if has_torch:
            amp = ["--amp"] if dtype == "bfloat16" else []
            base = [sys.executable, peer, "--device", device, "--channels-last"] + amp
            rc, out = c.sh(base + ["--batch", str(batch), "--size", str(size), "--steps", "3" if c.dry else "30"],
                           240, "torch_unet.log")
            row["torch_img_per_s"] = json.loads(out.strip().splitlines()[-1])["img_per_s"] if rc == 0 else None
            rc, out = c.sh(base + ["--inference", "64x96" if c.dry else "512x768", "--steps", "10"], 240,
                           "torch_unet.log")
            row["torch_s_per_mp"] = json.loads(out.strip().splitlines()[-1])["s_per_mp"] if rc == 0 else None
        runs.append(row)
    c.summary["unet"]["runs"] = runs
    if failed:
        raise RuntimeError(f"{', '.join(failed)}; see benchmark.log")
    return None if has_torch else "ours only: no PyTorch peer in .gpu_check/peers or no torch here"


def step_epoch(c: Check) -> Optional[str]:
    e = c.summary["epoch"]
    wd = os.path.join(c.scratch, "epoch")
    over = {"data.dir": _store_dir(c), "num_epochs": 1, "data.device_resident": True, "data.flips": False,
            "log_every_steps": 500}
    if c.dry:
        over.update({"data.size": 32, "batch_size": 8})
    cmd = [sys.executable, os.path.join(REPO, "scripts", "train.py"), "--config",
           os.path.join(REPO, "configs", "paper.py"), "--workdir", wd] + [f"--config.{k}={v}" for k, v in over.items()]
    t0 = time.time()
    rc, _ = c.sh(cmd, 300, "epoch.log")
    wall = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"train.py failed (rc={rc}); see epoch.log")
    from jaxdenoise import run_io
    rows = run_io.read_rows(wd)
    train = [r for r in rows if r["kind"] == "train"]
    ev = [r for r in rows if r["kind"] == "eval"][-1]
    steps = ev["step"]
    ips = [r["img_per_s"] for r in train[1:]] or [r["img_per_s"] for r in train]  # the first holds the compile
    e.update(images=c.summary["store"]["images"], steps=steps, wall_s=round(wall, 1),
             train_img_per_s=round(sum(ips) / len(ips), 1),
             val_psnr=round(ev["psnr"], 2), val_noisy_psnr=round(ev["noisy_psnr"], 2))
    per_epoch = e["images"] / e["train_img_per_s"]
    e["projected_25_epochs_s"] = round(PAPER_EPOCHS * per_epoch, 1)
    return None


STEPS = [("env", step_env), ("tests", step_tests), ("store", step_store), ("benchmark", step_benchmark),
         ("torch", step_torch), ("unet", step_unet), ("epoch", step_epoch)]


def markdown(s: Dict) -> str:
    """The summary as markdown: environment, step status, and one table per measurement."""
    e = s["env"]
    lines = [f"# GPU check {'(dry run, CPU) ' if s['dry_run'] else ''}{s['started']}", "",
             f"- GPU: {e['gpu']}, driver {e['driver']}; python {e['python']}, jax {e['jax']} / jaxlib {e['jaxlib']}, "
             f"flax {e['flax']}, optax {e['optax']}, orbax {e['orbax']}", f"- devices: {e['devices']}", "",
             "| step | status | seconds | note |", "|---|---|---|---|"]
    for name, st in s["steps"].items():
        lines.append(f"| {name} | {st['status']} | {st['seconds']} | {st['note'] or ''} |")
    t = s["tests"]
    lines += ["", f"Tests: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped in {t['seconds']} s"
              f"{' (time limit reached)' if t['timed_out'] else ''}; deterministic resume bitwise: "
              f"{t['deterministic_resume_bitwise']}", ""]
    lines += ["| paper model | batch | steps/call | img/s | ms/step | with loader img/s | roofline |",
              "|---|---|---|---|---|---|---|"]
    for r in s["benchmark"]["runs"] or []:
        roof = f"{100 * r['roofline']:.1f} %" if r.get("roofline") is not None else ""
        lines.append(f"| {r['dtype']} | {r['batch']} | {r['steps_per_call']} | {_f(r['img_per_s'])} | "
                     f"{_f(r['step_ms'], 2)} | {_f(r['e2e_img_per_s'])} | {roof} |")
    if s["benchmark"]["models"]:
        lines += ["", "| model | batch | params | img/s | GFLOP/img | roofline |", "|---|---|---|---|---|---|"]
        for r in s["benchmark"]["models"]:
            roof = f"{100 * r['roofline']:.1f} %" if r.get("roofline") is not None else ""
            lines.append(f"| {r['model']} | {r['batch']} | {r['params']} | {_f(r['img_per_s'])} | "
                         f"{_f(r['gflops_per_image'], 2)} | {roof} |")
    if s["torch"]["runs"]:
        lines += ["", "| PyTorch reference | batch | img/s |", "|---|---|---|"]
        lines += [f"| {r['variant']} | {r['batch']} | {_f(r['img_per_s'])} |" for r in s["torch"]["runs"]]
        lines.append(f"\nJAX (steps_per_call) / PyTorch eager at batch 16: "
                     f"{s['torch']['ratio_jax_spc_vs_torch_eager_b16']}")
    if s["unet"]["runs"]:
        lines += ["", "| U-Net (unet_faces) | batch x side | ours img/s | PyTorch img/s | ours s/MP | PyTorch s/MP |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['batch']} x {r['size']} | {_f(r['jax_img_per_s'])} | {_f(r['torch_img_per_s'])} | "
                  f"{_f(r['jax_s_per_mp'], 3)} | {_f(r['torch_s_per_mp'], 3)} |" for r in s["unet"]["runs"]]
    ep = s["epoch"]
    lines += ["", f"One epoch of configs/paper.py on {ep['images']} images (device-resident): {ep['wall_s']} s wall, "
              f"{ep['train_img_per_s']} img/s in training; 25 epochs projected: {ep['projected_25_epochs_s']} s; "
              f"validation PSNR {ep['val_psnr']} dB (noisy {ep['val_noisy_psnr']})"]
    return "\n".join(lines) + "\n"


def _f(v, digits: int = 1) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def prepare(shared: Optional[str], carry: str = CARRY) -> List[str]:
    """Fill ``carry`` on the development machine: the Python 3.12 wheels and the PyTorch reference from
    ``shared`` (``../shared``; skipped when absent) and the built-in photos as ``seed_photos.npz`` (read
    through the project's Wand path). Returns what was written."""
    import numpy as np

    from jaxdenoise import outputs
    from jaxdenoise.data import builtin
    carry = outputs.own_folder(carry, "the carry folder (JAXDENOISE_GPU_CHECK_CARRY)", MARKER)
    done = []
    if shared and os.path.isdir(os.path.join(shared, "wheels", "py312")):
        dst = os.path.join(carry, "wheels")
        os.makedirs(dst, exist_ok=True)
        for name in sorted(os.listdir(os.path.join(shared, "wheels", "py312"))):
            if name.endswith(".whl"):
                shutil.copy2(os.path.join(shared, "wheels", "py312", name), dst)
                done.append(f"wheels/{name}")
    for name in ("torch_paper_ae.py", "torch_unet.py"):
        peer = os.path.join(shared or "", "peers", name)
        if shared and os.path.isfile(peer):
            os.makedirs(os.path.join(carry, "peers"), exist_ok=True)
            shutil.copy2(peer, os.path.join(carry, "peers"))
            done.append(f"peers/{name}")
    photos = {name: builtin.load_photo(builtin.photo_path(package, name))
              for package, name in builtin.TRAIN_PHOTOS + builtin.VAL_PHOTOS}
    np.savez(os.path.join(carry, "seed_photos.npz"), **photos)
    done.append(f"seed_photos.npz ({len(photos)} photos)")
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="the GPU check (see scripts/tools/gpucheck.py)")
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(REPO, "runs", "gpu_check"))
    ap.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for all steps (each gets what is left)")
    ap.add_argument("--only", default="", help="comma-separated steps to run (default: all): "
                    + ", ".join(name for name, _ in STEPS))
    ap.add_argument("--prepare", action="store_true",
                    help="on the development machine: fill .gpu_check/ with what the GPU machine lacks")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(REPO), "shared"), help="for --prepare")
    a = ap.parse_args(argv)
    only = {s for s in a.only.split(",") if s}
    unknown = sorted(only - {name for name, _ in STEPS})
    if unknown:
        ap.error(f"--only: unknown step {unknown[0]!r}: choose from {', '.join(name for name, _ in STEPS)}")
    if a.budget <= 0:
        ap.error(f"--budget must be > 0 seconds, got {a.budget:g}")
    try:
        if a.prepare:
            for line in prepare(a.shared):
                print(f"{CARRY}/{line}")
            return 0
        c = Check(a.out, a.dry_run, a.budget)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        for name, fn in STEPS:
            if not only or name in only:
                c.step(name, lambda fn=fn: fn(c))
        c.write()
    finally:
        c.close()
    print(markdown(c.summary))
    return 0 if all(st["status"] != "failed" for st in c.summary["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
