"""A blind U-Net for generic photos: configs/photos.py's U-Net recipe with the 60-minute CPU budget.

    python scripts/train.py --config configs/unet_photos.py --workdir runs/unet_photos \
        --config.data.dir=/path/to/bsds400          # or several folders: --config.data.dir=bsds400,sun80

The usual generic training set is BSDS500's 400 train + test photos ("CBSD400"; none is in CBSD68). Kept at
their own size (481x321, short side >= 256), each folder split 90/10 on its own; trained on random 64x64
patches with flips and rotations, blind over shot noise (peak 5-60) and Gaussian noise (sigma 5-50), half of
the draws clipped to [0, 1] and half not. Residual U-Net, 3 levels 32/64/128 (518,563 parameters), Adam 1e-3,
cosine decay, EMA 0.999; validated on the central 256x256 of the validation photos at gaussian:25:noclip.

Measured 2026-12-03 on CPU-2 (2-core AMD EPYC), the command above on shared/data/bsds400 (362 train / 38
val): 7,200 steps in 62.5 min wall (validations included); validation PSNR (EMA, 38 photos, central 256x256,
gaussian:25:noclip, noisy 20.17) 29.67 / 30.10 / 30.24 / 30.26 dB after epochs 2 / 4 / 6 / 8 (the 15-minute
run: 29.34). CBSD68, all 68, full size: gaussian:25:noclip 30.60, poisson:30:noclip 29.85, gaussian:25 30.42 dB
(published CBM3D at sigma 25: 30.71; BM3D here, first 20 images: 31.07). docs/quality.md, "Generic photos".
Repeated 2026-12-04 on CPU-2 (2-core Intel Xeon): the same numbers to the last digit in 47.3 min wall; shipped
as the zoo model "photos" (jaxdenoise.load("photos")).

Why this one: in the same-budget comparison (configs/photos.py, 15 minutes each on CPU-2; docs/quality.md,
"Generic photos") the U-Net led the paper's autoencoder, DnCNN and NAFNet. 7,200 steps are ~60 minutes of
training on CPU-2 alone (2 cores, 34 img/s). The first recipe (4 levels, 96x96 patches, 3,000 steps) scored
29.99 / 29.18 dB on CBSD68 at gaussian:25:noclip / poisson:30:noclip, below this one's 15-minute run.
"""
import importlib.util
import os


def get_config():
    spec = importlib.util.spec_from_file_location("photos", os.path.join(os.path.dirname(__file__), "photos.py"))
    photos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(photos)
    c = photos.get_config("unet")
    c.warmup_steps = 200
    c.num_epochs = 8
    c.steps_per_epoch = 900         # 8 x 900 steps x 16 = 115,200 patches of 64x64: ~60 minutes on CPU-2
    c.eval_every_epochs = 2
    c.checkpoint_every_steps = 450
    return c
