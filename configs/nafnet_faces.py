"""NAFNet (Chen et al. 2022) for faces, blind over shot and Gaussian noise: the unet_faces recipe with NAFNet.

    python scripts/train.py --config configs/nafnet_faces.py --workdir runs/nafnet_faces \
        --config.data.dir=/path/to/faces          # any image folder; prepared to 128x128 on first use

Width 16, one block per level over 3 levels and one in the middle (288,691 parameters: the CPU size); for
the paper's SIDD size on a GPU: --config.model.width=32 --config.model.enc_blocks=(2,2,4,8)
--config.model.middle_blocks=12 --config.model.dec_blocks=(2,2,2,2) (29.2 M parameters). The paper's SIDD
recipe: AdamW at 1e-3 with betas 0.9 / 0.9 (weight decay 0), the PSNR loss, cosine decay; plus EMA 0.999 and
64x64 crops with flips and rotations, as unet_faces.

Not yet trained to the end on CPU: measured 2026-11-28 on CPU-2 at 25.7 img/s (batch 16, 64x64; 0.91 GFLOP
per image, 14 % of the roofline: its depthwise convs, layer norms and gates are memory-bound on CPU), so the
12 x 550 steps take ~70 min there; tested to learn (tests/test_models.py). A GPU config to measure.
"""
import importlib.util
import os

from jaxdenoise import models


def _unet_faces():
    """configs/unet_faces.py, loaded by path (configs/ is a folder of files, not a package)."""
    spec = importlib.util.spec_from_file_location("unet_faces", os.path.join(os.path.dirname(__file__), "unet_faces.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config():
    c = _unet_faces().get_config()  # the same data, noise, schedule, EMA and cadences
    c.model = models.default_config("nafnet", width=16, enc_blocks=(1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1))
    c.optimizer, c.b1, c.b2, c.weight_decay = "adamw", 0.9, 0.9, 0.0   # NAFNet-SIDD-width32.yml
    c.loss = "psnr"
    return c
