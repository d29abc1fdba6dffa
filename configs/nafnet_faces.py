"""NAFNet (Chen et al. 2022) for faces, blind over shot and Gaussian noise: the unet_faces recipe with NAFNet.

    python scripts/train.py --config configs/nafnet_faces.py --workdir runs/nafnet_faces \
        --config.data.dir=/path/to/faces          # any image folder; prepared to 128x128 on first use

Width 16, one block per level over 3 levels and one in the middle (288,691 parameters: the CPU size); for
the paper's SIDD size on a GPU: --config.model.width=32 --config.model.enc_blocks=(2,2,4,8)
--config.model.middle_blocks=12 --config.model.dec_blocks=(2,2,2,2) (29.2 M parameters). AdamW-style
recipe of the paper reduced to Adam 1e-3, cosine decay, EMA 0.999, 64x64 crops with flips and rotations.

Not yet trained to the end on CPU: measured 2026-11-28 on CPU-2 at 25.7 img/s (batch 16, 64x64; 0.91 GFLOP
per image, 14 % of the roofline: its depthwise convs, layer norms and gates are memory-bound on CPU), so the
12 x 550 steps take ~70 min there; tested to learn (tests/test_models.py). A GPU config to measure.
"""
from jaxdenoise import models
from jaxdenoise.config import base_config


def get_config():
    c = base_config()
    c.model = models.default_config("nafnet", width=16, enc_blocks=(1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1))
    c.noise = "poisson:5-60+gaussian:5-50"
    c.eval_noise = "poisson:30"
    c.learning_rate = 1e-3
    c.schedule = "cosine"
    c.warmup_steps = 200
    c.ema_decay = 0.999
    c.batch_size = 16
    c.num_epochs = 12
    c.steps_per_epoch = 550
    c.data.source = "dir"
    c.data.dir = ""              # required: --config.data.dir=/path/to/images
    c.data.size = 128
    c.data.patch = 64
    c.data.flips = True
    c.data.rot90 = True
    c.eval_every_epochs = 6
    c.log_every_steps = 100
    c.checkpoint_every_steps = 550
    return c
