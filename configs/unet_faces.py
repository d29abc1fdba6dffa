"""A blind U-Net for faces: one model for shot noise (peak 5-60) and Gaussian noise (sigma 5-50).

    python scripts/train.py --config configs/unet_faces.py --workdir runs/unet_faces \
        --config.data.dir=/path/to/faces          # any image folder; prepared to 128x128 on first use

Trained on random 64x64 crops (flips, rotations) of the 128x128 faces, predicting the noise (residual
U-Net, 3 levels, widths 32/64/128, 518,563 parameters), Adam 1e-3 with cosine decay, EMA 0.999 of the
weights for evaluation; validated on the whole 128x128 validation faces at poisson:30.

MEASURED: filled in from the run below.
"""
from jaxdenoise import models
from jaxdenoise.config import base_config


def get_config():
    c = base_config()
    c.model = models.default_config("unet", widths=(32, 64, 128), residual=True)
    c.noise = "poisson:5-60+gaussian:5-50"   # blind: each image draws a model, then its level
    c.eval_noise = "poisson:30"
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.schedule = "cosine"
    c.warmup_steps = 200
    c.ema_decay = 0.999
    c.batch_size = 16
    c.num_epochs = 12
    c.steps_per_epoch = 550         # 12 x 550 steps x 16 = 105,600 crops: the 60-minute CPU budget
    c.data.source = "dir"
    c.data.dir = ""              # required: --config.data.dir=/path/to/images (raw folder or prepared store)
    c.data.size = 128
    c.data.patch = 64
    c.data.flips = True
    c.data.rot90 = True
    c.data.val_fraction = 0.2
    c.eval_every_epochs = 6
    c.log_every_steps = 100
    c.checkpoint_every_steps = 550
    return c
