"""NAFNet (Chen et al. 2022) for faces, blind over shot and Gaussian noise: the unet_faces recipe with NAFNet.

    python scripts/train.py --config configs/nafnet_faces.py --workdir runs/nafnet_faces \
        --config.data.dir=/path/to/faces          # any image folder; prepared to 128x128 on first use

Width 16, one block per level over 3 levels and one in the middle (288,691 parameters: the CPU size); for
the paper's SIDD size on a GPU: --config.model.width=32 --config.model.enc_blocks=(2,2,4,8)
--config.model.middle_blocks=12 --config.model.dec_blocks=(2,2,2,2) (29.2 M parameters). The paper's SIDD
recipe: AdamW at 1e-3 with betas 0.9 / 0.9 (weight decay 0), the PSNR loss, cosine decay; plus EMA 0.999 and
64x64 crops with flips and rotations, as unet_faces.

Measured 2026-12-03 on CPU-2 (2-core AMD EPYC), the command above on shared/data/faces_utk (7,801 train /
1,979 val): 12 x 550 steps at 28-31 img/s alone (~60 min; this run shared the cores for part of it and was
resumed once); all 1,979 validation faces: poisson:30 32.74 dB, poisson:10 29.94, gaussian:25 33.74 (unet_faces:
32.68 / 29.74 / 33.62). docs/quality.md, "Faces". Memory-bound on CPU (0.91 GFLOP per image, 14 % of the
roofline: depthwise convs, layer norms, gates); a GPU config to measure.
"""
import os

from jaxdenoise import models
from jaxdenoise.config import load_file


def get_config():
    c = load_file(os.path.join(os.path.dirname(__file__), "unet_faces.py"))  # the same data, noise, schedule, EMA and cadences
    c.model = models.default_config("nafnet", width=16, enc_blocks=(1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1))
    c.optimizer, c.b1, c.b2, c.weight_decay = "adamw", 0.9, 0.9, 0.0   # NAFNet-SIDD-width32.yml
    c.loss = "psnr"
    return c
