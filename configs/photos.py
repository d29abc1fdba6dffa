"""The generic-photo comparison: one recipe, five models, the same CPU budget for each.

    python scripts/train.py --config configs/photos.py:unet --workdir runs/photos_unet \
        --config.data.dir=/path/to/bsds400          # the model after ':': paper | unet | dncnn | nafnet | drunet

Every model gets the same data (full-size photos, short side >= 256, each folder split 90/10, random 64x64
patches with flips and rotations), the same blind noise (shot noise of peak 5-60 and Gaussian sigma 5-50,
half of the draws clipped to [0, 1] and half not, so that the model knows both protocols), batch 16, cosine
decay after 10 % (at most 200) warm-up steps, EMA 0.999, validation at gaussian:25:noclip on the central 256x256 of each
validation photo after every epoch; and the same budget: a number of steps that fills about 15 minutes of
CPU-2 (2 cores) for that model, measured (``STEPS``). Each model keeps its paper's optimiser and loss:

    paper   the paper's autoencoder (sigmoid output), Adam 1e-3, MSE
    unet    residual U-Net, 3 levels 32/64/128 (configs/unet_faces.py's), Adam 1e-3, MSE
    dncnn   DnCNN-B, 17 layers of width 64, residual, Adam 1e-3, MSE
    nafnet  NAFNet width 16, 1-1-1 blocks and 1 in the middle (configs/nafnet_faces.py's), AdamW 1e-3
            with betas 0.9 / 0.9, the PSNR loss
    drunet  DRUNet's layout at the CPU size: widths 32/64/128, 2 residual blocks per level, strided conv
            down and transposed conv up, no biases, orthogonal init at gain 0.2, residual output; Adam 1e-3,
            MSE (its paper's L1 is for the long GPU schedule; the comparison keeps one loss per recipe)

Measured results (CBSD68, all 68, beside BM3D on the same noisy images; the learning curves): docs/quality.md,
"Generic photos".
"""
import os

from jaxdenoise import models
from jaxdenoise.config import load_file

MODELS = ("paper", "unet", "dncnn", "nafnet", "drunet")
# steps that fill ~15 minutes of training (validations aside) on CPU-2 (2 cores): 870 s at each model's
# loader-to-step rate measured by scripts/benchmark.py (--config configs/photos.py:MODEL, 2026-12-02):
# paper 111.6, unet 34.0, nafnet 16.4, dncnn 8.3 img/s, plus ~30 s of set-up and compilation. Kept as
# measured: since the one-patch CPU micro-batches (2026-12-06, docs/benchmarks.md) the same steps take less
# (U-Net ~1.6x, DnCNN ~2.7x faster on CPU-2's Xeon), so the comparison's figures stand per step, not per minute.
# DRUNet (added 2026-12-07): the U-Net's steps times the ratio of their rates measured back to back that day
# (benchmark.py --config configs/photos.py:MODEL, end to end: unet 46.9, drunet 28.4 img/s on CPU-2's Xeon).
STEPS = {"paper": 6000, "unet": 1800, "dncnn": 450, "nafnet": 900, "drunet": 1092}
EPOCHS = 6


def get_config(model="unet"):
    if model not in MODELS:
        raise ValueError(f"configs/photos.py:{model}: choose one of {', '.join(MODELS)} after the ':'")
    c = load_file(os.path.join(os.path.dirname(__file__), "default.py"), "photos")  # the U-Net, Adam 1e-3 cosine,
    # EMA, batch 16, full-size photos; the other models replace the U-Net below
    c.noise = "poisson:5-60+gaussian:5-50+poisson:5-60:noclip+gaussian:5-50:noclip"
    c.eval_noise = "gaussian:25:noclip"
    c.warmup_steps = min(200, STEPS[model] // 10)
    c.num_epochs = EPOCHS
    c.steps_per_epoch = STEPS[model] // EPOCHS
    if model == "paper":
        c.model = models.default_config("paper")
    elif model == "dncnn":
        c.model = models.default_config("dncnn", depth=17, width=64)
    elif model == "drunet":
        c.model = models.default_config("drunet")
    elif model == "nafnet":
        nafnet = load_file(os.path.join(os.path.dirname(__file__), "nafnet_faces.py"))
        c.model = nafnet.model
        c.optimizer, c.b1, c.b2, c.weight_decay, c.loss = (nafnet.optimizer, nafnet.b1, nafnet.b2,
                                                            nafnet.weight_decay, nafnet.loss)
    c.data.val_fraction = 0.1
    c.eval_every_epochs = 1
    c.checkpoint_every_steps = c.steps_per_epoch
    return c
