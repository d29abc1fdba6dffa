"""A blind DRUNet for generic photos: configs/unet_photos.py's recipe (L1, batch 8, Adam 1e-3, cosine decay,
EMA 0.999, the four-way blind noise mixture on 64x64 patches of full-size photos) with the U-Net replaced by
DRUNet's layout at the CPU size (configs/photos.py:drunet: widths 32/64/128, 2 residual blocks per level,
strided 2x2 down, transposed 2x2 up, no biases; 1,042,112 parameters).

    python scripts/train.py --config configs/drunet_photos.py --workdir runs/drunet_photos \
        --config.data.dir=/path/to/bsds400          # or several folders: --config.data.dir=bsds400,sun80

Why (docs/quality.md, "Designs at equal wall time"): at the same ~10 training minutes on CPU-2 DRUNet scored
29.86 dB on the validation split against the U-Net's 29.37, and 30.24 / 29.53 dB on CBSD68 (all 68,
gaussian:25:noclip / poisson:30:noclip) against 29.73 / 29.03, though it sees 0.61x the patches.
Its step costs ~1.65x the U-Net's and its inference ~1.8x (3.1 s/MP against 1.7 on CPU-2).

The budget: 8 epochs of 1,500 steps of 8 (96,000 patches of 64x64), about an hour of CPU-2 alone at its
measured rate; measured results in docs/quality.md.
"""
import os

from jaxdenoise import models
from jaxdenoise.config import load_file


def get_config():
    c = load_file(os.path.join(os.path.dirname(__file__), "unet_photos.py"))
    c.model = models.default_config("drunet")
    c.steps_per_epoch = 1500        # 8 x 1500 x 8 = 96,000 patches (docstring)
    c.checkpoint_every_steps = 750
    return c
