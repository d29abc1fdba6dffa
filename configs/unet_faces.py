"""A blind U-Net for faces: one model for shot noise (peak 5-60) and Gaussian noise (sigma 5-50).

    python scripts/train.py --config configs/unet_faces.py --workdir runs/unet_faces \
        --config.data.dir=/path/to/faces          # any image folder; prepared to 128x128 on first use

Trained on random 64x64 crops (flips, rotations) of the 128x128 faces, predicting the noise (residual
U-Net, 3 levels, widths 32/64/128, 518,563 parameters), Adam 1e-3 with cosine decay, EMA 0.999 of the
weights for evaluation; validated on the whole 128x128 validation faces at poisson:30.

Measured 2026-11-28 on CPU-2 (2 cores), shared/data/faces_utk prepared to 128x128 (7,801 train / 1,979 val),
the command above unchanged: 6,600 steps (105,600 crops) in 53.5 min at 36-43 img/s (23-30 while tests ran
beside it), plus 2 validations of ~4.5 min each (EMA and raw weights): 57.7 min to the last checkpoint.
Validation PSNR (EMA) at poisson:30: 32.11 dB at epoch 6, 32.68 dB at epoch 12 (noisy 18.30), still rising.
All 1,979 validation faces (evaluate.py): poisson:30 32.68, poisson:10 29.74, gaussian:25 33.62 dB.
First 200, beside BM3D: poisson:30 32.33 (BM3D 31.59), poisson:10 29.45 (27.86), gaussian:25 33.17 (33.00).
"""
import os

from jaxdenoise.config import load_file


def get_config():
    c = load_file(os.path.join(os.path.dirname(__file__), "default.py"))  # the U-Net, Adam 1e-3 cosine, EMA, batch 16, 64x64 patches
    c.noise = "poisson:5-60+gaussian:5-50"   # blind: each image draws a model, then its level
    c.eval_noise = "poisson:30"
    c.num_epochs = 12
    c.steps_per_epoch = 550         # 12 x 550 steps x 16 = 105,600 crops: the 60-minute CPU budget
    c.data.size = 128               # faces prepared to 128x128 on first use
    c.data.val_fraction = 0.2
    c.eval_every_epochs = 6
    c.checkpoint_every_steps = 550
    return c
