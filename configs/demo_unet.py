"""Demo, second model: a small residual U-Net on the built-in photos, beside the paper's model (make demo).

    python scripts/train.py --config configs/demo_unet.py --workdir runs/demo/unet

Widths 16/32/64 (130k parameters), random 64x64 crops of the 128x128 built-in crops, the same blind shot
noise as configs/demo.py, Adam 1e-3 with cosine decay, EMA of the weights.

Measured 2026-11-28 (`make demo` on CPU-2, both runs and the table in 140 s): 240 steps, held-out photos,
best checkpoint (EMA): poisson:5 19.93 dB (noisy 12.26), poisson:10 22.41 (14.79), poisson:30 25.52 (19.13).
With --config.dtype=bfloat16, the same training: 19.91 / 22.41 / 25.49 dB (66 s against 56 s: this CPU
has no faster bfloat16 convolutions).
"""
from jaxdenoise import models
from jaxdenoise.config import base_config


def get_config():
    c = base_config()
    c.data.source = "builtin"
    c.model = models.default_config("unet", widths=(16, 32, 64))
    c.noise = "poisson:5-30"      # as configs/demo.py
    c.eval_noise = "poisson:10"
    c.schedule = "cosine"
    c.warmup_steps = 20
    c.ema_decay = 0.99
    c.batch_size = 16
    c.num_epochs = 2
    c.steps_per_epoch = 120
    c.log_every_steps = 20
    c.checkpoint_every_steps = 0
    c.data.patch = 64
    c.data.flips = True
    c.data.rot90 = True
    return c
