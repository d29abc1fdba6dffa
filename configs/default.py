"""The recipe the trained configs build on (as flax's examples build on their ``configs/default.py``): a
variant loads it and changes what differs, so that the optimiser, schedule, EMA and data blocks have one home.

    c = load_file(os.path.join(os.path.dirname(__file__), "default.py"))            # 64x64 patches of a folder
    c = load_file(os.path.join(os.path.dirname(__file__), "default.py"), "photos")  # of full-size photos

``base_config()`` (jaxdenoise/config.py: every field and its meaning) plus: Adam at 1e-3, cosine decay after
200 warm-up steps, an EMA of the weights at 0.999 for validation, batches of 16 random 64x64 patches with
flips and rotations from ``--config.data.dir`` (required), the residual U-Net of 3 levels (32/64/128
channels), a log row every 100 steps. ``photos``: the images kept at their own size (short side >= 256,
longer side at most 1024; validation on the central 256x256, 8 at a time). It sets no noise, length or
cadence of its own, so that it runs as the base leaves them (poisson:30, 25 passes over the folder), e.g.

    python scripts/train.py --config configs/default.py:photos --workdir runs/default \
        --config.data.dir=/path/to/photos --config.num_epochs=2

but its job is to be built on; the measured recipes are the configs that load it.
"""
from jaxdenoise import models
from jaxdenoise.config import base_config

IMAGES = ("crops", "photos")


def get_config(images="crops"):
    if images not in IMAGES:
        raise ValueError(f"configs/default.py:{images}: choose one of {', '.join(IMAGES)} after the ':'")
    c = base_config()
    c.model = models.default_config("unet", widths=(32, 64, 128), residual=True)
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.schedule = "cosine"
    c.warmup_steps = 200
    c.ema_decay = 0.999
    c.batch_size = 16
    c.data.source = "dir"
    c.data.dir = ""                 # required: --config.data.dir=/path/to/images (one or several folders)
    c.data.patch = 64
    c.data.flips = True
    c.data.rot90 = True
    c.log_every_steps = 100
    if images == "photos":
        c.data.resize_mode = "full"
        c.data.size = 256           # full size: images with a short side under 256 are skipped
        c.data.max_side = 1024
        c.eval_batch_size = 8
    return c
