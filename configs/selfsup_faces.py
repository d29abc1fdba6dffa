"""Training without clean images, measured against clean targets (issue 20): one recipe, every target.

    python scripts/train.py --config configs/selfsup_faces.py:SETTING --workdir runs/selfsup_SETTING \
        --config.data.dir=/path/to/faces --config.data.cache_dir=runs/cache
    # SETTING: clean | noise2noise | neighbor2neighbor | recorrupted, each also -fixed (one noisy shot per face)

Every setting trains the same residual U-Net (configs/unet_faces.py's, 3 levels 32/64/128) on the same
faces prepared to 128x128 (5 % held out for validation), random 64x64 crops with flips and rotations, for the
same number of steps, on the noise of the published self-supervised tables, unclipped: each image draws
Gaussian sigma 25 or shot noise of peak 30 (``gaussian:25:noclip+poisson:30:noclip``). What changes is the
target (``config.target``) and whether the noise is drawn afresh every step ("re-noised": a synthetic
benchmark's hidden many-copies advantage) or once per image (``noise_fixed``: one noisy shot per scene, as a
user's real data). Scored on the validation faces at both noise levels beside BM3D (docs/quality.md,
"Without clean images").

Measured 2026-12-03 on CPU-2 (2 cores, a slow day: 16-26 img/s for the clean step), 1,000 steps each (8-19 min
wall), first 100 validation faces, gaussian:25:noclip / poisson:30:noclip: clean 32.58 / 31.39 dB,
noise2noise 32.28 / 31.05, neighbor2neighbor 31.07 / 29.21, neighbor2neighbor-fixed 31.13 / 29.22, BM3D
34.03 / 32.57 (noisy 20.17 / 17.47). At 5,000 steps (``--config.steps_per_epoch=1250``, 2026-12-06, CPU-2's
Intel Xeon, alone: clean 40.3 min, neighbor2neighbor-fixed 55.3 min): clean 34.16 / 33.05, neighbor2neighbor-fixed
32.46 / 30.65: the gap to clean targets grew with training (1.45 / 2.17 dB at 1,000 steps, 1.70 / 2.40 at 5,000).

The neighbor2neighbor settings follow the paper (regulariser weight ``target_gamma`` ramped to 2, here on
64x64 crops). On a CPU budget two changes measured better (2026-12-06, docs/quality.md, "What the gap is made
of"): the reconstruction term alone (``--config.target_gamma=0``: gamma 4 < 2 < 1 ~ 0.5 < 0 at 1,000 steps,
+0.68 / +0.86 dB from 2 to 0) and whole faces (``--config.data.patch=0 --config.batch_size=4``, the same
pixels per step: +0.14 / +0.04 at gamma 0; clean targets lose -0.23 / -0.36 with them). Both at 5,000 steps
(13.8 min on CPU-2 since the fixed-noise step was mended): 33.22 / 31.59 dB, 0.94 / 1.46 behind clean targets
(BM3D 34.03 / 32.57). The paper's regulariser is for training to convergence; the tables above keep its recipe.

``recorrupted`` (2026-12-06, evening; noise of known model: each step splits the one noisy shot into two
independent copies, ``target_alpha`` 0.1) at 1,000 steps: 32.16 / 30.92 dB, 0.50 / 0.59 behind clean targets,
the closest of the one-shot targets; at 5,000 steps (43.9 min on CPU-2 that evening) 33.03 / 31.85, 1.13 / 1.20
behind (docs/quality.md, "One noisy shot of known noise").
"""
import os

from jaxdenoise.config import load_file

SETTINGS = ("clean", "noise2noise", "neighbor2neighbor", "recorrupted", "noise2noise-fixed", "neighbor2neighbor-fixed",
            "recorrupted-fixed")


def get_config(setting="neighbor2neighbor-fixed"):
    if setting not in SETTINGS:
        raise ValueError(f"configs/selfsup_faces.py:{setting}: choose one of {', '.join(SETTINGS)} after the ':'")
    c = load_file(os.path.join(os.path.dirname(__file__), "default.py"))  # the U-Net, Adam 1e-3 cosine, EMA, batch 16, 64x64 patches
    c.target = setting.split("-")[0]
    c.noise_fixed = setting.endswith("-fixed")
    c.noise = "gaussian:25:noclip+poisson:30:noclip"
    c.eval_noise = "gaussian:25:noclip"
    c.warmup_steps = 50
    c.num_epochs = 4
    c.steps_per_epoch = 250         # 1,000 steps x 16 crops of 64x64: 4-6 min on CPU-2 (12-19 before the fixed-noise fix)
    c.data.size = 128               # faces prepared to 128x128 on first use
    c.data.val_fraction = 0.05
    c.eval_every_epochs = 4         # one validation, at the end (evaluate.py scores the rest)
    c.checkpoint_every_steps = 250
    return c
