"""Demo: the paper's autoencoder on the built-in photos (ships with scikit-image/matplotlib; no download).

    python scripts/train.py --config configs/demo.py --workdir runs/demo      (or: make demo)

Expected (measured 2026-11-27, `make demo` in a fresh clone, 2 CPU cores): 119 s wall including installation (warm pip cache;
2026-11-28, with the demo's U-Net run added: 140 s for both, installed);
held-out photos (chelsea, coffee; 34 images at 128x128), best checkpoint after 180 steps:
poisson:5 20.35 dB (noisy 12.26), poisson:10 20.69 dB (noisy 14.79), poisson:30 20.21 dB (noisy 19.13).
"""
from jaxdenoise.config import base_config


def get_config():
    c = base_config()
    c.data.source = "builtin"
    c.noise = "poisson:5-30"      # blind shot noise: peak drawn per image, log-uniform in [5, 30]
    c.eval_noise = "poisson:10"   # the demo's noise level for the per-epoch validation
    c.batch_size = 16
    c.num_epochs = 2
    c.steps_per_epoch = 90        # 2 x 90 steps x 16 = 2,880 crops seen: fits the 5-minute CPU budget
    c.log_every_steps = 10
    c.checkpoint_every_steps = 0
    c.data.flips = True
    return c
