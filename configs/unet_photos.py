"""A blind U-Net for generic photos: shot noise (peak 5-60) and Gaussian noise (sigma 5-50), full-size images.

    python scripts/train.py --config configs/unet_photos.py --workdir runs/unet_photos \
        --config.data.dir=/path/to/bsds400          # or several folders: --config.data.dir=bsds400,sun80

The usual generic training set is BSDS500's 400 train + test photos ("CBSD400"; none is in CBSD68). Kept at
their own size (481x321, short side >= 256), each folder split 90/10 on its own; trained on random 96x96
patches with flips and rotations. Residual U-Net with 4 levels, widths 32/64/128/256 (the fourth level
widens the context to the ~100 px that sigma-50 noise needs on textures; 2,141,475 parameters), Adam 1e-3,
cosine decay, EMA 0.999; validated on the central 256x256 crops of the validation photos at gaussian:25.

Measured 2026-12-02 on CPU-2 (2 cores, shared with the test suite): 3,000 steps in 80 min wall; CBSD68, all 68,
full size: gaussian:25:noclip 29.99, poisson:30:noclip 29.18 dB (clipped 30.08 / 29.21); first 20 beside BM3D
on the same noisy images: 30.19 vs 31.07 and 29.44 vs 30.33 (unclipped), 30.30 vs 30.55 and 29.48 vs 29.58
(clipped): still behind BM3D. docs/quality.md ("Generic photos") has the tables.
"""
from jaxdenoise import models
from jaxdenoise.config import base_config


def get_config():
    c = base_config()
    c.model = models.default_config("unet", widths=(32, 64, 128, 256), residual=True)
    c.noise = "poisson:5-60+gaussian:5-50"   # blind: each image draws a model, then its level
    c.eval_noise = "gaussian:25"
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.schedule = "cosine"
    c.warmup_steps = 200
    c.ema_decay = 0.999
    c.batch_size = 16
    c.num_epochs = 8
    c.steps_per_epoch = 375         # 8 x 375 steps x 16 = 48,000 patches of 96x96: the 60-minute CPU budget
    c.data.source = "dir"
    c.data.dir = ""                 # required: --config.data.dir=/path/to/images (one or several folders)
    c.data.resize_mode = "full"
    c.data.size = 256               # full size: images with a short side under 256 are skipped
    c.data.max_side = 1024          # longer sides are shrunk to this (sun80's 1024x700 stay as they are)
    c.data.patch = 96
    c.data.flips = True
    c.data.rot90 = True
    c.data.val_fraction = 0.1
    c.eval_every_epochs = 2
    c.log_every_steps = 100
    c.checkpoint_every_steps = 375
    return c
