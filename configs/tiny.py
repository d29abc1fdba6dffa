"""The tiny run the tests and the fault suite train: seconds on a CPU, every part of a real run.

    python scripts/train.py --config configs/tiny.py --workdir /tmp/tiny

The built-in photos as 16x16 crops (64 training crops, 6 validation images), the paper's autoencoder at
widths (8, 4), batch 8, 2 epochs of 3 steps, shot noise of peak 30. It learns nothing worth
keeping (its validation PSNR stays below the noisy input's); it exists so that every test and the fault suite
(`scripts/faultcheck.py`) start from one definition and change only what their check needs.
"""
from jaxdenoise.config import base_config


def get_config():
    c = base_config()
    c.data.source = "builtin"
    c.data.size = 16
    c.data.builtin_train_crops = 8     # 64 training crops
    c.data.builtin_val_crops = 2       # 6 validation images
    c.model.widths = (8, 4)
    c.batch_size = 8
    c.steps_per_epoch = 3
    c.num_epochs = 2
    c.eval_batch_size = 4              # 6 images: a padded last batch
    c.log_every_steps = 2
    c.checkpoint_every_steps = 0
    c.num_grid_images = 2
    c.noise = "poisson:30"
    return c
