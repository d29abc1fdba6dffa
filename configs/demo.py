"""Demo: the paper's autoencoder on the built-in photos (ships with scikit-image/matplotlib; no download).

    python scripts/train.py --config configs/demo.py --workdir runs/demo      (or: make demo)

Expected: ~3 minutes on 2 CPU cores; validation PSNR ~ TBD dB vs ~TBD dB noisy at poisson:30
(held-out photos: chelsea, coffee).
"""
from jaxdenoise.config import base_config


def get_config():
    c = base_config()
    c.data.source = "builtin"
    c.noise = "poisson:30"
    c.batch_size = 16
    c.num_epochs = 2
    c.steps_per_epoch = 0
    c.log_every_steps = 10
    c.checkpoint_every_steps = 0
    c.data.flips = True
    return c
